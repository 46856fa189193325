package pdp.rules.models_test

import data.pdp.lib_test as fixtures
import data.pdp.rules.models

invoke(model, sensitivity, rank) := {
	"action": {"type": "model.invoke", "name": model, "operation": "execute"},
	"destination": {"type": "model", "name": "internal-llm", "host": null},
	"data": {"sensitivity": sensitivity, "sensitivity_rank": rank},
}

deny_cases := {
	"an action that invokes no model is not checked": {"patch": {"action": {"name": "mystery-llm"}}, "want": set()},
	"a registered model with data within its clearance is not denied": {
		"patch": invoke("internal-llm", "restricted", 3),
		"want": set(),
	},
	"data exactly at the model's clearance is not denied": {
		"patch": invoke("public-llm", "internal", 1),
		"want": set(),
	},
	"a model missing from the registry is model_not_allowed": {
		"patch": invoke("mystery-llm", "public", 0),
		"want": {"model_not_allowed"},
	},
	"without an action name the destination names the model": {
		"patch": object.union(invoke(null, "public", 0), {"destination": {"name": "mystery-llm"}}),
		"want": {"model_not_allowed"},
	},
	"data above the model's clearance is model_sensitivity_exceeded": {
		"patch": invoke("public-llm", "confidential", 2),
		"want": {"model_sensitivity_exceeded"},
	},
	"a model whose clearance is not a known label is model_sensitivity_exceeded": {
		"patch": invoke("odd-llm", "public", 0),
		"inventory": {"models": {"odd-llm": {"max_sensitivity": "top-secret"}}},
		"want": {"model_sensitivity_exceeded"},
	},
	"a model without a clearance is cleared for nothing": {
		"patch": invoke("bare-llm", "public", 0),
		"inventory": {"models": {"bare-llm": {}}},
		"want": {"model_sensitivity_exceeded"},
	},
}

test_deny[note] if {
	some note, tc in deny_cases
	reasons := models.deny with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory_for(tc)
	fixtures.codes(reasons) == tc.want
}

test_sensitivity_reason_adds_the_rule_control if {
	reasons := models.deny with input as fixtures.request(invoke("public-llm", "restricted", 3))
		with data.inventory as fixtures.inventory
	reasons == {{
		"code": "model_sensitivity_exceeded",
		"message": `model "public-llm" is cleared for internal data at most, not restricted`,
		"rule": "pdp.rules.models",
		"controls": [
			"OWASP-ASI04", "MAESTRO", "NIST-AI-RMF:GOVERN-6.1",
			"NIST-AI-RMF:MANAGE-3.1", "NIST-AI-RMF:MEASURE-2.10",
		],
	}}
}
