package pdp.rules.authn_test

import data.pdp.lib_test as fixtures
import data.pdp.rules.authn

deny_cases := {
	"a verified agent is not denied": {"want": set()},
	"a missing token is denied with the verifier's code": {
		"patch": {"identity": fixtures.failed_identity({"code": "authn.token_missing", "message": "no token"})},
		"want": {"authn.token_missing"},
	},
	"an expired token is denied with the verifier's code": {
		"patch": {"identity": fixtures.failed_identity({"code": "authn.expired", "message": "token expired"})},
		"want": {"authn.expired"},
	},
	"a bad signature is denied with the verifier's code": {
		"patch": {"identity": fixtures.failed_identity({"code": "authn.invalid_signature", "message": "bad signature"})},
		"want": {"authn.invalid_signature"},
	},
	"a failure without an error is authn.unauthenticated": {
		"patch": {"identity": fixtures.failed_identity(null)},
		"want": {"authn.unauthenticated"},
	},
	"an error code outside authn.* is not trusted as a code": {
		"patch": {"identity": fixtures.failed_identity({"code": "tenant_mismatch", "message": "spoofed"})},
		"want": {"authn.unauthenticated"},
	},
	"an input without an identity is denied": {
		"remove": ["identity"],
		"want": {"authn.unauthenticated"},
	},
	"the authenticated flag without a SPIFFE ID is denied": {
		"patch": {"identity": {"spiffe_id": null}},
		"want": {"authn.unauthenticated"},
	},
}

test_deny[note] if {
	some note, tc in deny_cases
	reasons := authn.deny with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory
	fixtures.codes(reasons) == tc.want
}

reason_cases := {
	"the verifier's code and message, with the module's rule and controls": {
		"error": {"code": "authn.expired", "message": "token expired 12s ago"},
		"want": {
			"code": "authn.expired",
			"message": "token expired 12s ago",
			"rule": "pdp.rules.authn",
			"controls": ["OWASP-ASI03", "OWASP-ASI07", "MAESTRO", "NIST-AI-RMF:MEASURE-2.7"],
		},
	},
	"without a verifier error, the code and a message from the module": {
		"error": null,
		"want": {
			"code": "authn.unauthenticated",
			"message": "the agent is not authenticated",
			"rule": "pdp.rules.authn",
			"controls": ["OWASP-ASI03", "OWASP-ASI07", "MAESTRO", "NIST-AI-RMF:MEASURE-2.7"],
		},
	},
}

test_reason[note] if {
	some note, tc in reason_cases
	reasons := authn.deny with input as fixtures.request({"identity": fixtures.failed_identity(tc.error)})
	reasons == {tc.want}
}
