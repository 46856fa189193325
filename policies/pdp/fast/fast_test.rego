# METADATA
# title: Fast path tests
# description: |
#   The fast path clears the ordinary low-risk read, clears nothing that any deny rule
#   would refuse or that gets other obligations, and whenever it clears, the full
#   composition decides exactly what it does. tests/test_policy_fastpath.py proves the
#   same over generated inputs on the built bundle.
package pdp.fast_test

import data.pdp.fast
import data.pdp.lib_test as fixtures

# The packages under pdp.rules that define deny (or grant); object.keys(data.pdp.rules)
# would evaluate every rule of every package, the modules' own tests included.
# regal ignore:use-object-keys
denying_modules contains name if {
	some name
	data.pdp.rules[name].deny
}

# regal ignore:use-object-keys
granting_modules contains name if {
	some name
	data.pdp.rules[name].grant
}

# Every module that denies (or grants) was reviewed. Modules that only set obligations
# (credential, cache) are read by name in pdp.decision, so a new one needs wiring there.
# Only deny and grant are evaluated: the whole of data.pdp.rules would run the modules'
# own test packages too, and take seconds.
test_every_module_under_pdp_rules_was_reviewed_for_the_fast_path if {
	denying := denying_modules with input as fixtures.base_input with data.inventory as fixtures.inventory
	granting := granting_modules with input as fixtures.base_input with data.inventory as fixtures.inventory
	modules := denying | granting
	count(modules) > 10
	every name in modules {
		name in fast.reviewed_modules
	}
}

history := {"steps": [], "truncated": false, "max_sensitivity_rank": 0}

# Each case: the fixture input and inventory with the case's changes, and whether the fast
# path clears it.
# Calls the fast path clears.
cleared_cases := {
	"a search of jira while triaging tickets is cleared": {"cleared": true},
	"without a principal it is cleared": {"patch": {"agent": {"on_behalf_of": {}}}, "cleared": true},
	"public data with an unfloored category is cleared": {
		"patch": {"data": {"sensitivity": "public", "sensitivity_rank": 0, "categories": ["tickets"]}},
		"cleared": true,
	},
	"an agent that lists no purposes is cleared without one": {
		"patch": {"task": {}},
		"inventory_remove": ["agents/spiffe:~1~1acme.example~1agents~1support-bot/purposes"],
		"cleared": true,
	},
	"a destination that registers no hosts is cleared without a URL host check": {
		"patch": {"destination": {"host": "elsewhere.example"}},
		"inventory_remove": ["destinations/jira/hosts"],
		"cleared": true,
	},
	"a verified principal of an agent that requires one is cleared": {
		"patch": {"agent": {"on_behalf_of": {"verified": true}}},
		"inventory": {"agents": {fixtures.support_bot: {"requires_verified_delegation": true}}},
		"cleared": true,
	},
	"a shared destination is cleared": {
		"inventory": {"destinations": {"jira": {"tenant": "*"}}},
		"cleared": true,
	},
}

# Calls it leaves to the composition.
refused_cases := {
	"a write is not cleared": {"patch": {"action": {"operation": "write"}}, "cleared": false},
	"a data write called a read is not cleared": {
		"patch": {
			"identity": fixtures.identity(fixtures.open_bot),
			"agent": {"id": "open-bot"},
			"action": {"type": "data.write", "name": "crm.customers.update"},
			"destination": {"type": "database", "name": "crm-db", "host": "crm.acme.internal"},
		},
		"cleared": false,
	},
	"a secret read is not cleared": {
		"patch": {
			"identity": fixtures.identity(fixtures.open_bot),
			"agent": {"id": "open-bot"},
			"action": {"type": "secret.read", "name": "vault.read"},
			"destination": {"type": "service", "name": "vault", "host": "vault.acme.internal"},
		},
		"cleared": false,
	},
	"another tenant that trusts the agent's trust domain is not cleared": {
		"patch": {"tenant": "globex", "agent": {"on_behalf_of": {"tenant": "globex"}}},
		"inventory": {
			"tenants": {"globex": {"trust_domains": ["acme.example"]}},
			"destinations": {"jira": {"tenant": "*"}},
		},
		"cleared": false,
	},
	"no operation is not cleared": {"patch": {"action": {"operation": null}}, "cleared": false},
	"a model call is not cleared": {
		"patch": {
			"action": {"type": "model.invoke", "name": "internal-llm"},
			"destination": {"type": "model", "name": "internal-llm", "host": null, "scheme": null, "port": null},
		},
		"cleared": false,
	},
	"an unauthenticated agent is not cleared": {
		"patch": {"identity": fixtures.failed_identity({"code": "authn.expired", "message": "expired"})},
		"cleared": false,
	},
	"a half-filled identity is not cleared": {
		"patch": {"identity": {"spiffe_id": null}},
		"cleared": false,
	},
	"an unregistered agent is not cleared": {
		"patch": {"identity": fixtures.identity("spiffe://acme.example/agents/shadow")},
		"cleared": false,
	},
	"a retired agent is not cleared": {
		"inventory": {"agents": {fixtures.support_bot: {"status": "retired"}}},
		"cleared": false,
	},
	"an agent disabled in the PDP is not cleared": {"patch": {"agent": {"status": "disabled"}}, "cleared": false},
	"another tenant is not cleared": {"patch": {"tenant": "globex"}, "cleared": false},
	"an untrusted trust domain is not cleared": {
		"inventory": {"tenants": {"acme": {"trust_domains": ["other.example"]}}},
		"cleared": false,
	},
	"a principal of another tenant is not cleared": {
		"patch": {"agent": {"on_behalf_of": {"tenant": "globex"}}},
		"cleared": false,
	},
	"a principal without a tenant is not cleared": {
		"remove": ["agent/on_behalf_of/tenant"],
		"cleared": false,
	},
	"a principal with an odd subject is not cleared": {
		"patch": {"agent": {"on_behalf_of": {"subject": "root;admin=true"}}},
		"cleared": false,
	},
	"an unverified principal of an agent that requires a verified one is not cleared": {
		"inventory": {"agents": {fixtures.support_bot: {"requires_verified_delegation": true}}},
		"cleared": false,
	},
	"an unknown destination is not cleared": {"patch": {"destination": {"name": "confluence"}}, "cleared": false},
	"a destination of another tenant is not cleared": {
		"inventory": {"destinations": {"jira": {"tenant": "globex"}}},
		"cleared": false,
	},
	"another destination type is not cleared": {"patch": {"destination": {"type": "service"}}, "cleared": false},
	"a host the destination does not register is not cleared": {
		"patch": {"destination": {"host": "evil.example"}},
		"cleared": false,
	},
	"no URL for a destination that registers hosts is not cleared": {
		"patch": {"destination": {"url": null, "host": null, "scheme": null, "port": null}},
		"cleared": false,
	},
	"plain http is not cleared": {"patch": {"destination": {"scheme": "http", "port": 80}}, "cleared": false},
	"another port is not cleared": {"patch": {"destination": {"port": 8443}}, "cleared": false},
	"an action name with a colon is not cleared": {
		"patch": {"action": {"name": "jira.search_issues:write"}},
		"cleared": false,
	},
	"a name no entitlement covers is not cleared": {"patch": {"action": {"name": "github.search"}}, "cleared": false},
	"confidential data is not cleared": {
		"patch": {"data": {"sensitivity": "confidential", "sensitivity_rank": 2}},
		"cleared": false,
	},
	"a rank above the label is not cleared": {"patch": {"data": {"sensitivity_rank": 2}}, "cleared": false},
	"a category with a confidential floor is not cleared": {
		"patch": {"data": {"categories": ["pii"]}},
		"cleared": false,
	},
	"a destination with a confidential data class is not cleared": {
		"inventory": {"destinations": {"jira": {"data_class": "confidential"}}},
		"cleared": false,
	},
	"a tool with a restricted data class is not cleared": {
		"inventory": {"tools": {"jira.search_issues": {"data_class": "restricted"}}},
		"cleared": false,
	},
	"a risk signal is not cleared": {
		"patch": {"prompt": {"risk_signals": ["pii_detected"]}},
		"cleared": false,
	},
	"a task history is not cleared": {
		"patch": {"session": {"task": history}},
		"cleared": false,
		"composition_allows": true,
	},
	"a session history is not cleared": {
		"patch": {"session": {"session": history}},
		"cleared": false,
		"composition_allows": true,
	},
	"an unreadable history is not cleared": {
		"patch": {"session": {"available": false, "error": "store unreachable"}},
		"cleared": false,
	},
	"a delegation chain is not cleared": {
		"patch": {"chain": {"present": true}},
		"cleared": false,
		"composition_allows": true,
	},
	"a verified delegation chain is not cleared": {
		"patch": {"chain": {"verified": true}},
		"cleared": false,
		"composition_allows": true,
	},
	"a purpose-bound agent without a purpose is not cleared": {"patch": {"task": {"purpose": null}}, "cleared": false},
	"a purpose the agent does not list is not cleared": {
		"patch": {"task": {"purpose": "world domination"}},
		"cleared": false,
	},
	# Off-schema entries the composition refuses a task purpose for (purpose_not_allowed):
	# only a missing purposes member is "not purpose-bound" (red team: false was read so).
	"an agent whose purposes are false is not cleared": {
		"inventory": {"agents": {fixtures.support_bot: {"purposes": false}}},
		"cleared": false,
	},
	"an agent whose purposes are null is not cleared": {
		"inventory": {"agents": {fixtures.support_bot: {"purposes": null}}},
		"cleared": false,
	},
	"a purpose that does not allow the action type is not cleared": {
		"inventory": {"purposes": {"triage support tickets": {"actions": ["model.invoke"]}}},
		"cleared": false,
	},
}

cases := object.union(cleared_cases, refused_cases)

test_clears[note] if {
	some note, tc in cleared_cases

	# The fast path's entries the bundle build would ship for the case's inventory (pdp.index).
	entries := data.pdp.index.fast with data.inventory as fixtures.inventory_for(tc)
	fast.cleared with input as fixtures.input_for(tc)
		with data.inventory as fixtures.inventory_for(tc)
		with data.pdp_index.fast as entries
}

test_does_not_clear[note] if {
	some note, tc in refused_cases

	# The fast path's entries the bundle build would ship for the case's inventory (pdp.index).
	entries := data.pdp.index.fast with data.inventory as fixtures.inventory_for(tc)
	not fast.cleared with input as fixtures.input_for(tc)
		with data.inventory as fixtures.inventory_for(tc)
		with data.pdp_index.fast as entries
}

# The fast path reads what it checks that does not depend on the request only from the
# bundle's entries (data.pdp_index.fast): a bundle without them (a plain `opa build`, or a
# build from modules other than the reviewed ones), or whose entries do not list the call,
# clears nothing.
test_clears_nothing_without_the_bundles_entries if {
	every tc in cleared_cases {
		not fast.cleared with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory_for(tc)
		not fast.cleared with input as fixtures.input_for(tc)
			with data.inventory as fixtures.inventory_for(tc)
			with data.pdp_index.fast as {}
	}
}

# Where the fast path clears, the composition decides the same.
test_agrees_with_the_composition_where_it_clears[note] if {
	some note, tc in cleared_cases
	decision := data.pdp.composed with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory_for(tc)
	decision == fast.decision
}

# Where it does not, the composition decides something else (a deny, or other
# obligations), except for the calls the fast path leaves to the composition on purpose
# (composition_allows: a history or a delegation chain to judge).
test_the_composition_decides_otherwise_where_it_does_not_clear[note] if {
	some note, tc in refused_cases
	decision := data.pdp.composed with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory_for(tc)
	same := decision == fast.decision
	same == object.get(tc, "composition_allows", false)
}
