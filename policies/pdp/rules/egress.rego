# METADATA
# title: Data egress
# description: |
#   Weighs the sensitivity of the data (pdp.facts.sensitivity: the request's label raised by
#   the floors of its data categories and the declared data class of the destination and
#   tool) against how far the destination is trusted. Every
#   registered destination has a trust level: "internal", "partner" or "external" (a
#   destination of type "external", or one without a trust level, counts as external).
#   Confidential and restricted data stay on internal destinations unless the destination
#   lists that sensitivity in allowed_sensitivities; restricted data goes only to the
#   destinations in data.inventory.restricted_destinations. A destination that registers
#   hosts is called only through a URL on one of them, so a tool name cannot be pointed at
#   an attacker's server and a request cannot drop the URL to skip the check.
# custom:
#   controls:
#     - OWASP-ASI01
#     - OWASP-ASI02
#     - MAESTRO
#     - NIST-AI-RMF:MEASURE-2.10
package pdp.rules.egress

import data.pdp.facts
import data.pdp.lib

# METADATA
# title: Sensitive data to an untrusted destination
# description: |
#   Confidential or restricted data to a partner or external destination that does not list
#   the sensitivity in allowed_sensitivities.
# custom:
#   code: egress_sensitivity_blocked
deny contains lib.reason(rego.metadata.chain(), message) if {
	facts.sensitivity_rank >= lib.sensitivity_ranks.confidential
	trust_level != "internal"
	not facts.sensitivity in object.get(destination, "allowed_sensitivities", [])
	message := sprintf(
		"%s data%s may not be sent to %s destination %q",
		[facts.sensitivity, because, trust_level, input.destination.name],
	)
}

# METADATA
# title: Restricted data to a destination not cleared for it
# description: Restricted data to a destination not named in data.inventory.restricted_destinations.
# custom:
#   code: restricted_destination_not_allowed
deny contains lib.reason(rego.metadata.chain(), message) if {
	facts.sensitivity_rank >= lib.sensitivity_ranks.restricted
	not input.destination.name in cleared_for_restricted
	message := sprintf("destination %q is not cleared for restricted data", [input.destination.name])
}

# METADATA
# title: URL host not registered for the destination
# description: |
#   The destination registers hosts and the request's URL is on none of them, or the request
#   has no URL (so nothing says where the call goes).
# custom:
#   code: destination_host_mismatch
deny contains lib.reason(rego.metadata.chain(), message) if {
	hosts := destination.hosts
	host := object.get(input.destination, "host", null)
	not host in hosts
	message := host_message(host, input.destination.name)
}

# METADATA
# description: Why the host does not match (no URL at all, or a host the destination does not register).
host_message(host, name) := sprintf("host %q is not a registered host of destination %q", [host, name]) if {
	is_string(host)
} else := sprintf("destination %q registers hosts: the request must name its URL", [name])

# METADATA
# scope: document
# description: |
#   Why the data is as sensitive as it is, when its categories raised it above the request's
#   label (" (categories pii, phi)"); else nothing.
default because := ""

because := sprintf(" (categories %s)", [concat(", ", facts.raised_by)]) if count(facts.raised_by) > 0

# Destinations cleared for restricted data; none when the inventory lists none.
default cleared_for_restricted := []

cleared_for_restricted := data.inventory.restricted_destinations

# The registered destination; undefined for an unknown one (pdp.rules.tenancy denies those).
destination := data.inventory.destinations[input.destination.name]

# METADATA
# scope: document
# description: |
#   How far the destination is trusted: external when the request or the inventory says its
#   type is external, else the inventory's trust level, else external. Undefined for an
#   unknown destination (pdp.rules.tenancy denies those).
trust_level := "external" if {
	destination
	input.destination.type == "external"
} else := "external" if {
	destination.type == "external"
} else := object.get(destination, "trust", "external")
