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

# One rule, no helper rules or function calls: every decision the fast path does not clear
# reads it (egress, models, credential and cache TTLs), and each rule or call costs OPA more
# than the lookups themselves.
sensitivity_rank := max(ranks) if {
	ranked := lib.sensitivity_ranks

	# The request's label (unknown or missing: restricted) and the PDP's stated rank.
	labelled := {object.get(ranked, object.get(input, ["data", "sensitivity"], null), 3)}
	stated := {input.data.sensitivity_rank | input.data.sensitivity_rank in {0, 1, 2, 3}}

	# The floors of the request's data categories; a category without a floor adds none.
	floors := {object.get(ranked, minimum, 3) |
		some category in input.data.categories
		minimum := data.classification.category_floors[category]
	}

	# The declared data class of the destination and of the tool, where they declare one.
	destination_class := {object.get(ranked, class, 3) |
		class := data.inventory.destinations[input.destination.name].data_class
	}
	tool_class := {object.get(ranked, class, 3) |
		class := data.inventory.tools[input.action.name].data_class
	}
	ranks := (((labelled | stated) | floors) | destination_class) | tool_class
}

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
