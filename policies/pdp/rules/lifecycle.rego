# METADATA
# title: Agent lifecycle
# description: |
#   An operator can disable an agent in the PDP at once (POST /v1/agents/disable, `pdpctl
#   agents disable`), without editing the inventory or waiting for a bundle: offboarding, a
#   compromised workload, an agent misbehaving. The PDP passes that state in as
#   input.agent.status ("active" or "disabled"; null when unauthenticated), and this module
#   denies a disabled agent. The PDP also enforces it itself, so a policy without this module
#   still cannot allow a disabled agent or get it a credential.
# custom:
#   controls:
#     - OWASP-ASI10
#     - OWASP-ASI03
#     - MAESTRO
#     - NIST-AI-RMF:MANAGE-2.4
#     - NIST-AI-RMF:GOVERN-1.7
package pdp.rules.lifecycle

import data.pdp.lib

# METADATA
# title: Agent disabled
# description: An operator disabled the agent in the PDP; its credentials are inactive too.
# custom:
#   code: agent_disabled
deny contains lib.reason(rego.metadata.chain(), message) if {
	disabled(input.agent)
	message := sprintf("agent %q was disabled by an operator", [input.identity.spiffe_id])
}

# METADATA
# description: True when the PDP reports the agent's lifecycle status as disabled.
disabled(agent) if agent.status == "disabled"
