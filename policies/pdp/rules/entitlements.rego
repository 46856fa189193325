# METADATA
# title: Entitlements and purpose binding
# description: |
#   The only module that grants. An authenticated, registered agent is granted an action when
#   one of its inventory entitlements covers it: the action type, the destination, the action
#   name (exact or a glob such as "jira.*", "." delimited) and the operation. An agent that
#   lists purposes is purpose-bound: its task must name one of them (task.purpose is then
#   required) and the purpose must allow the action type (data.inventory.purposes), which
#   binds what an agent does to why it was asked. An agent that lists no purposes is not
#   purpose-bound and its task's purpose is not checked, so leaving it out changes nothing.
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
# description: |
#   An entitlement of the agent covers the action on this destination. A grant is only
#   counted (an allow carries no reasons), so this one is a constant: nothing is formatted
#   or read from METADATA on the allow path.
grant contains {"code": "entitled", "message": "an entitlement of the agent covers the action"} if entitled

# METADATA
# title: Not entitled
# description: No entitlement of the agent covers the action type, name, operation and destination.
# custom:
#   code: action_not_entitled
deny contains lib.reason(rego.metadata.chain(), message) if {
	# A registered agent; unknown and unauthenticated ones are left to inventory and authn.
	is_object(inventory.agent)
	not entitled
	message := sprintf(
		"agent %q has no entitlement for %s %v (operation %v) on %q",
		[input.identity.spiffe_id, input.action.type, input.action.name, input.action.operation, input.destination.name],
	)
}

# METADATA
# title: Purpose required
# description: The agent is purpose-bound (it lists purposes) and the task names no purpose.
# custom:
#   code: purpose_required
deny contains lib.reason(rego.metadata.chain(), message) if {
	inventory.agent.purposes
	not is_string(object.get(input.task, "purpose", null))
	message := sprintf("agent %q acts only for a stated purpose: the task names none", [input.identity.spiffe_id])
}

# METADATA
# title: Purpose not allowed for agent
# description: The task's purpose is not one the agent's inventory entry lists.
# custom:
#   code: purpose_not_allowed
deny contains lib.reason(rego.metadata.chain(), message) if {
	purpose := input.task.purpose
	listed := inventory.agent.purposes
	not purpose in listed
	message := sprintf("agent %q may not act for purpose %q", [input.identity.spiffe_id, purpose])
}

# METADATA
# title: Action type not allowed for purpose
# description: |
#   The purpose is allowed for the purpose-bound agent but its entry in
#   data.inventory.purposes does not list the action type (an unregistered purpose allows
#   nothing).
# custom:
#   code: action_not_allowed_for_purpose
deny contains lib.reason(rego.metadata.chain(), message) if {
	# First the check that fails on an allowed call, so the common path stops here.
	not input.action.type in purpose_actions
	purpose_permitted
	purpose := input.task.purpose
	message := sprintf("purpose %q does not allow action type %s", [purpose, input.action.type])
}

# The action types the task's purpose allows; none for an unregistered purpose.
default purpose_actions := []

purpose_actions := data.inventory.purposes[input.task.purpose].actions

# METADATA
# scope: document
# description: |
#   The authenticated, registered, purpose-bound agent (inventory.agent) lists the task's
#   purpose. Undefined otherwise, which keeps action_not_allowed_for_purpose silent: an
#   unknown or unauthenticated agent is denied by pdp.rules.authn and pdp.rules.inventory,
#   a missing or unlisted purpose by purpose_required and purpose_not_allowed.
purpose_permitted if input.task.purpose in inventory.agent.purposes

# METADATA
# scope: document
# description: |
#   Some entitlement of the authenticated, registered agent (inventory.agent) covers the
#   action on the destination: it lists the action's name (exact or a glob, "." delimited)
#   or no names at all, and the operation or no operations at all. One definition per
#   combination, the common one first (OPA stops at the first that holds), and no function
#   call, which would hash each entitlement it is given.
entitled if {
	is_string(input.action.name)
	some entitlement in candidates
	some pattern in entitlement.names
	glob.match(pattern, ["."], input.action.name)
	input.action.operation in entitlement.operations
}

entitled if {
	some entitlement in candidates
	not entitlement.names
	input.action.operation in entitlement.operations
}

entitled if {
	is_string(input.action.name)
	some entitlement in candidates
	not entitlement.operations
	some pattern in entitlement.names
	glob.match(pattern, ["."], input.action.name)
}

entitled if {
	some entitlement in candidates
	not entitlement.names
	not entitlement.operations
}

# METADATA
# scope: document
# description: |
#   The agent's entitlements that list the action type and the destination: one lookup in
#   the index the bundle build ships (data.pdp_index, see pdp.index), so the cost does not
#   grow with the agent's entitlements; a scan of the inventory when the bundle has no index
#   (a plain `opa build`, Rego tests). The index is bound once and then read by key, which
#   costs OPA less than a reference into data per key.
candidates := object.get(index, [input.identity.spiffe_id, input.destination.name, input.action.type], []) if {
	inventory.agent
	index := data.pdp_index.entitlements
} else := [entitlement |
	some entitlement in object.get(inventory.agent, "entitlements", [])
	input.action.type in entitlement.action_types
	input.destination.name in entitlement.destinations
]
