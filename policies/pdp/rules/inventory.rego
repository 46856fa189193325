# METADATA
# title: Agent inventory
# description: |
#   An authenticated agent must also be known: registered in data.inventory.agents under its
#   SPIFFE ID and in status "active". A valid SVID alone is not enough, so an agent that was
#   never onboarded, or was retired, cannot act even while its identity still verifies.
#   Unauthenticated requests are left to pdp.rules.authn.
# custom:
#   controls:
#     - OWASP-ASI10
#     - OWASP-ASI03
#     - MAESTRO
#     - NIST-AI-RMF:GOVERN-1.6
#     - NIST-AI-RMF:MANAGE-2.4
package pdp.rules.inventory

import data.pdp.lib

# METADATA
# title: Agent not registered
# description: The authenticated SPIFFE ID has no entry in data.inventory.agents.
# custom:
#   code: agent_unknown
deny contains lib.reason(rego.metadata.chain(), message) if {
	lib.authenticated(input.identity)
	not data.inventory.agents[input.identity.spiffe_id]
	message := sprintf("agent %q is not registered in the inventory", [input.identity.spiffe_id])
}

# METADATA
# title: Agent not active
# description: The agent is registered but its status is not "active" (e.g. disabled, suspended).
# custom:
#   code: agent_inactive
deny contains lib.reason(rego.metadata.chain(), message) if {
	status := object.get(agent, "status", "missing")
	status != "active"
	message := sprintf("agent %q is registered with status %q, not \"active\"", [input.identity.spiffe_id, status])
}

# METADATA
# title: Registered agent
# description: |
#   The inventory entry of the authenticated agent (agents are keyed by SPIFFE ID); undefined
#   when the agent is unauthenticated or unregistered. The other modules use this one lookup.
agent := data.inventory.agents[input.identity.spiffe_id] if {
	# lib.authenticated, inlined: a function call would hash input.identity on every decision.
	input.identity.authenticated == true
	is_string(input.identity.spiffe_id)
}
