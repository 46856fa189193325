# METADATA
# title: Workload authentication
# description: |
#   Denies every request whose agent did not present a valid JWT-SVID. The PDP verifies the
#   token before OPA runs and reports the outcome in input.identity; this module turns a failed
#   verification into a deny reason that carries the verifier's own authn.* code and message.
# custom:
#   controls:
#     - OWASP-ASI03
#     - OWASP-ASI07
#     - MAESTRO
#     - NIST-AI-RMF:MEASURE-2.7
package pdp.rules.authn

import data.pdp.lib

# METADATA
# title: Agent not authenticated
# description: |
#   The agent's token was missing or failed verification. The code is the verifier's
#   (authn.token_missing, authn.expired, authn.invalid_signature, ...); authn.unauthenticated
#   when the verifier gave none.
# custom:
#   code: authn.unauthenticated
deny contains object.union(fallback, verifier_error(identity)) if {
	not lib.authenticated(identity)
	fallback := lib.reason(rego.metadata.chain(), "the agent is not authenticated")
}

# METADATA
# scope: document
# description: |
#   The input's identity; empty for an input without one (which the input schema rules out),
#   so that such an input is still denied here, with the fallback reason.
default identity := {}

identity := input.identity

# METADATA
# description: The verifier's code and message, when it gave an authn.* code; else nothing to override.
verifier_error(id) := {"code": id.error.code, "message": id.error.message} if {
	startswith(id.error.code, "authn.")
	is_string(id.error.message)
} else := {}
