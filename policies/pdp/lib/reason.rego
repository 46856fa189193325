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
#   Every deny reason (and entitlements' grant) is built per decision, so the usual chain, the
#   rule's own annotation with its code followed by its package's, takes a few lookups; any
#   other chain takes the general path, which gives the same answer for the usual one.
reason(chain, message) := {
	"code": code,
	"message": message,
	"rule": concat(".", pkg.path),
	"controls": unique(array.concat(
		object.get(pkg.annotations, ["custom", "controls"], []),
		object.get(own, ["annotations", "custom", "controls"], []),
	)),
} if {
	[own, pkg] := chain
	pkg.annotations.scope == "package"
	code := own.annotations.custom.code
} else := {
	"code": array.concat(codes, ["unspecified"])[0],
	"message": message,
	"rule": concat(".", array.concat(package_paths, [array.slice(chain[0].path, 0, count(chain[0].path) - 1)])[0]),
	"controls": unique(listed),
} if {
	# The nearest custom.code first.
	codes := [entry.annotations.custom.code | some entry in chain]

	# The annotated package's path; else (appended) the rule's own package path.
	package_paths := [entry.path | some entry in chain; entry.annotations.scope == "package"]

	# custom.controls from the package outwards in, in authored order.
	listed := [c |
		some entry in array.reverse(chain)
		some c in entry.annotations.custom.controls
	]
}

# METADATA
# description: The array without repeats, each kept where it first occurs.
unique(values) := values if count({v | some v in values}) == count(values)

else := [v |
	some i, v in values
	not v in array.slice(values, 0, i)
]
