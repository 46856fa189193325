# METADATA
# title: Policy library
# description: |
#   Helpers shared by the rule modules under pdp.rules: decision reasons built from
#   annotations, the verified identity, and sensitivity ranks. Functions only take
#   arguments; nothing here reads input or data directly.
# custom:
#   controls: []
package pdp.lib

# METADATA
# title: Reason from METADATA
# description: |
#   The reason object for the rule that calls it, built from that rule's annotation chain
#   (pass rego.metadata.chain()). The code is the rule's custom.code; the rule name is the
#   annotated package path (e.g. pdp.rules.tenancy); the controls are the package's
#   custom.controls followed by any extra ones the rule itself lists. Always defined, so a
#   deny rule can never lose its reason to a missing annotation.
reason(chain, message) := {
	"code": code(chain),
	"message": message,
	"rule": module_name(chain),
	"controls": controls(chain),
}

# METADATA
# description: The nearest custom.code in the chain; "unspecified" when no annotation has one.
code(chain) := codes[0] if {
	codes := [entry.annotations.custom.code | some entry in chain]
} else := "unspecified"

# METADATA
# description: Dotted path of the annotated package; else the rule's own package path.
module_name(chain) := concat(".", entry.path) if {
	some entry in chain
	entry.annotations.scope == "package"
} else := concat(".", array.slice(chain[0].path, 0, count(chain[0].path) - 1))

# METADATA
# description: custom.controls from the package outwards in, without repeats, in authored order.
controls(chain) := [c |
	some i, c in listed
	not c in array.slice(listed, 0, i)
] if {
	listed := [c |
		some entry in array.reverse(chain)
		some c in entry.annotations.custom.controls
	]
}
