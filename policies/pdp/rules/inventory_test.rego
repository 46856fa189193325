package pdp.rules.inventory_test

import data.pdp.lib_test as fixtures
import data.pdp.rules.inventory

deny_cases := {
	"a registered, active agent is not denied": {"want": set()},
	"an agent that was never registered is agent_unknown": {
		"patch": {"identity": fixtures.identity("spiffe://acme.example/agents/shadow-bot")},
		"want": {"agent_unknown"},
	},
	"a disabled agent is agent_inactive": {
		"patch": {"identity": fixtures.identity(fixtures.retired_bot)},
		"want": {"agent_inactive"},
	},
	"an agent without a status is agent_inactive": {
		"inventory_remove": [["agents", fixtures.support_bot, "status"]],
		"want": {"agent_inactive"},
	},
	"an unauthenticated request is left to authn": {
		"patch": {"identity": fixtures.failed_identity({"code": "authn.token_missing", "message": "no token"})},
		"want": set(),
	},
}

test_deny[note] if {
	some note, tc in deny_cases
	reasons := inventory.deny with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory_for(tc)
	fixtures.codes(reasons) == tc.want
}

agent_cases := {
	"an authenticated, registered agent is found": {"want": {fixtures.support_bot}},
	"an unregistered agent is not found": {
		"patch": {"identity": fixtures.identity("spiffe://acme.example/agents/shadow-bot")},
		"want": set(),
	},
	"an unauthenticated request has no agent": {
		"patch": {"identity": fixtures.failed_identity(null)},
		"want": set(),
	},
}

test_agent[note] if {
	some note, tc in agent_cases
	found := {id |
		some id, entry in fixtures.inventory.agents
		entry == inventory.agent with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory
	}
	found == tc.want
}

test_inactive_reason_names_the_status if {
	reasons := inventory.deny with input as fixtures.request({"identity": fixtures.identity(fixtures.retired_bot)})
		with data.inventory as fixtures.inventory
	reasons == {{
		"code": "agent_inactive",
		"message": sprintf(`agent %q is registered with status "disabled", not "active"`, [fixtures.retired_bot]),
		"rule": "pdp.rules.inventory",
		"controls": ["OWASP-ASI10", "OWASP-ASI03", "MAESTRO", "NIST-AI-RMF:GOVERN-1.6", "NIST-AI-RMF:MANAGE-2.4"],
	}}
}
