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
