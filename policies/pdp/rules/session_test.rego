package pdp.rules.session_test

import data.pdp.lib_test as fixtures
import data.pdp.rules.session

# A history (pdp/sessions.py shape) with the given steps; the counters follow them.
history(steps, state_changing) := {
	"id": "T-42",
	"calls": count(steps),
	"state_changing": state_changing,
	"first_at_ns": 1768471100000000000,
	"last_at_ns": 1768471190000000000,
	"age_s": 10,
	"max_sensitivity": max_name(steps),
	"max_sensitivity_rank": max([-1, max([step.sensitivity_rank | some step in steps])]),
	"action_types": {},
	"tools": [],
	"destinations": [],
	"steps": steps,
	"recent": [],
	"truncated": false,
}

max_name(steps) := [name |
	some name, rank in {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}
	rank == max([step.sensitivity_rank | some step in steps])
][0]

step(type, name, destination, rank) := {
	"type": type,
	"name": name,
	"operation": "read",
	"destination": destination,
	"destination_type": "service",
	"sensitivity_rank": rank,
}

restricted_read := step("secret.read", "payroll.db_password", "vault", 3)

confidential_read := step("data.read", "crm.customers.get", "crm-db", 2)

internal_read := step("tool.call", "jira.search_issues", "jira", 1)

vault_tool := step("tool.call", "vault.read_secret", "vault", 1)

task(steps) := {"session": {"task": history(steps, 0)}}

mcp_session(steps) := {"session": {"session": object.union(history(steps, 0), {"id": "s-9"})}}

to_partner := {"destination": {"type": "service", "name": "partner-analytics", "host": null}}

truncated := {"session": {"task": object.union(history([internal_read], 0), {"truncated": true})}}

to_github := {"action": {"name": "github.search_code"}, "destination": {"name": "github", "host": "api.github.com"}}

http_to_slack := {
	"action": {"type": "http.request", "name": "post", "operation": "write"},
	"destination": {"type": "external", "name": "slack-webhook", "host": null},
}

deny_cases := {
	"a first call (no history yet) is not denied": {"want": set()},
	"an internal call after a restricted read is not denied": {
		"patch": task([restricted_read]),
		"want": set(),
	},
	"egress after only internal data is not denied": {
		"patch": object.union(task([internal_read]), to_github),
		"want": set(),
	},
	"egress after a restricted read in the task is session_toxic_flow": {
		"patch": object.union(task([internal_read, restricted_read]), to_github),
		"want": {"session_toxic_flow"},
	},
	"egress after a confidential read in the MCP session is session_toxic_flow": {
		"patch": object.union(mcp_session([confidential_read]), to_github),
		"want": {"session_toxic_flow"},
	},
	"a partner cleared for confidential data may receive it after a confidential read": {
		"patch": object.union(task([confidential_read]), to_partner),
		"want": set(),
	},
	"a partner cleared for confidential data may not receive it after a restricted read": {
		"patch": object.union(task([restricted_read]), to_partner),
		"want": {"session_toxic_flow"},
	},
	"the toxic-flow threshold comes from data": {
		"patch": object.union(task([confidential_read]), to_github),
		"sessions": {"toxic_flow": {"min_sensitivity": "restricted"}},
		"want": set(),
	},
	"a secret read then an external HTTP request is toxic and a forbidden sequence": {
		"patch": object.union(task([restricted_read]), http_to_slack),
		"want": {"session_toxic_flow", "session_forbidden_sequence"},
	},
	"a vault tool then an external tool is a forbidden sequence": {
		"patch": object.union(task([vault_tool]), to_github),
		"want": {"session_forbidden_sequence"},
	},
	"a vault tool then an internal tool is not a forbidden sequence": {
		"patch": task([vault_tool]),
		"want": set(),
	},
	"a truncated history counts as having seen every pattern and restricted data": {
		"patch": object.union(truncated, to_github),
		"want": {"session_forbidden_sequence", "session_toxic_flow"},
	},
	"egress after a call the inventory classes restricted is toxic whatever its label": {
		"patch": object.union(task([step("tool.call", "hr.read_record", "hr-files", 1)]), to_github),
		"inventory": {"destinations": {"hr-files": {"tenant": "acme", "type": "tool", "data_class": "restricted"}}},
		"want": {"session_toxic_flow"},
	},
	"egress after a call whose categories raise it to confidential is toxic": {
		"patch": object.union(task([object.union(internal_read, {"categories": ["pii"]})]), to_github),
		"classification": {"category_floors": {"pii": "confidential"}},
		"want": {"session_toxic_flow"},
	},
	"a write within the budget is not denied": {
		"patch": {"action": {"operation": "write"}, "session": {"task": history([internal_read], 19)}},
		"want": set(),
	},
	"a write once the budget is spent is session_budget_exceeded": {
		"patch": {"action": {"operation": "write"}, "session": {"task": history([internal_read], 20)}},
		"want": {"session_budget_exceeded"},
	},
	"a tool call that does not say its operation counts against the budget": {
		"patch": {"action": {"operation": null}, "session": {"task": history([internal_read], 20)}},
		"want": {"session_budget_exceeded"},
	},
	"a read once the budget is spent is not denied": {
		"patch": {"session": {"task": history([internal_read], 20)}},
		"want": set(),
	},
	"the budget is per tenant when data says so": {
		"patch": {"action": {"operation": "write"}, "session": {"task": history([internal_read], 10)}},
		"sessions": {"state_changing_budget": {"tenants": {"acme": 10}}},
		"want": {"session_budget_exceeded"},
	},
	"a history the store could not read denies a call that names a task": {
		"patch": {"session": {"available": false, "error": "redis down"}},
		"want": {"session_unavailable"},
	},
	"a history the store could not read denies a call that names neither task nor session too": {
		"patch": {"session": {"available": false, "error": "redis down"}},
		"remove": ["task/id", "task/session"],
		"want": {"session_unavailable"},
	},
	"an input without session (a decision recorded before histories) is judged on its own": {
		"remove": ["session"],
		"want": set(),
	},
}

test_deny[note] if {
	some note, tc in deny_cases
	reasons := session.deny with input as fixtures.input_for(tc)
		with data.inventory as object.union(fixtures.inventory, object.get(tc, "inventory", {}))
		with data.sessions as object.union(sessions_data, object.get(tc, "sessions", {}))
		with data.classification as object.get(tc, "classification", {})
	fixtures.codes(reasons) == tc.want
}

sessions_data := {
	"toxic_flow": {"min_sensitivity": "confidential"},
	"state_changing_budget": {"default": 20, "tenants": {}},
	"forbidden_sequences": [
		{
			"name": "secret then external request",
			"description": "a secret read, then an HTTP request to an external destination",
			"earlier": {"action_types": ["secret.read"]},
			"then": {"action_types": ["http.request"], "destination_trust": ["external"]},
		},
		{
			"name": "vault tool then outbound tool",
			"description": "an MCP vault tool, then any call of an external MCP server",
			"earlier": {"action_types": ["tool.call"], "names": ["vault.*"]},
			"then": {"action_types": ["tool.call"], "destination_trust": ["external", "partner"]},
		},
	],
}

test_toxic_flow_reason_names_what_was_touched if {
	reasons := session.deny with input as fixtures.request(object.union(task([restricted_read]), to_github))
		with data.inventory as fixtures.inventory
		with data.sessions as sessions_data
	[reason] := [r | some r in reasons]
	reason.code == "session_toxic_flow"
	reason.message == concat("", [
		"restricted data was touched earlier in this task; ",
		`tool.call on external destination "github" could carry it out`,
	])
	reason.rule == "pdp.rules.session"
}

test_without_session_data_every_state_change_of_a_task_is_over_budget if {
	write := {"action": {"operation": "write"}, "session": {"task": history([internal_read], 0)}}
	reasons := session.deny with input as fixtures.request(write)
		with data.inventory as fixtures.inventory
		with data.sessions as {}
	fixtures.codes(reasons) == {"session_budget_exceeded"}
}
