# METADATA
# title: High-risk actions
# description: |
#   Classifies an action as high risk when it reads a secret or exports data, or when it
#   changes state (pdp.facts.state_changing: write, delete, execute, no operation, data.write,
#   data.export) on a prod destination (pdp.facts.environment: the inventory's, else prod).
#   High-risk actions carry obligations: the target must recheck the credential, and secret
#   reads and data exports need a human's approval: until the PDP passes in a granted
#   approval bound to exactly this call (input.approval), they are denied with
#   approval_required. A high-risk action is denied outright when the prompt behind it
#   raised any risk signal, and any state change is denied when prompt injection is
#   suspected.
# custom:
#   controls:
#     - OWASP-ASI01
#     - OWASP-ASI02
#     - OWASP-ASI09
#     - MAESTRO
#     - NIST-AI-RMF:MAP-3.5
#     - NIST-AI-RMF:MANAGE-2.4
package pdp.rules.risk

import data.pdp.facts
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
# description: A state change (not otherwise high risk) whose prompt is suspected of injection.
# custom:
#   code: high_risk_with_prompt_risk
deny contains lib.reason(rego.metadata.chain(), message) if {
	"prompt_injection_suspected" in input.prompt.risk_signals
	facts.state_changing
	not high_risk
	message := sprintf(
		"%s %v on %q refused: prompt injection is suspected",
		[input.action.type, input.action.operation, input.destination.name],
	)
}

# METADATA
# title: Approval required
# description: |
#   The action needs a human's approval and the request carries none that is granted and
#   unexpired. The PDP opens a pending approval for it (docs/approvals.md) and, once an
#   approver grants it and the gateway re-sends the call with its approval_id, passes it in
#   as input.approval after checking it is bound to exactly this call.
# custom:
#   code: approval_required
deny contains lib.reason(rego.metadata.chain(), message) if {
	needs_approval
	not approved
	message := sprintf("%s on %q needs a human's approval first", [input.action.type, input.destination.name])
}

# METADATA
# scope: document
# title: High risk
# description: Secret reads and data exports anywhere; state changes on prod.
default high_risk := false

high_risk if needs_approval

high_risk if {
	facts.state_changing
	facts.prod
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
# description: |
#   Secret reads and data exports need a human's approval before the call proceeds. The
#   obligation says why, and how long a grant lasts (ttl_seconds, from the moment it is
#   granted) and how many decisions it allows (uses): by default one, within 15 minutes.
default approval := null

approval := {"required": true, "reason": reason, "ttl_seconds": 900, "uses": 1} if {
	needs_approval
	reason := sprintf("%s on %q needs human approval", [input.action.type, input.destination.name])
}

# METADATA
# scope: document
# description: |
#   The PDP passed in an approval (input.approval) that is granted and not yet expired. A
#   rule, not a function of input.approval: a call on a missing argument is undefined,
#   and `not` of that would not deny.
approved if {
	input.approval.status == "granted"
	input.approval.expires_at * 1000000000 > input.now.unix_ns
}

# Secret reads and data exports are high risk anywhere and need approval. The action types
# are listed in the rule body, not in a separate set, so OPA's rule index can skip the rule.
needs_approval if input.action.type in {"secret.read", "data.export"}
