# METADATA
# title: Fast path for low-risk reads
# description: |
#   The one shape of call that is most of a gateway's traffic, a registered agent reading
#   with a tool call or a data read, in its own tenant, on a registered destination, with
#   data no more than internal and a clean prompt, is decided here by one rule instead of by
#   evaluating every deny rule of every module. `cleared` holds only when every deny rule of
#   every module under pdp.rules provably stays silent and entitlements grants, so the
#   decision (pdp.decision) is then the allow the full composition would give, with the
#   obligations the modules would set for a low-risk read. When it does not hold, nothing
#   changes: the full composition decides.
#
#   Each condition names the rules it keeps silent. Three checks keep this in step with
#   the modules: the bundle turns the fast path off unless every module under pdp/ is byte
#   for byte the one it was reviewed against (pdp/fast/REVIEWED holds their digest,
#   written by `pdpctl policy review-fast`; data.pdp_index.fast_reviewed, and the entries
#   `cleared` reads, data.pdp_index.fast, are shipped only then); reviewed_modules
#   must list every package under pdp.rules (a Rego test fails otherwise); and
#   tests/test_policy_fastpath.py proves, over generated inputs, that whenever `cleared`
#   holds the full composition decides exactly `decision`.
# custom:
#   controls:
#     - OWASP-ASI03
#     - MAESTRO
#     - NIST-AI-RMF:GOVERN-1.2
package pdp.fast

# METADATA
# title: Modules reviewed
# description: |
#   The packages under pdp.rules whose deny rules `cleared` was written against. A module
#   added under pdp.rules must be reviewed here (and `cleared` extended so that its deny
#   rules stay silent) before the Rego tests pass again.
reviewed_modules := {
	"authn", "cache", "credential", "delegation", "egress", "entitlements", "inventory",
	"lifecycle", "models", "request", "risk", "session", "tenancy",
}

# METADATA
# title: Fast-path decision
# description: |
#   What the composition decides for a cleared call: allowed, no reasons; a 120 s credential
#   (pdp.rules.credential: not high risk, data below confidential), no recheck and no approval
#   (pdp.rules.risk: not high risk), and cacheable for 30 s (pdp.rules.cache: a low-risk read).
decision := {
	"allow": true,
	"reasons": [],
	"obligations": {"credential": {"ttl_seconds": 120}, "recheck_at_target": false, "approval": null},
	"cache": {"ttl_seconds": 30},
}

# METADATA
# title: Cleared
# description: |
#   Every deny rule stays silent and entitlements grants (see the package description).
#   Every condition is a positive test, so a field that is missing or of another type
#   leaves the call to the full composition. One conjunction on purpose, grouped by what
#   it clears, with no rule references or function calls but one: each costs OPA more
#   than the comparisons themselves. What does not depend on the request was worked out
#   when the bundle was built (pdp.index.fast, read with one reference).
cleared if { # regal ignore:rule-length
	# A read (request's action rules), so neither state-changing nor high risk: risk
	# (approval_required, both high_risk_with_prompt_risk) and session.session_budget_exceeded
	# stay silent; models too (model.invoke has no entry below).
	input.action.operation == "read"

	# Authenticated (authn); enabled in the PDP (lifecycle.agent_disabled); a clean prompt
	# (risk.high_risk_with_prompt_risk); a readable store (session.session_unavailable) and
	# no history yet (session_toxic_flow and session_forbidden_sequence need one); no
	# delegation chain (every delegation rule needs one present or verified).
	input.identity.authenticated == true
	input.agent.status == "active"
	input.prompt.risk_signals == []
	input.session.available == true
	input.session.task == null
	input.session.session == null
	input.chain.present == false
	input.chain.verified == false

	# Data no more than internal as the request labels and ranks it (egress:
	# egress_sensitivity_blocked, restricted_destination_not_allowed; the credential and
	# cache TTLs of decision); the rest of pdp.facts.sensitivity_rank below.
	input.data.sensitivity in {"public", "internal"}
	input.data.sensitivity_rank <= 1 # internal, as in lib.sensitivity_ranks

	# A canonical name (request.action_name_invalid): lib.valid_name's pattern.
	regex.match(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`, input.action.name)

	# The bundle's entry for the call (pdp.index.fast; without one nothing is cleared): a
	# registered, active agent (inventory) of the request's tenant (tenancy.tenant_mismatch)
	# from a trust domain the tenant trusts (tenancy.trust_domain_mismatch), a registered
	# destination (tenancy.destination_unknown) of the tenant or shared
	# (tenancy.destination_tenant_mismatch) of the type the request says
	# (request.destination_type_mismatch) whose data class is at most internal (egress), a
	# tool.call or data.read, and an entitlement that allows a read there. The bundle ships
	# entries only when its modules are the ones this rule was reviewed against
	# (pdp/bundle.py compares their digest with pdp/fast/REVIEWED): a deny rule added or
	# changed since is never skipped, the full composition decides.
	# regal ignore:line-length
	entry := data.pdp_index.fast[input.identity.spiffe_id][input.destination.name][input.action.type][input.tenant][input.identity.trust_domain][input.destination.type]

	# A registered host (or any, when the destination registers none), scheme and port
	# (egress: destination_host_mismatch, destination_scheme_not_allowed,
	# destination_port_not_registered).
	input.destination.scheme in entry.schemes
	input.destination.port in entry.ports
	input.destination.host in object.get(entry, "hosts", [input.destination.host])

	# No tool data class and no category floor above internal (pdp.facts.sensitivity_rank).
	not entry.raising_tools[input.action.name]
	is_array(input.data.categories)
	count([category | some category in input.data.categories; entry.raising_categories[category]]) == 0

	# A purpose entitlements accepts (purpose_required, purpose_not_allowed,
	# action_not_allowed_for_purpose): one of the agent's that allows the action type, or
	# any when the agent is not purpose-bound (its entry has no purposes member; one with
	# "purposes": false or null, or listing none, is bound to none).
	object.get(entry.purposes, object.get(input.task, "purpose", null), entry.unbound) == true

	# A principal tenancy accepts, verified where the agent requires it.
	object.get(input.agent.on_behalf_of, "verified", false) in entry.verified
	principal_cleared(input.agent.on_behalf_of, input.tenant)

	# An entitlement covers the name (entitlements.action_not_entitled; the grant).
	some pattern in entry.patterns
	glob.match(pattern, ["."], input.action.name)
}

# METADATA
# scope: document
# description: |
#   No principal (tenancy's delegation rules need on_behalf_of to name something), or one of
#   the request's tenant with a subject of the documented form (lib.valid_subject's checks)
#   (delegation_tenant_mismatch, delegation_tenant_missing, delegation_subject_invalid).
principal_cleared(principal, _) if count(principal) == 0

principal_cleared(principal, tenant) if {
	principal.tenant == tenant
	count(principal.subject) <= 256
	regex.match(`^(user:[A-Za-z0-9._%+-]+(@[A-Za-z0-9.-]+)?|service:[A-Za-z0-9._-]+)$`, principal.subject)
}
