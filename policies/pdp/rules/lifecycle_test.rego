package pdp.rules.lifecycle_test

import data.pdp.lib_test as fixtures
import data.pdp.rules.lifecycle

deny_cases := {
	"an active agent is not denied": {"want": set()},
	"a disabled agent is agent_disabled": {
		"patch": {"agent": {"status": "disabled"}},
		"want": {"agent_disabled"},
	},
	"an unknown status (null, unauthenticated) is left to authn": {
		"patch": {
			"agent": {"status": null},
			"identity": fixtures.failed_identity({"code": "authn.token_missing", "message": "no token"}),
		},
		"want": set(),
	},
	"an input without a status (an older PDP) is not denied here": {
		"remove": ["agent/status"],
		"want": set(),
	},
}

test_deny[note] if {
	some note, tc in deny_cases
	reasons := lifecycle.deny with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory
	fixtures.codes(reasons) == tc.want
}

test_disabled_reason_names_the_agent if {
	reasons := lifecycle.deny with input as fixtures.request({"agent": {"status": "disabled"}})
		with data.inventory as fixtures.inventory
	reasons == {{
		"code": "agent_disabled",
		"message": sprintf("agent %q was disabled by an operator", [fixtures.support_bot]),
		"rule": "pdp.rules.lifecycle",
		"controls": ["OWASP-ASI10", "OWASP-ASI03", "MAESTRO", "NIST-AI-RMF:MANAGE-2.4", "NIST-AI-RMF:GOVERN-1.7"],
	}}
}
