# METADATA
# title: Invariants of the decision
# description: |
#   The properties `pdpctl policy fuzz` proves on a built bundle, the one place they are
#   declared (docs/policy-authoring.md, "Invariants"). Not part of the bundle: the fuzzer
#   loads this module beside the bundle under test into one OPA, generates inputs from
#   pdp/schemas/opa-input.schema.json and the bundle's inventory, and evaluates them in
#   batches through `results`.
#
#   never_allow: the names of the properties whose precondition the input meets; the
#   decision must then be a deny. Each is written against the input and the inventory
#   only, never against the library's own helpers, so a bug in the library cannot hide
#   itself.
#
#   Monotonicity: for a denied input, every variant that removes one optional field
#   (optional in the input schema) or replaces one field listed in `relaxations` by a less
#   restrictive value must be denied too; except a removal that empties one of the
#   `principal_objects` (see there).
# custom:
#   controls: []
package invariants

# METADATA
# title: Batch evaluation
# description: |
#   The decision and the never_allow preconditions of each input in input.cases, in order:
#   one request to OPA evaluates a whole batch.
results := [evaluate(case) | some case in input.cases]

# METADATA
# description: The verdict, reason codes, approval obligation and never_allow set of one input.
evaluate(case) := {
	"allow": decision.allow,
	"reasons": [reason.code | some reason in decision.reasons],
	"never_allow": preconditions,
} if {
	decision := data.pdp.decision with input as case
	preconditions := never_allow with input as case
		with data.invariants.policy_requires_approval as requires_approval(decision)
}

# METADATA
# description: Whether the decision's own obligations say it needs a human's approval.
requires_approval(decision) if {
	decision.obligations.approval.required == true
} else := false

# METADATA
# scope: document
# title: The policy's own approval obligation
# description: Replaced per case (with ... as) by what the decision under test says.
default policy_requires_approval := false

# METADATA
# title: Unauthenticated agents are never allowed
# description: The agent's token did not verify, or the identity names no SPIFFE ID.
never_allow contains "unauthenticated" if not input.identity.authenticated == true

never_allow contains "unauthenticated" if not is_string(object.get(input, ["identity", "spiffe_id"], null))

# METADATA
# title: Disabled agents are never allowed
# description: |
#   An operator disabled the agent in the PDP (agent.status), or its inventory entry is not
#   active.
never_allow contains "disabled_agent" if input.agent.status == "disabled"

never_allow contains "disabled_agent" if {
	registered := data.inventory.agents[input.identity.spiffe_id]
	not registered.status == "active"
}

# METADATA
# title: Actions that need approval are never allowed without a granted one
# description: |
#   The action is of a type that needs a human's approval (approval_types), or the decision
#   itself says it does, and the input carries no granted, unexpired approval.
never_allow contains "approval_not_granted" if {
	needs_approval
	not granted
}

# METADATA
# title: Cross-tenant calls are never allowed
# description: |
#   The agent is registered to another tenant, acts for a principal of another tenant, calls
#   a destination of another tenant (not shared as "*"), or comes from a trust domain the
#   tenant does not trust.
never_allow contains "cross_tenant" if {
	registered := data.inventory.agents[input.identity.spiffe_id]
	not registered.tenant == input.tenant
}

never_allow contains "cross_tenant" if {
	tenant := input.agent.on_behalf_of.tenant
	tenant != input.tenant
}

never_allow contains "cross_tenant" if {
	owner := data.inventory.destinations[input.destination.name].tenant
	not owner in {input.tenant, "*"}
}

never_allow contains "cross_tenant" if {
	input.identity.authenticated == true
	domain := object.get(input, ["identity", "trust_domain"], null)
	not domain in object.get(data.inventory, ["tenants", input.tenant, "trust_domains"], [])
}

# METADATA
# title: A destination type other than the inventory's is never allowed
# description: The request claims a destination.type other than the one the inventory registers.
never_allow contains "destination_type_claim" if {
	registered := data.inventory.destinations[input.destination.name].type
	input.destination.type != registered
}

# METADATA
# title: Action types that need approval
# description: Declared here, apart from the library, so the library cannot drop one silently.
approval_types := {"secret.read", "data.export"}

# METADATA
# scope: document
# description: The action needs approval, by type or by the decision's own obligation.
needs_approval if input.action.type in approval_types

needs_approval if policy_requires_approval

# METADATA
# scope: document
# description: The input carries a granted approval that has not expired.
granted if {
	input.approval.status == "granted"
	input.approval.expires_at * 1000000000 > input.now.unix_ns
}

# METADATA
# title: Less restrictive values
# description: |
#   Fields a request may state but must not be able to widen access by bending: each maps
#   to its values from the most to the least restrictive (null: not stated). Replacing a
#   value by one later in its list must never turn a deny into an allow. Paths are
#   slash-separated, as json.patch takes them.
relaxations := {"destination/environment": ["prod", "staging", "dev", null]}

# METADATA
# title: Objects whose absence names another principal
# description: |
#   Removing the last field of agent.on_behalf_of leaves no delegation: the agent then acts
#   on its own authority, checked against its own entitlements (and denied outright for an
#   agent registered with requires_verified_delegation). That is another call, not a laxer
#   reading of the same one, so a removal that empties one of these objects is not a
#   monotonicity check. Removing one field while another remains is.
principal_objects := {"agent/on_behalf_of"}
