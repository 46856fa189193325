package pdp.index_test

import data.pdp.index

inventory := {"agents": {
	"spiffe://a/x": {"entitlements": [
		{"action_types": ["tool.call", "data.read"], "destinations": ["jira", "crm"], "names": ["jira.*"]},
		{"action_types": ["tool.call"], "destinations": ["jira"], "operations": ["read"]},
	]},
	"spiffe://a/y": {},
}}

test_each_entitlement_is_listed_under_every_destination_and_action_type_it_names if {
	[first, second] := inventory.agents["spiffe://a/x"].entitlements
	index.entitlements == {"spiffe://a/x": {
		"jira": {"tool.call": {first, second}, "data.read": {first}},
		"crm": {"tool.call": {first}, "data.read": {first}},
	}} with data.inventory as inventory
}

fast_inventory := {
	"tenants": {"acme": {"trust_domains": ["acme.example"]}},
	"agents": {
		"spiffe://acme.example/a": {
			"tenant": "acme", "status": "active", "purposes": ["triage"],
			"entitlements": [
				{"action_types": ["tool.call"], "destinations": ["jira", "secrets", "other"], "names": ["jira.*"]},
				{"action_types": ["tool.call"], "destinations": ["jira"], "names": ["jira.admin"], "operations": ["write"]},
				{"action_types": ["model.invoke"], "destinations": ["jira"]},
			],
		},
		"spiffe://acme.example/retired": {
			"tenant": "acme", "status": "retired",
			"entitlements": [{"action_types": ["tool.call"], "destinations": ["jira"]}],
		},
	},
	"destinations": {
		"jira": {"tenant": "acme", "type": "tool", "hosts": ["jira.acme"]},
		"secrets": {"tenant": "acme", "type": "tool", "data_class": "restricted"},
		"other": {"tenant": "globex", "type": "tool"},
	},
	"purposes": {"triage": {"actions": ["tool.call"]}},
	"tools": {"jira.salaries": {"data_class": "confidential"}, "jira.search": {"data_class": "internal"}},
}

# One entry per agent, destination, read action type, tenant, trust domain and destination
# type, only where an entitlement allows a read: not for a retired agent, a restricted or
# another tenant's destination, a write-only entitlement or a model call.
test_fast_entries_only_where_the_fast_path_may_clear if {
	entries := index.fast with data.inventory as fast_inventory
		with data.classification.category_floors as {"pii": "confidential", "tickets": "internal"}
	entries == {"spiffe://acme.example/a": {"jira": {"tool.call": {"acme": {"acme.example": {"tool": {
		"patterns": ["jira.*"],
		"hosts": ["jira.acme"],
		"schemes": ["https"],
		"ports": [443],
		"verified": [true, false],
		"unbound": false,
		"purposes": {"triage": true},
		"raising_tools": {"jira.salaries": true},
		"raising_categories": {"pii": true},
	}}}}}}}
}

# An agent that requires a verified principal accepts only true; one without a purposes
# member is unbound; one whose purposes are not a list of strings is bound to none.
test_fast_entries_carry_the_agents_delegation_and_purpose_terms[note] if {
	some note, tc in {
		"verified required": {
			"patch": {"requires_verified_delegation": true},
			"want": {"verified": [true], "unbound": false, "purposes": {"triage": true}},
		},
		"verified required as a string": {
			"patch": {"requires_verified_delegation": "true"},
			"want": {"verified": [true, false], "unbound": false, "purposes": {"triage": true}},
		},
		"no purposes member": {
			"remove": {"purposes"},
			"want": {"verified": [true, false], "unbound": true, "purposes": {}},
		},
		"purposes false": {
			"patch": {"purposes": false},
			"want": {"verified": [true, false], "unbound": false, "purposes": {}},
		},
		"purposes null": {
			"patch": {"purposes": null},
			"want": {"verified": [true, false], "unbound": false, "purposes": {}},
		},
	}
	agent := fast_inventory.agents["spiffe://acme.example/a"]
	changed := object.remove(object.union(agent, object.get(tc, "patch", {})), object.get(tc, "remove", set()))
	inventory := object.union(object.remove(fast_inventory, {"agents"}), {"agents": {"spiffe://acme.example/a": changed}})
	entries := index.fast with data.inventory as inventory
	entry := entries["spiffe://acme.example/a"].jira["tool.call"].acme["acme.example"].tool
	object.filter(entry, {"verified", "unbound", "purposes"}) == tc.want
}
