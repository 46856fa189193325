# METADATA
# title: High-risk actions
# description: |
#   Classifies an action as high risk when it reads a secret or exports data, or when it
#   writes or deletes (or is a data.write) on a prod destination (as the request or the
#   inventory says). High-risk actions carry obligations: the target must recheck the
#   credential, and secret reads and data exports need human approval. A high-risk action is
#   denied outright when the prompt behind it raised any risk signal, and any write, delete,
#   export or secret read is denied when prompt injection is suspected.
# custom:
#   controls:
#     - OWASP-ASI01
#     - OWASP-ASI02
#     - OWASP-ASI09
#     - MAESTRO
#     - NIST-AI-RMF:MAP-3.5
#     - NIST-AI-RMF:MANAGE-2.4
package pdp.rules.risk

import data.pdp.lib

# METADATA
# title: High-risk action behind a risky prompt
# description: A high-risk action (see high_risk) whose prompt raised any risk signal.
# custom:
#   code: high_risk_with_prompt_risk
deny contains lib.reason(rego.metadata.chain(), message) if {
	count(input.prompt.risk_signals) > 0
	high_risk
	message := sprintf(
		"high-risk action %s on %q refused: the prompt raised risk signals %s",
		[input.action.type, input.destination.name, concat(", ", input.prompt.risk_signals)],
	)
}

# METADATA
# title: Change behind a suspected prompt injection
# description: A write or delete (not otherwise high risk) whose prompt is suspected of injection.
# custom:
#   code: high_risk_with_prompt_risk
deny contains lib.reason(rego.metadata.chain(), message) if {
	"prompt_injection_suspected" in input.prompt.risk_signals
	writes
	not high_risk
	message := sprintf(
		"%s %v on %q refused: prompt injection is suspected",
		[input.action.type, input.action.operation, input.destination.name],
	)
}

# METADATA
# scope: document
# title: High risk
# description: Secret reads and data exports anywhere; writes and deletes on prod.
default high_risk := false

high_risk if needs_approval

high_risk if {
	writes
	prod
}

# METADATA
# scope: document
# title: Recheck at target
# description: The target must recheck the credential (e.g. introspect it) for high-risk actions.
default recheck_at_target := false

recheck_at_target if high_risk

# METADATA
# scope: document
# title: Approval
# description: Secret reads and data exports need a human's approval before the call proceeds.
default approval := null

approval := {"required": true, "reason": reason} if {
	needs_approval
	reason := sprintf("%s on %q needs human approval", [input.action.type, input.destination.name])
}

# The registered destination; undefined for an unknown one.
destination := data.inventory.destinations[input.destination.name]

# Secret reads and data exports are high risk anywhere and need approval. The action types
# are listed in the rule body, not in a separate set, so OPA's rule index can skip the rule.
needs_approval if input.action.type in {"secret.read", "data.export"}

# METADATA
# scope: document
# description: The action changes state at the target.
writes if input.action.operation in {"write", "delete"}

writes if input.action.type == "data.write"

# METADATA
# scope: document
# description: The destination is prod, by the request's word or the inventory's.
prod if input.destination.environment == "prod"

prod if destination.environment == "prod"
