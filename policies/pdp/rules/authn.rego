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
deny contains object.union(fallback, verifier_error(input)) if {
	not authenticated(input)
	fallback := lib.reason(rego.metadata.chain(), "the agent is not authenticated")
}

# METADATA
# description: |
#   The input's identity is verified. Takes the whole input: an input without an identity
#   (which the input schema rules out) is then simply not authenticated.
authenticated(doc) if lib.authenticated(doc.identity)

# METADATA
# description: |
#   The verifier's code and message (doc.identity.error), when it gave an authn.* code; else
#   nothing to override. Takes the whole input so that an input without an identity (which
#   the input schema rules out) still gets the fallback reason.
verifier_error(doc) := {"code": doc.identity.error.code, "message": doc.identity.error.message} if {
	startswith(doc.identity.error.code, "authn.")
	is_string(doc.identity.error.message)
} else := {}
