package pdp.rules.entitlements_test

import data.pdp.lib_test as fixtures
import data.pdp.rules.entitlements

# support-bot may call jira.* (read, write) on jira and invoke two models; open-bot lists no
# purposes and may do any data action on four destinations.
grant_cases := {
	"an entitlement covering type, name, operation and destination grants": {"want": {"entitled"}},
	"a glob name covers another tool of the same prefix": {
		"patch": {"action": {"name": "jira.create_issue", "operation": "write"}},
		"want": {"entitled"},
	},
	"a glob name does not cross a dot": {
		"patch": {"action": {"name": "jira.admin.delete_project"}},
		"want": set(),
	},
	"an operation the entitlement does not list is not granted": {
		"patch": {"action": {"operation": "delete"}},
		"want": set(),
	},
	"a destination the entitlement does not list is not granted": {
		"patch": {"destination": {"name": "github", "host": "api.github.com"}},
		"want": set(),
	},
	"an action type the entitlement does not list is not granted": {
		"patch": {"action": {"type": "data.read"}},
		"want": set(),
	},
	"an action without a name is not covered by a names list": {
		"patch": {"action": {"name": null}},
		"want": set(),
	},
	"an action without an operation is not covered by an operations list": {
		"patch": {"action": {"operation": null}},
		"want": set(),
	},
	"an entitlement without names or operations covers any": {
		"patch": {
			"action": {"type": "model.invoke", "name": null, "operation": null},
			"destination": {"type": "model", "name": "internal-llm", "host": null},
		},
		"want": {"entitled"},
	},
	"an unregistered agent is granted nothing": {
		"patch": {"identity": fixtures.identity("spiffe://acme.example/agents/shadow-bot")},
		"want": set(),
	},
	"an unauthenticated request is granted nothing": {
		"patch": {"identity": fixtures.failed_identity(null)},
		"want": set(),
	},
}

test_grant[note] if {
	some note, tc in grant_cases
	reasons := entitlements.grant with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory_for(tc)
	fixtures.codes(reasons) == tc.want
}

deny_cases := {
	"an entitled action for an allowed purpose is not denied": {"want": set()},
	"an action no entitlement covers is action_not_entitled": {
		"patch": {"action": {"operation": "delete"}},
		"want": {"action_not_entitled"},
	},
	"an agent without entitlements is action_not_entitled": {
		"patch": {"identity": fixtures.identity(fixtures.research_bot), "task": {"purpose": "literature review"}},
		"want": {"action_not_entitled"},
	},
	"an unregistered agent is left to inventory": {
		"patch": {"identity": fixtures.identity("spiffe://acme.example/agents/shadow-bot")},
		"want": set(),
	},
	"an unauthenticated request is left to authn": {
		"patch": {"identity": fixtures.failed_identity(null)},
		"want": set(),
	},
	"a purpose the agent does not list is purpose_not_allowed": {
		"patch": {"task": {"purpose": "payroll reconciliation"}},
		"want": {"purpose_not_allowed"},
	},
	"a purpose-bound agent's task without a purpose is purpose_required": {
		"remove": ["task/purpose"],
		"want": {"purpose_required"},
	},
	"an agent that lists no purposes needs none": {
		"patch": {
			"identity": fixtures.identity(fixtures.open_bot),
			"action": {"type": "data.read", "name": "crm.customers.select"},
			"destination": {"type": "database", "name": "crm-db", "host": null},
		},
		"remove": ["task/purpose"],
		"want": set(),
	},
	"an agent that lists an empty set of purposes may act for none": {
		"inventory": {"agents": {fixtures.support_bot: {"purposes": []}}},
		"want": {"purpose_not_allowed"},
	},
	"an agent that lists no purposes may act for any registered one": {
		"patch": {
			"identity": fixtures.identity(fixtures.open_bot),
			"action": {"type": "data.read", "name": "crm.customers.select"},
			"destination": {"type": "database", "name": "crm-db", "host": null},
		},
		"want": set(),
	},
	"an agent that lists no purposes is not bound by the purpose's action types": {
		"patch": {
			"identity": fixtures.identity(fixtures.open_bot),
			"action": {"type": "http.request", "name": "slack.post", "operation": "write"},
			"destination": {"type": "external", "name": "slack-webhook", "host": null},
		},
		"want": set(),
	},
	"an action type the purpose does not list is action_not_allowed_for_purpose": {
		"patch": {
			"action": {"type": "http.request", "name": "slack.post", "operation": "write"},
			"destination": {"type": "external", "name": "slack-webhook", "host": null},
		},
		"want": {"action_not_allowed_for_purpose", "action_not_entitled"},
	},
	"an action type the agent's own purpose does not list is action_not_allowed_for_purpose": {
		"inventory": {"purposes": {"triage support tickets": {"actions": ["model.invoke"]}}},
		"want": {"action_not_allowed_for_purpose"},
	},
	"an unregistered purpose allows no action": {
		"inventory": {"agents": {fixtures.support_bot: {"purposes": ["world domination"]}}},
		"patch": {"task": {"purpose": "world domination"}},
		"want": {"action_not_allowed_for_purpose"},
	},
	"a purpose the agent may not use is reported once, not also per action": {
		"patch": {"task": {"purpose": "world domination"}},
		"want": {"purpose_not_allowed"},
	},
}

test_deny[note] if {
	some note, tc in deny_cases
	reasons := entitlements.deny with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory_for(tc)
	fixtures.codes(reasons) == tc.want
}

test_not_entitled_reason_describes_the_action if {
	reasons := entitlements.deny with input as fixtures.request({"action": {"operation": "delete"}})
		with data.inventory as fixtures.inventory
	reasons == {{
		"code": "action_not_entitled",
		"message": sprintf(
			`agent %q has no entitlement for tool.call jira.search_issues (operation delete) on "jira"`,
			[fixtures.support_bot],
		),
		"rule": "pdp.rules.entitlements",
		"controls": ["OWASP-ASI01", "OWASP-ASI02", "OWASP-ASI03", "MAESTRO", "NIST-AI-RMF:MAP-1.1"],
	}}
}
