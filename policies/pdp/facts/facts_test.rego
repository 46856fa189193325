package pdp.facts_test

import data.pdp.facts
import data.pdp.lib_test as fixtures

pinned_staging := {"inventory": {"destinations": {"jira": {"environment": "staging"}}}}

environment_cases := {
	"a destination the inventory does not pin is prod": {"want": "prod"},
	"a request cannot make an unpinned destination dev": {
		"patch": {"destination": {"environment": "dev"}},
		"want": "prod",
	},
	"a request cannot make an unpinned destination staging": {
		"patch": {"destination": {"environment": "staging"}},
		"want": "prod",
	},
	"a pinned destination is the inventory's environment": {"tc": pinned_staging, "want": "staging"},
	"a request cannot lower a pinned environment": {
		"tc": pinned_staging,
		"patch": {"destination": {"environment": "dev"}},
		"want": "staging",
	},
	"a request can raise a pinned environment": {
		"tc": pinned_staging,
		"patch": {"destination": {"environment": "prod"}},
		"want": "prod",
	},
	"an unknown pinned environment is prod": {
		"tc": {"inventory": {"destinations": {"jira": {"environment": "qa"}}}},
		"want": "prod",
	},
	"an unregistered destination is prod": {
		"patch": {"destination": {"name": "confluence", "environment": "dev"}},
		"want": "prod",
	},
}

test_environment[note] if {
	some note, tc in environment_cases
	inventory := fixtures.inventory_for(object.get(tc, "tc", {}))
	got := facts.environment with input as fixtures.input_for(tc) with data.inventory as inventory
	got == tc.want
}

test_prod_when_the_environment_is_prod if {
	facts.prod with data.inventory as fixtures.inventory with input as fixtures.base_input
}

test_not_prod_when_the_inventory_pins_staging if {
	not facts.prod with data.inventory as fixtures.inventory_for(pinned_staging) with input as fixtures.base_input
}

sensitivity_cases := {
	"the request's label when nothing raises it": {"want": "internal"},
	"a public label stays public": {"patch": {"data": {"sensitivity": "public", "sensitivity_rank": 0}}, "want": "public"},
	"pii raises internal data to confidential": {"patch": {"data": {"categories": ["pii"]}}, "want": "confidential"},
	"phi raises public data to confidential": {
		"patch": {"data": {"sensitivity": "public", "sensitivity_rank": 0, "categories": ["phi"]}},
		"want": "confidential",
	},
	"credentials raise to confidential": {"patch": {"data": {"categories": ["credentials"]}}, "want": "confidential"},
	"financial raises to confidential": {"patch": {"data": {"categories": ["financial"]}}, "want": "confidential"},
	"a floor never lowers a restricted label": {
		"patch": {"data": {"sensitivity": "restricted", "sensitivity_rank": 3, "categories": ["pii"]}},
		"want": "restricted",
	},
	"a category without a floor changes nothing": {
		"patch": {"data": {"categories": ["customer-tickets"]}},
		"want": "internal",
	},
	"the destination's declared data class raises the label": {
		"tc": {"inventory": {"destinations": {"jira": {"data_class": "confidential"}}}},
		"want": "confidential",
	},
	"the tool's declared data class raises the label": {
		"tc": {"inventory": {"tools": {"jira.search_issues": {"data_class": "restricted"}}}},
		"want": "restricted",
	},
	"an unknown declared data class is restricted": {
		"tc": {"inventory": {"destinations": {"jira": {"data_class": "secret"}}}},
		"want": "restricted",
	},
	"an unknown label is restricted": {"patch": {"data": {"sensitivity": "top-secret"}}, "want": "restricted"},
	"a rank above the label counts": {"patch": {"data": {"sensitivity_rank": 2}}, "want": "confidential"},
	"data without a label is restricted": {"remove": ["data/sensitivity", "data/sensitivity_rank"], "want": "restricted"},
	"an input without data is restricted": {"remove": ["data"], "want": "restricted"},
}

test_sensitivity[note] if {
	some note, tc in sensitivity_cases
	inventory := fixtures.inventory_for(object.get(tc, "tc", {}))
	got := facts.sensitivity with input as fixtures.input_for(tc) with data.inventory as inventory
	got == tc.want
}

test_raised_by_names_the_categories_above_the_label if {
	patch := {"data": {"categories": ["pii", "customer-tickets", "financial"]}}
	got := facts.raised_by with input as fixtures.request(patch)
	got == ["financial", "pii"]
}

state_changing_cases := {
	"a read is not state-changing": {"want": false},
	"a write is": {"patch": {"action": {"operation": "write"}}, "want": true},
	"a delete is": {"patch": {"action": {"operation": "delete"}}, "want": true},
	"an execute is": {"patch": {"action": {"operation": "execute"}}, "want": true},
	"a missing operation is": {"patch": {"action": {"operation": null}}, "want": true},
	"an unknown operation is": {"patch": {"action": {"operation": "list"}}, "want": true},
	"a data.write read is": {"patch": {"action": {"type": "data.write"}}, "want": true},
	"a data.export read is": {"patch": {"action": {"type": "data.export"}}, "want": true},
}

test_state_changing[note] if {
	some note, tc in state_changing_cases
	got := facts.state_changing with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory
	got == tc.want
}
