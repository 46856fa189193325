# METADATA
# title: Decision cache
# description: |
#   Sets cache.ttl_seconds, how long the PDP may reuse this decision for an identical request
#   (the same OPA input apart from input.now and input.request) instead of asking OPA again.
#   Only low-risk reads are cacheable: an authenticated agent reading (operation "read") with
#   a tool call or data read, data no more than internal (as pdp.facts raises it), no prompt
#   risk signal, and nothing that makes the action high risk; 30 s. Everything else is 0, never cached. The PDP drops
#   entries when a bundle is activated, an agent is disabled or enabled, and on trust-bundle,
#   approval or session-history changes, and never caches errors, authn denies or decisions
#   with approval or session rules involved, whatever this module says. A policy that reads
#   time (input.now, input.request, time.now_ns) must not declare a TTL: `pdpctl policy check`
#   refuses it and the PDP ignores its TTLs.
# custom:
#   controls:
#     - MAESTRO
#     - NIST-AI-RMF:MANAGE-2.2
package pdp.rules.cache

import data.pdp.facts
import data.pdp.lib
import data.pdp.rules.risk

# METADATA
# scope: document
# title: Cache TTL
# description: Seconds the PDP may reuse the decision; 0 for anything but a low-risk read.
default ttl_seconds := 0

ttl_seconds := 30 if low_risk_read

# METADATA
# description: |
#   An authenticated, low-risk read of data that is internal or public once raised by its
#   categories and the inventory's data classes (pdp.facts), behind a clean prompt.
low_risk_read if {
	not facts.state_changing
	input.action.type in {"tool.call", "data.read"}
	facts.sensitivity_rank <= lib.sensitivity_ranks.internal
	count(input.prompt.risk_signals) == 0
	not risk.high_risk
	lib.authenticated(input.identity)
}
