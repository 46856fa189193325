package pdp.lib_test

import data.pdp.lib

authenticated_cases := {
	"a verified identity is authenticated": {"identity": identity(support_bot), "want": true},
	"a failed identity is not": {
		"identity": failed_identity({"code": "authn.expired", "message": "expired"}),
		"want": false,
	},
	"the flag without a SPIFFE ID is not": {"identity": {"authenticated": true, "spiffe_id": null}, "want": false},
	"a truthy non-boolean flag is not": {"identity": {"authenticated": "yes", "spiffe_id": support_bot}, "want": false},
}

test_authenticated[note] if {
	some note, tc in authenticated_cases
	authenticated(tc.identity) == tc.want
}

authenticated(identity) if lib.authenticated(identity)

else := false

test_sensitivity_ranks_rise_with_sensitivity if {
	lib.sensitivity_ranks.public < lib.sensitivity_ranks.internal
	lib.sensitivity_ranks.internal < lib.sensitivity_ranks.confidential
	lib.sensitivity_ranks.confidential < lib.sensitivity_ranks.restricted
}
