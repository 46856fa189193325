# METADATA
# title: Delegation chains
# description: |
#   Judges the delegation chain of a call (input.chain, from the verified delegation
#   assertion; pdp/delegation.py): an assertion that does not verify, a chain whose current
#   (outermost) actor is not the calling agent, a chain deeper than data.delegation.max_depth
#   and a chain that crosses tenants (an actor, the issuer or the user of another tenant)
#   are denied. A call without an assertion has no chain and is judged on its own.
# custom:
#   controls:
#     - OWASP-ASI03
#     - OWASP-ASI07
#     - MAESTRO
#     - NIST-AI-RMF:GOVERN-1.2
package pdp.rules.delegation

import data.pdp.lib

# METADATA
# title: Delegation assertion invalid
# description: The request carries a delegation assertion that does not verify.
# custom:
#   code: delegation_invalid
deny contains lib.reason(rego.metadata.chain(), message) if {
	input.chain.present == true
	input.chain.verified != true
	error := input.chain.error
	message := sprintf("the delegation assertion was refused: %s (%s)", [error.code, error.message])
}

# METADATA
# title: Delegation not to this agent
# description: The chain's current (outermost) actor is not the verified calling agent.
# custom:
#   code: delegation_actor_mismatch
deny contains lib.reason(rego.metadata.chain(), message) if {
	input.chain.verified == true
	actor := input.chain.actors[0].sub
	actor != input.identity.spiffe_id
	message := sprintf(
		"the delegation names %q as the current actor, not the caller %v",
		[actor, input.identity.spiffe_id],
	)
}

# METADATA
# title: Delegation chain too deep
# description: More actors in the chain than data.delegation.max_depth allows.
# custom:
#   code: delegation_too_deep
deny contains lib.reason(rego.metadata.chain(), message) if {
	input.chain.verified == true
	input.chain.depth > max_depth
	message := sprintf("the delegation chain has %d actors; at most %d are allowed", [input.chain.depth, max_depth])
}

# METADATA
# title: Delegation chain crosses tenants
# description: |
#   An actor of the chain is registered to another tenant (or not registered), or its trust
#   domain, the issuer's or the user's tenant is not the request's tenant.
# custom:
#   code: delegation_cross_tenant
deny contains lib.reason(rego.metadata.chain(), message) if {
	input.chain.verified == true
	some party in foreign
	message := sprintf("the delegation chain leaves tenant %q: %s", [input.tenant, party])
}

# METADATA
# scope: document
# description: The deepest chain allowed; 1 (the agent alone) when data.delegation sets none.
default max_depth := 1

max_depth := data.delegation.max_depth

# METADATA
# scope: document
# description: What in the chain belongs elsewhere, each as a sentence for the reason.
foreign contains sprintf("actor %q belongs to tenant %q", [actor.sub, owner]) if {
	some actor in input.chain.actors
	owner := object.get(data.inventory.agents, [actor.sub, "tenant"], "none")
	owner != input.tenant
}

foreign contains message if {
	some actor in input.chain.actors
	not actor.trust_domain in trust_domains
	message := sprintf("actor %q is in trust domain %v, not trusted by the tenant", [actor.sub, actor.trust_domain])
}

foreign contains sprintf("issuer %q is not a trust domain of the tenant", [input.chain.issuer]) if {
	not trim_prefix(input.chain.issuer, "spiffe://") in trust_domains
}

foreign contains sprintf("the user is of tenant %q", [tenant]) if {
	tenant := input.chain.subject_tenant
	is_string(tenant)
	tenant != input.tenant
}

default trust_domains := []

trust_domains := data.inventory.tenants[input.tenant].trust_domains
