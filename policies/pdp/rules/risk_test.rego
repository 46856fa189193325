package pdp.rules.risk_test

import data.pdp.lib_test as fixtures
import data.pdp.rules.risk

secret_read := {
	"identity": fixtures.identity(fixtures.open_bot),
	"action": {"type": "secret.read", "name": "payroll.db_password", "operation": "read"},
	"destination": {"type": "service", "name": "vault", "host": null},
}

data_export := {
	"identity": fixtures.identity(fixtures.open_bot),
	"action": {"type": "data.export", "name": "analytics.upload", "operation": "write"},
	"destination": {"type": "service", "name": "partner-analytics", "host": null},
}

write_to_prod := {"action": {"name": "jira.create_issue", "operation": "write"}, "destination": {"environment": "prod"}}

high_risk_cases := {
	"a read is not high risk": {"want": false},
	"a secret read is high risk": {"patch": secret_read, "want": true},
	"a data export is high risk": {"patch": data_export, "want": true},
	"a write the request marks prod is high risk": {"patch": write_to_prod, "want": true},
	"a delete on a destination the inventory marks prod is high risk": {
		"patch": {
			"action": {"type": "data.read", "name": "crm.customers.purge", "operation": "delete"},
			"destination": {"type": "database", "name": "crm-db", "host": null},
		},
		"want": true,
	},
	"a data.write without an operation on prod is high risk": {
		"patch": {"action": {"type": "data.write", "operation": null}, "destination": {"environment": "prod"}},
		"want": true,
	},
	"a write the request calls staging on an unpinned destination is still high risk": {
		"patch": {"action": {"operation": "write"}, "destination": {"environment": "staging"}},
		"want": true,
	},
	"a write where neither request nor inventory says an environment is prod, so high risk": {
		"patch": {"action": {"operation": "write"}},
		"want": true,
	},
	"a write the request calls dev on a destination the inventory does not pin is high risk": {
		"patch": {"action": {"operation": "write"}, "destination": {"environment": "dev"}},
		"want": true,
	},
	"a write the request calls dev on a destination the inventory pins to staging is not": {
		"inventory": {"destinations": {"jira": {"environment": "staging"}}},
		"patch": {"action": {"operation": "write"}, "destination": {"environment": "dev"}},
		"want": false,
	},
	"a write the request calls prod on a destination the inventory pins to staging is high risk": {
		"inventory": {"destinations": {"jira": {"environment": "staging"}}},
		"patch": {"action": {"operation": "write"}, "destination": {"environment": "prod"}},
		"want": true,
	},
	"an execute on prod is high risk": {"patch": {"action": {"operation": "execute"}}, "want": true},
	"a delete on prod is high risk": {"patch": {"action": {"operation": "delete"}}, "want": true},
	"an action without an operation on prod is high risk": {"patch": {"action": {"operation": null}}, "want": true},
	"a write to an unregistered destination the request marks prod is high risk": {
		"patch": {"action": {"operation": "write"}, "destination": {"name": "confluence", "environment": "prod"}},
		"want": true,
	},
	"a read on prod is not high risk": {
		"patch": {"destination": {"environment": "prod"}},
		"want": false,
	},
}

test_high_risk[note] if {
	some note, tc in high_risk_cases
	got := risk.high_risk with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory_for(tc)
	got == tc.want
}

test_recheck_at_target_follows_high_risk[note] if {
	some note, tc in high_risk_cases
	got := risk.recheck_at_target with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory_for(tc)
	got == tc.want
}

approval_cases := {
	"a secret read needs approval": {
		"patch": secret_read,
		"want": {"required": true, "reason": `secret.read on "vault" needs human approval`, "ttl_seconds": 900, "uses": 1},
	},
	"a data export needs approval": {
		"patch": data_export,
		"want": {
			"required": true,
			"reason": `data.export on "partner-analytics" needs human approval`,
			"ttl_seconds": 900,
			"uses": 1,
		},
	},
	"a write to prod needs a recheck, not approval": {"patch": write_to_prod, "want": null},
	"a read needs no approval": {"want": null},
}

test_approval[note] if {
	some note, tc in approval_cases
	got := risk.approval with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory
	got == tc.want
}

granted := {"id": "apr-1", "status": "granted", "expires_at": 1768471260}

deny_cases := {
	"a secret read without an approval is approval_required": {"patch": secret_read, "want": {"approval_required"}},
	"a data export without an approval is approval_required": {"patch": data_export, "want": {"approval_required"}},
	"a high-risk action with a granted approval and no risk signals is not denied": {
		"patch": object.union(secret_read, {"approval": granted}),
		"want": set(),
	},
	"an approval that is pending does not count": {
		"patch": object.union(secret_read, {"approval": {"id": "apr-1", "status": "pending", "expires_at": 1768471260}}),
		"want": {"approval_required"},
	},
	"a granted approval that has expired does not count": {
		"patch": object.union(secret_read, {"approval": {"id": "apr-1", "status": "granted", "expires_at": 1768471200}}),
		"want": {"approval_required"},
	},
	"a read needs no approval even when one is passed": {"patch": {"approval": granted}, "want": set()},
	"a high-risk action with any risk signal is high_risk_with_prompt_risk": {
		"patch": object.union(secret_read, {"approval": granted, "prompt": {"risk_signals": ["pii_detected"]}}),
		"want": {"high_risk_with_prompt_risk"},
	},
	"a read with a suspected injection is not denied here": {
		"patch": {"prompt": {"risk_signals": ["prompt_injection_suspected"]}},
		"want": set(),
	},
	"a write outside prod with a suspected injection is high_risk_with_prompt_risk": {
		"inventory": {"destinations": {"jira": {"environment": "staging"}}},
		"patch": {"action": {"operation": "write"}, "prompt": {"risk_signals": ["prompt_injection_suspected"]}},
		"want": {"high_risk_with_prompt_risk"},
	},
	"an execute outside prod with a suspected injection is high_risk_with_prompt_risk": {
		"inventory": {"destinations": {"jira": {"environment": "staging"}}},
		"patch": {"action": {"operation": "execute"}, "prompt": {"risk_signals": ["prompt_injection_suspected"]}},
		"want": {"high_risk_with_prompt_risk"},
	},
	"a write outside prod with another risk signal is not denied": {
		"inventory": {"destinations": {"jira": {"environment": "staging"}}},
		"patch": {"action": {"operation": "write"}, "prompt": {"risk_signals": ["pii_detected"]}},
		"want": set(),
	},
	"an execute on an unpinned destination with a suspected injection is high_risk_with_prompt_risk": {
		"patch": {"action": {"operation": "execute"}, "prompt": {"risk_signals": ["prompt_injection_suspected"]}},
		"want": {"high_risk_with_prompt_risk"},
	},
}

test_deny[note] if {
	some note, tc in deny_cases
	reasons := risk.deny with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory_for(tc)
	fixtures.codes(reasons) == tc.want
}

test_injection_behind_a_high_risk_action_is_one_reason if {
	patch := object.union(write_to_prod, {"prompt": {"risk_signals": ["pii_detected", "prompt_injection_suspected"]}})
	reasons := risk.deny with input as fixtures.request(patch) with data.inventory as fixtures.inventory
	reasons == {{
		"code": "high_risk_with_prompt_risk",
		"message": concat("", [
			`high-risk action tool.call on "jira" refused: `,
			"the prompt raised risk signals pii_detected, prompt_injection_suspected",
		]),
		"rule": "pdp.rules.risk",
		"controls": [
			"OWASP-ASI01", "OWASP-ASI02", "OWASP-ASI09", "MAESTRO",
			"NIST-AI-RMF:MAP-3.5", "NIST-AI-RMF:MANAGE-2.4",
		],
	}}
}
