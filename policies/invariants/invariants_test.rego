package invariants_test

import data.invariants
import data.pdp.lib_test as fixtures

never_allow_cases := {
	"a verified agent of the tenant on its own destination meets no precondition": {"want": set()},
	"an unauthenticated agent": {"patch": {"identity": fixtures.failed_identity(null)}, "want": {"unauthenticated"}},
	"an authenticated flag without a SPIFFE ID": {
		"patch": {"identity": {"spiffe_id": null}},
		"want": {"unauthenticated"},
	},
	"an agent an operator disabled": {"patch": {"agent": {"status": "disabled"}}, "want": {"disabled_agent"}},
	"an agent the inventory lists as disabled": {
		"patch": {"identity": fixtures.identity(fixtures.retired_bot)},
		"want": {"disabled_agent"},
	},
	"a secret read without an approval": {
		"patch": {"action": {"type": "secret.read"}},
		"want": {"approval_not_granted"},
	},
	"a secret read with a granted approval": {
		"patch": {
			"action": {"type": "secret.read"},
			"approval": {"id": "a", "status": "granted", "expires_at": 1768471260},
		},
		"want": set(),
	},
	"a secret read with an expired approval": {
		"patch": {
			"action": {"type": "secret.read"},
			"approval": {"id": "a", "status": "granted", "expires_at": 1768471100},
		},
		"want": {"approval_not_granted"},
	},
	"an agent of another tenant": {
		"patch": {"identity": fixtures.identity(fixtures.research_bot)},
		"want": {"cross_tenant"},
	},
	"a delegation from another tenant": {
		"patch": {"agent": {"on_behalf_of": {"tenant": "globex"}}},
		"want": {"cross_tenant"},
	},
	"a destination of another tenant": {
		"patch": {"destination": {"name": "globex-wiki"}},
		"want": {"cross_tenant"},
	},
	"a shared destination": {"patch": {"destination": {"name": "github", "type": "tool"}}, "want": set()},
	"a destination type other than the inventory's": {
		"patch": {"destination": {"type": "model"}},
		"want": {"destination_type_claim"},
	},
}

test_never_allow[note] if {
	some note, tc in never_allow_cases
	got := invariants.never_allow with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory
	got == tc.want
}

test_never_allow_follows_the_decision_s_approval_obligation if {
	got := invariants.never_allow with input as fixtures.base_input
		with data.inventory as fixtures.inventory
		with invariants.policy_requires_approval as true
	got == {"approval_not_granted"}
}

test_results_evaluate_each_case_in_order if {
	denied := fixtures.request({"identity": fixtures.failed_identity(null)})
	got := invariants.results with input as {"cases": [fixtures.base_input, denied]}
		with data.inventory as fixtures.inventory
	got == [
		{"allow": true, "reasons": [], "never_allow": set()},
		{"allow": false, "reasons": ["authn.unauthenticated"], "never_allow": {"unauthenticated"}},
	]
}

test_requires_approval_reads_the_obligation if {
	invariants.requires_approval({"obligations": {"approval": {"required": true}}})
	invariants.requires_approval({"obligations": {"approval": null}}) == false
}

test_relaxations_run_from_most_to_least_restrictive if {
	invariants.relaxations["destination/environment"][0] == "prod"
	"agent/on_behalf_of" in invariants.principal_objects
}
