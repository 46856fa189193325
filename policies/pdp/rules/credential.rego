# METADATA
# title: Credential lifetime
# description: |
#   Sets obligations.credential.ttl_seconds, the lifetime of the credential the PDP mints on
#   allow: the riskier the action or the more sensitive the data, the shorter it lives. 30s
#   for high-risk actions, 60s for confidential or restricted data (pdp.facts.sensitivity),
#   else 120s. Never denies.
# custom:
#   controls:
#     - OWASP-ASI03
#     - MAESTRO
#     - NIST-AI-RMF:MANAGE-2.2
package pdp.rules.credential

import data.pdp.facts
import data.pdp.lib
import data.pdp.rules.risk

# METADATA
# scope: document
# title: Credential TTL
# description: Seconds the minted credential lives.
default ttl_seconds := 120

ttl_seconds := 30 if risk.high_risk

ttl_seconds := 60 if {
	facts.sensitivity_rank >= lib.sensitivity_ranks.confidential
	not risk.high_risk
}
