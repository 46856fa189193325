package pdp.rules.request_test

import data.pdp.lib_test as fixtures
import data.pdp.rules.request

deny_cases := {
	"a well-formed request is not denied": {"want": set()},
	"a name with a colon is action_name_invalid": {
		"patch": {"action": {"name": "jira.search_issues:write"}},
		"want": {"action_name_invalid"},
	},
	"a name with a zero-width space is action_name_invalid": {
		"patch": {"action": {"name": "jira.search\u200b_issues"}},
		"want": {"action_name_invalid"},
	},
	"a name with a bidi override is action_name_invalid": {
		"patch": {"action": {"name": "jira.\u202esearch_issues"}},
		"want": {"action_name_invalid"},
	},
	"a name with a space is action_name_invalid": {
		"patch": {"action": {"name": "jira search"}},
		"want": {"action_name_invalid"},
	},
	"a name that starts with a dot is action_name_invalid": {
		"patch": {"action": {"name": ".jira"}},
		"want": {"action_name_invalid"},
	},
	"a name longer than 128 characters is action_name_invalid": {
		"patch": {"action": {"name": sprintf("a%0128d", [0])}},
		"want": {"action_name_invalid"},
	},
	"a null name is action_name_invalid": {"patch": {"action": {"name": null}}, "want": {"action_name_invalid"}},
	"a missing name is action_name_invalid": {"remove": ["action/name"], "want": {"action_name_invalid"}},
	"a null operation is action_operation_required": {
		"patch": {"action": {"operation": null}},
		"want": {"action_operation_required"},
	},
	"a missing operation is action_operation_required": {
		"remove": ["action/operation"],
		"want": {"action_operation_required"},
	},
	"an unknown operation is action_operation_required": {
		"patch": {"action": {"operation": "admin"}},
		"want": {"action_operation_required"},
	},
	"a destination type other than the inventory's is destination_type_mismatch": {
		"patch": {"destination": {"type": "model"}},
		"want": {"destination_type_mismatch"},
	},
	"an unregistered destination is left to tenancy": {
		"patch": {"destination": {"type": "model", "name": "confluence"}},
		"want": set(),
	},
}

test_deny[note] if {
	some note, tc in deny_cases
	reasons := request.deny with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory
	fixtures.codes(reasons) == tc.want
}
