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
#   Its scheme and port must be registered too (https and 443 unless the destination
#   registers others). The PDP hands policy one canonical reading of the URL (pdp/urls.py):
#   lower-case host without a trailing dot, IDNA A-labels, an explicit port.
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
# title: URL scheme not registered for the destination
# description: |
#   The URL's scheme is not among the destination's registered schemes (the inventory's
#   "schemes"; "https" only when it lists none): plain http, or any other scheme, goes only
#   where the destination registers it.
# custom:
#   code: destination_scheme_not_allowed
deny contains lib.reason(rego.metadata.chain(), message) if {
	scheme := input.destination.scheme
	is_string(scheme)
	not scheme in object.get(destination, "schemes", ["https"])
	message := sprintf("scheme %q is not registered for destination %q", [scheme, input.destination.name])
}

# METADATA
# title: URL port not registered for the destination
# description: |
#   The URL's port (explicit, or the scheme's default) is not among the destination's
#   registered ports (the inventory's "ports"; 443 only when it lists none). A URL with no
#   port and a scheme without a default port names no port, and is denied too.
# custom:
#   code: destination_port_not_registered
deny contains lib.reason(rego.metadata.chain(), message) if {
	is_string(input.destination.host)
	port := input.destination.port
	not port in object.get(destination, "ports", [443])
	message := sprintf("port %v is not registered for destination %q", [port, input.destination.name])
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
destination := facts.destination

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
