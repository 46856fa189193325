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
#   written by `pdpctl policy review-fast`; data.pdp_index.fast_reviewed); reviewed_modules
#   must list every package under pdp.rules (a Rego test fails otherwise); and
#   tests/test_policy_fastpath.py proves, over generated inputs, that whenever `cleared`
#   holds the full composition decides exactly `decision`.
# custom:
#   controls:
#     - OWASP-ASI03
#     - MAESTRO
#     - NIST-AI-RMF:GOVERN-1.2
package pdp.fast

import data.pdp.lib

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
#   it clears: each group as a rule of its own costs OPA a third more per decision. The
#   inventory is bound once and read by key (cheaper than one reference into data per fact).
cleared if { # regal ignore:rule-length
	# The bundle's modules are the ones this rule was reviewed against (pdp/bundle.py
	# compares their digest with pdp/fast/REVIEWED when it builds the bundle): a deny
	# rule added or changed since is never skipped, the full composition decides.
	derived := data.pdp_index
	derived.fast_reviewed == true

	# A read, by tool call or data read, with a canonical name (request's action rules);
	# neither state-changing nor high risk, so risk (approval_required, both
	# high_risk_with_prompt_risk) and session.session_budget_exceeded stay silent, and
	# models (model.invoke only) too.
	input.action.operation == "read"
	input.action.type in {"tool.call", "data.read"}
	lib.valid_name(input.action.name)

	# Enabled in the PDP (lifecycle.agent_disabled); a clean prompt
	# (risk.high_risk_with_prompt_risk); a readable store (session.session_unavailable) and
	# no history yet (session_toxic_flow and session_forbidden_sequence need one); no
	# delegation chain (every delegation rule needs one present or verified).
	input.agent.status == "active"
	count(input.prompt.risk_signals) == 0
	input.session.available == true
	input.session.task == null
	input.session.session == null
	input.chain.present == false
	input.chain.verified == false

	# Authenticated (authn), registered (inventory.agent_unknown: agent is the verified
	# agent's entry, as inventory.agent reads it), active (inventory.agent_inactive), of the
	# request's tenant (tenancy.tenant_mismatch), from a trust domain the tenant trusts
	# (tenancy.trust_domain_mismatch), for a principal tenancy accepts, for a purpose
	# entitlements accepts. The inventory is bound once and read by key, and the helpers
	# take the few values they need as arguments: a reference to another rule or into data
	# costs OPA more than the comparisons themselves.
	input.identity.authenticated == true
	is_string(input.identity.spiffe_id)
	inv := data.inventory
	agent := inv.agents[input.identity.spiffe_id]
	agent.status == "active"
	agent.tenant == input.tenant
	input.identity.trust_domain in inv.tenants[input.tenant].trust_domains
	principal_cleared
	verified_delegation_cleared(object.get(agent, "requires_verified_delegation", null))
	purpose_cleared(
		object.get(agent, "purposes", set()),
		object.get(inv, ["purposes", object.get(input.task, "purpose", null), "actions"], []),
	)

	# A registered destination (tenancy.destination_unknown) of the tenant or shared
	# (tenancy.destination_tenant_mismatch), of the type the request says
	# (request.destination_type_mismatch), called on a registered host (or any, when it
	# registers none), scheme and port (egress: destination_host_mismatch,
	# destination_scheme_not_allowed, destination_port_not_registered).
	destination := inv.destinations[input.destination.name]
	destination.tenant in {input.tenant, "*"}
	destination.type == input.destination.type
	input.destination.host in object.get(destination, "hosts", [input.destination.host])
	input.destination.scheme in object.get(destination, "schemes", ["https"])
	input.destination.port in object.get(destination, "ports", [443])

	# Data no more than internal as pdp.facts.sensitivity_rank raises it: the request's
	# label and rank, the destination's and the tool's data_class, each category's floor
	# (egress: egress_sensitivity_blocked, restricted_destination_not_allowed; the
	# credential and cache TTLs of decision).
	input.data.sensitivity in {"public", "internal"}
	input.data.sensitivity_rank <= 1 # internal, as in lib.sensitivity_ranks
	object.get(destination, "data_class", "public") in {"public", "internal"}
	object.get(inv, ["tools", input.action.name, "data_class"], "public") in {"public", "internal"}
	every category in input.data.categories {
		object.get(data.classification.category_floors, category, "public") in {"public", "internal"}
	}

	# An entitlement covers the call (entitlements.action_not_entitled; the grant): one of
	# the agent's entitlements for this destination and action type, from the index the
	# bundle build ships (pdp.index; without it nothing is cleared), whose names (if it
	# lists any) match the action's name and whose operations (if it lists any) include
	# "read". What entitlements.entitled grants, read from the same index.
	some entitlement in derived.entitlements[input.identity.spiffe_id][input.destination.name][input.action.type]
	some pattern in object.get(entitlement, "names", ["**"])
	glob.match(pattern, ["."], input.action.name)
	"read" in object.get(entitlement, "operations", ["read"])
}

# METADATA
# scope: document
# description: |
#   No principal (tenancy's delegation rules need agent.on_behalf_of to name something), or
#   one of the request's tenant with a subject of a documented form
#   (delegation_tenant_mismatch, delegation_tenant_missing, delegation_subject_invalid).
principal_cleared if count(input.agent.on_behalf_of) == 0

principal_cleared if {
	input.agent.on_behalf_of.tenant == input.tenant
	lib.valid_subject(input.agent.on_behalf_of.subject)
}

# METADATA
# scope: document
# description: |
#   The agent does not require a verified principal (its inventory entry's
#   requires_verified_delegation, passed in, is not true), or the principal is verified
#   (tenancy.delegation_unverified).
verified_delegation_cleared(required) if required != true

verified_delegation_cleared(_) if input.agent.on_behalf_of.verified == true

# METADATA
# scope: document
# description: |
#   The agent is not purpose-bound (its entry has no purposes member: the set() passed in),
#   or the task names one of its purposes and that purpose allows the action type
#   (the purpose's actions in data.inventory.purposes, passed in; none for an unregistered
#   purpose) (entitlements: purpose_required, purpose_not_allowed,
#   action_not_allowed_for_purpose).
purpose_cleared(purposes, _) if {
	# Only an entry without a purposes member is not purpose-bound: object.get's default
	# here, an empty set, is a value no JSON inventory can hold. An entry with
	# "purposes": false or null is not cleared (the composition refuses any task purpose
	# for it: purpose_not_allowed), nor one whose purposes list none.
	purposes == set()
}

purpose_cleared(purposes, actions) if {
	is_string(input.task.purpose)
	input.task.purpose in purposes
	input.action.type in actions
}
