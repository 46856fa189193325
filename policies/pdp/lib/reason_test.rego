package pdp.lib_test

import data.pdp.lib

package_entry := {
	"path": ["pdp", "rules", "egress"],
	"annotations": {"scope": "package", "title": "Egress", "custom": {"controls": ["OWASP-ASI02", "MAESTRO"]}},
}

reason_cases := {
	"code from the rule, rule from the package, controls from the package": {
		"chain": [
			{"path": ["pdp", "rules", "egress", "deny"], "annotations": {"scope": "rule", "custom": {"code": "egress_x"}}},
			package_entry,
		],
		"want": {"code": "egress_x", "message": "m", "rule": "pdp.rules.egress", "controls": ["OWASP-ASI02", "MAESTRO"]},
	},
	"rule-level controls follow the package's, without repeats": {
		"chain": [
			{"path": ["pdp", "rules", "egress", "deny"], "annotations": {
				"scope": "rule",
				"custom": {"code": "egress_x", "controls": ["MAESTRO", "NIST-AI-RMF:MEASURE-2.10"]},
			}},
			package_entry,
		],
		"want": {
			"code": "egress_x", "message": "m", "rule": "pdp.rules.egress",
			"controls": ["OWASP-ASI02", "MAESTRO", "NIST-AI-RMF:MEASURE-2.10"],
		},
	},
	"a rule without a code is unspecified, not undefined": {
		"chain": [{"path": ["pdp", "rules", "egress", "deny"]}, package_entry],
		"want": {"code": "unspecified", "message": "m", "rule": "pdp.rules.egress", "controls": ["OWASP-ASI02", "MAESTRO"]},
	},
	"repeats within one annotation's controls are dropped too": {
		"chain": [
			{"path": ["pdp", "rules", "egress", "deny"], "annotations": {
				"scope": "rule",
				"custom": {"code": "egress_x", "controls": ["NIST-AI-RMF:MEASURE-2.10", "NIST-AI-RMF:MEASURE-2.10"]},
			}},
			package_entry,
		],
		"want": {
			"code": "egress_x", "message": "m", "rule": "pdp.rules.egress",
			"controls": ["OWASP-ASI02", "MAESTRO", "NIST-AI-RMF:MEASURE-2.10"],
		},
	},
	"a longer chain takes the general path to the same kind of answer": {
		"chain": [
			{"path": ["pdp", "rules", "egress", "deny"], "annotations": {"scope": "rule", "custom": {"code": "egress_x"}}},
			{"path": ["pdp", "rules", "egress", "deny"], "annotations": {
				"scope": "document",
				"custom": {"code": "egress_doc", "controls": ["MAESTRO", "OWASP-ASI09"]},
			}},
			package_entry,
		],
		"want": {
			"code": "egress_x", "message": "m", "rule": "pdp.rules.egress",
			"controls": ["OWASP-ASI02", "MAESTRO", "OWASP-ASI09"],
		},
	},
	"a package without annotations still names the rule's package, with no controls": {
		"chain": [{"path": ["pdp", "rules", "bare", "deny"], "annotations": {"scope": "rule", "custom": {"code": "bare_x"}}}],
		"want": {"code": "bare_x", "message": "m", "rule": "pdp.rules.bare", "controls": []},
	},
}

test_reason[note] if {
	some note, tc in reason_cases
	lib.reason(tc.chain, "m") == tc.want
}

test_reason_from_a_real_chain if {
	got := lib.reason(rego.metadata.chain(), "m")
	got == {"code": "unspecified", "message": "m", "rule": "pdp.lib_test", "controls": []}
}
