# METADATA
# title: Request facts after secure defaults
# description: |
#   What the rule modules use instead of the request's own claims wherever a claim could
#   widen access by being left out or bent (docs/policy-authoring.md, "Secure defaults").
#   Omission never widens access: a fact is taken from the inventory where it has one,
#   and a fact nobody states is assumed at its most restrictive value.
# custom:
#   controls:
#     - OWASP-ASI03
#     - MAESTRO
#     - NIST-AI-RMF:MAP-3.5
package pdp.facts

import data.pdp.lib

# The registered destination; undefined for an unknown one.
destination := data.inventory.destinations[input.destination.name]

# METADATA
# scope: document
# title: Environment
# description: |
#   The destination's environment: the inventory's, raised to the request's when the
#   request names a stricter one; prod when the inventory does not pin it (whatever the
#   request says). A request can make a call stricter, never laxer.
default environment := "prod"

environment := lib.environment_labels[rank] if {
	pinned := destination.environment
	claimed := {lib.environment_rank(env) | env := input.destination.environment; env != null}
	rank := max({lib.environment_rank(pinned)} | claimed)
}

# METADATA
# scope: document
# description: The destination is prod (see environment).
default prod := false

prod if environment == "prod"

# METADATA
# scope: document
# title: Sensitivity rank
# description: |
#   The data's effective sensitivity: the highest of the request's label (the PDP labels
#   unlabelled data restricted), the floor of each data category
#   (data.classification.category_floors: pii, phi, credentials, financial are at least
#   confidential), the destination's declared data_class and the tool's
#   (data.inventory.tools[action name].data_class). An unknown label ranks as restricted.
default sensitivity_rank := 3

sensitivity_rank := max(ranks) if {
	labelled := {lib.sensitivity_rank(object.get(input, ["data", "sensitivity"], null))}
	stated := {input.data.sensitivity_rank | input.data.sensitivity_rank in {0, 1, 2, 3}}
	ranks := (((labelled | stated) | category_floors) | destination_class) | tool_class
}

# The floors of the request's data categories; a category without a floor adds none.
category_floors contains lib.sensitivity_rank(minimum) if {
	some category in input.data.categories
	minimum := data.classification.category_floors[category]
}

# The destination's declared data class, if it declares one.
destination_class contains lib.sensitivity_rank(destination.data_class)

# The tool's declared data class, if the action names a registered tool that declares one.
tool_class contains lib.sensitivity_rank(data.inventory.tools[input.action.name].data_class)

# METADATA
# scope: document
# description: The label of sensitivity_rank.
sensitivity := lib.sensitivity_labels[sensitivity_rank]

# METADATA
# scope: document
# description: The categories that raised the sensitivity above the request's label, sorted.
raised_by := sort([category |
	some category in input.data.categories
	minimum := data.classification.category_floors[category]
	lib.sensitivity_rank(minimum) > lib.sensitivity_rank(object.get(input, ["data", "sensitivity"], null))
])

# METADATA
# scope: document
# title: State-changing
# description: |
#   The action changes state at the target: every operation but an explicit "read"
#   (write, delete, execute, and a missing or unknown one), and every data.write and
#   data.export whatever its operation.
default state_changing := false

state_changing if not input.action.operation == "read"

state_changing if input.action.type in {"data.write", "data.export"}
