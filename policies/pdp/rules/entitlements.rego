# METADATA
# title: Entitlements and purpose binding
# description: |
#   The only module that grants. An authenticated, registered agent is granted an action when
#   one of its inventory entitlements covers it: the action type, the destination, the action
#   name (exact or a glob such as "jira.*", "." delimited) and the operation. When the task
#   names a purpose, the agent must list it (if it lists any) and the purpose must allow the
#   action type (data.inventory.purposes), which binds what an agent does to why it was asked.
# custom:
#   controls:
#     - OWASP-ASI01
#     - OWASP-ASI02
#     - OWASP-ASI03
#     - MAESTRO
#     - NIST-AI-RMF:MAP-1.1
package pdp.rules.entitlements

import data.pdp.lib
import data.pdp.rules.inventory

# METADATA
# title: Entitled
# description: An entitlement of the agent covers the action on this destination.
# custom:
#   code: entitled
grant contains lib.reason(rego.metadata.chain(), message) if {
	entitled(object.get(agent, "entitlements", []), input.action, input.destination)
	message := sprintf("an entitlement of agent %q covers %s on %q", [agent_id, input.action.type, input.destination.name])
}

# METADATA
# title: Not entitled
# description: No entitlement of the agent covers the action type, name, operation and destination.
# custom:
#   code: action_not_entitled
deny contains lib.reason(rego.metadata.chain(), message) if {
	granted := object.get(agent, "entitlements", [])
	not entitled(granted, input.action, input.destination)
	message := sprintf(
		"agent %q has no entitlement for %s %v (operation %v) on %q",
		[agent_id, input.action.type, input.action.name, input.action.operation, input.destination.name],
	)
}

# METADATA
# title: Purpose not allowed for agent
# description: The task's purpose is not one the agent's inventory entry lists.
# custom:
#   code: purpose_not_allowed
deny contains lib.reason(rego.metadata.chain(), message) if {
	purpose := input.task.purpose
	listed := agent.purposes
	not purpose in listed
	message := sprintf("agent %q may not act for purpose %q", [agent_id, purpose])
}

# METADATA
# title: Action type not allowed for purpose
# description: |
#   The purpose is allowed for the agent but its entry in data.inventory.purposes does not
#   list the action type (an unregistered purpose allows nothing).
# custom:
#   code: action_not_allowed_for_purpose
deny contains lib.reason(rego.metadata.chain(), message) if {
	purpose := input.task.purpose
	purpose_permitted(agent, purpose)
	not input.action.type in purpose_actions
	message := sprintf("purpose %q does not allow action type %s", [purpose, input.action.type])
}

# The authenticated agent's inventory entry; undefined otherwise, which keeps every rule above
# silent for unknown or unauthenticated agents (pdp.rules.authn and pdp.rules.inventory deny those).
agent := inventory.agent

# The action types the task's purpose allows; none for an unregistered purpose.
default purpose_actions := []

purpose_actions := data.inventory.purposes[input.task.purpose].actions

agent_id := input.identity.spiffe_id

# METADATA
# description: Some entitlement covers the action on the destination.
entitled(entitlements, action, destination) if {
	some entitlement in entitlements
	covers(entitlement, action, destination)
}

# METADATA
# description: |
#   One entitlement covers an action when it lists the action type and the destination, and
#   its optional names (globs) and operations admit the action's name and operation.
covers(entitlement, action, destination) if {
	action.type in entitlement.action_types
	destination.name in entitlement.destinations
	name_covered(entitlement, action.name)
	operation_covered(entitlement, action.operation)
}

name_covered(entitlement, _) if not entitlement.names

name_covered(entitlement, name) if {
	is_string(name)
	some pattern in entitlement.names
	glob.match(pattern, ["."], name)
}

operation_covered(entitlement, _) if not entitlement.operations

operation_covered(entitlement, operation) if operation in entitlement.operations

# METADATA
# scope: document
# description: An agent that lists purposes may act only for those; one that lists none, for any.
purpose_permitted(agent, _) if not agent.purposes

purpose_permitted(agent, purpose) if purpose in agent.purposes
