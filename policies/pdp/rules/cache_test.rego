package pdp.rules.cache_test

import data.pdp.lib_test as fixtures
import data.pdp.rules.cache

ttl_cases := {
	"a low-risk tool read is cached 30s": {"want": 30},
	"a data read of public data is cached 30s": {
		"patch": {
			"action": {"type": "data.read", "name": "crm.customers.lookup"},
			"data": {"sensitivity": "public", "sensitivity_rank": 0},
		},
		"want": 30,
	},
	"a write is never cached": {"patch": {"action": {"operation": "write"}}, "want": 0},
	"an execute is never cached": {"patch": {"action": {"operation": "execute"}}, "want": 0},
	"a read without an operation is never cached": {"remove": ["action/operation"], "want": 0},
	"a model invocation is never cached": {
		"patch": {"action": {"type": "model.invoke", "name": "internal-llm"}},
		"want": 0,
	},
	"confidential data is never cached": {
		"patch": {"data": {"sensitivity": "confidential", "sensitivity_rank": 2}},
		"want": 0,
	},
	"a prompt with a risk signal is never cached": {
		"patch": {"prompt": {"risk_signals": ["prompt_injection_suspected"]}},
		"want": 0,
	},
	"a secret read is never cached": {
		"patch": {"action": {"type": "secret.read", "name": "payroll.db_password"}},
		"want": 0,
	},
	"an unauthenticated request is never cached": {
		"patch": {"identity": fixtures.failed_identity({"code": "authn.expired", "message": "expired"})},
		"want": 0,
	},
}

test_ttl_seconds[note] if {
	some note, tc in ttl_cases
	got := cache.ttl_seconds with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory
	got == tc.want
}
