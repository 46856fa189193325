# METADATA
# title: Model registry
# description: |
#   Model invocations go only to models registered in data.inventory.models, and only with
#   data no more sensitive than the model is cleared for (max_sensitivity; the data's
#   sensitivity is pdp.facts.sensitivity). The model is the action's name, else the
#   destination's name.
# custom:
#   controls:
#     - OWASP-ASI04
#     - MAESTRO
#     - NIST-AI-RMF:GOVERN-6.1
#     - NIST-AI-RMF:MANAGE-3.1
package pdp.rules.models

import data.pdp.facts
import data.pdp.lib

# METADATA
# title: Model not registered
# description: A model.invoke names a model that is not in data.inventory.models.
# custom:
#   code: model_not_allowed
deny contains lib.reason(rego.metadata.chain(), message) if {
	input.action.type == "model.invoke"
	not data.inventory.models[model]
	message := sprintf("model %q is not registered", [model])
}

# METADATA
# title: Data too sensitive for the model
# description: The data's sensitivity rank is above the model's max_sensitivity.
# custom:
#   code: model_sensitivity_exceeded
#   controls:
#     - NIST-AI-RMF:MEASURE-2.10
deny contains lib.reason(rego.metadata.chain(), message) if {
	input.action.type == "model.invoke"
	registered := data.inventory.models[model]
	facts.sensitivity_rank > max_rank(object.get(registered, "max_sensitivity", "unset"))
	limit := object.get(registered, "max_sensitivity", "unset")
	message := sprintf("model %q is cleared for %s data at most, not %s", [model, limit, facts.sensitivity])
}

# METADATA
# description: |
#   The rank of a model's max_sensitivity label; -1 (cleared for nothing) when it is missing
#   ("unset") or not a known label, so a registry typo denies rather than allows.
max_rank(label) := object.get(lib.sensitivity_ranks, label, -1)

# The model a model.invoke calls: the action's name, else the destination's.
model := input.action.name if is_string(input.action.name)

else := input.destination.name
