package pdp.rules.delegation_test

import data.pdp.lib_test as fixtures
import data.pdp.rules.delegation

actor(sub) := {"sub": sub, "trust_domain": split(sub, "/")[2]}

orchestrator := "spiffe://acme.example/agents/orchestrator"

chain(actors) := {"chain": {
	"present": true,
	"verified": true,
	"error": null,
	"subject": "user:alice@acme.example",
	"subject_tenant": "acme",
	"issuer": "spiffe://acme.example",
	"actors": [actor(a) | some a in actors],
	"depth": count(actors),
}}

inventory := {"agents": {orchestrator: {"tenant": "acme", "status": "active", "entitlements": []}}}

deny_cases := {
	"no assertion is no chain and not denied": {"want": set()},
	"the agent itself, delegated by a user, is not denied": {
		"patch": chain([fixtures.support_bot]),
		"want": set(),
	},
	"an orchestrator of the same tenant delegating to the agent is not denied": {
		"patch": chain([fixtures.support_bot, orchestrator]),
		"want": set(),
	},
	"an assertion that did not verify is delegation_invalid": {
		"patch": {"chain": {"present": true, "error": {"code": "delegation.invalid_signature", "message": "bad"}}},
		"want": {"delegation_invalid"},
	},
	"a chain whose current actor is another agent is delegation_actor_mismatch": {
		"patch": chain([orchestrator, fixtures.support_bot]),
		"want": {"delegation_actor_mismatch"},
	},
	"a chain deeper than data.delegation.max_depth is delegation_too_deep": {
		"patch": chain([fixtures.support_bot, orchestrator, orchestrator, orchestrator]),
		"want": {"delegation_too_deep"},
	},
	"the depth limit comes from data": {
		"patch": chain([fixtures.support_bot, orchestrator]),
		"delegation": {"max_depth": 1},
		"want": {"delegation_too_deep"},
	},
	"an actor of another tenant is delegation_cross_tenant": {
		"patch": chain([fixtures.support_bot, fixtures.research_bot]),
		"want": {"delegation_cross_tenant"},
	},
	"an unregistered actor is delegation_cross_tenant": {
		"patch": chain([fixtures.support_bot, "spiffe://acme.example/agents/ghost"]),
		"want": {"delegation_cross_tenant"},
	},
	"a user of another tenant is delegation_cross_tenant": {
		"patch": object.union(chain([fixtures.support_bot]), {"chain": {"subject_tenant": "globex"}}),
		"want": {"delegation_cross_tenant"},
	},
	"an issuer the tenant does not trust is delegation_cross_tenant": {
		"patch": object.union(chain([fixtures.support_bot]), {"chain": {"issuer": "spiffe://globex.example"}}),
		"want": {"delegation_cross_tenant"},
	},
	"an input without chain (recorded before chains) is not denied": {
		"remove": ["chain"],
		"want": set(),
	},
}

test_deny[note] if {
	some note, tc in deny_cases
	reasons := delegation.deny with input as fixtures.input_for(tc)
		with data.inventory as object.union(fixtures.inventory, inventory)
		with data.delegation as object.union({"max_depth": 3}, object.get(tc, "delegation", {}))
	fixtures.codes(reasons) == tc.want
}

test_without_delegation_data_only_the_agent_itself_may_act if {
	reasons := delegation.deny with input as fixtures.request(chain([fixtures.support_bot, orchestrator]))
		with data.inventory as object.union(fixtures.inventory, inventory)
		with data.delegation as {}
	fixtures.codes(reasons) == {"delegation_too_deep"}
}
