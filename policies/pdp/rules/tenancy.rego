# METADATA
# title: Tenant isolation
# description: |
#   Keeps every call inside one tenant. The agent's registered tenant, the tenant it claims
#   to act for (agent.on_behalf_of.tenant) and the destination's owner must all be the
#   request's tenant (a destination owned by "*" is shared by all tenants), and the agent's
#   SPIFFE trust domain must be one the tenant trusts. A delegation (agent.on_behalf_of)
#   must name both the principal's tenant and a subject of a documented form; an agent
#   registered with requires_verified_delegation acts only for a principal whose identity
#   the PDP verified (agent.on_behalf_of.verified, from a user assertion).
# custom:
#   controls:
#     - OWASP-ASI03
#     - OWASP-ASI07
#     - MAESTRO
#     - NIST-AI-RMF:MEASURE-2.7
package pdp.rules.tenancy

import data.pdp.facts
import data.pdp.lib
import data.pdp.rules.inventory

# METADATA
# title: Agent from another tenant
# description: The agent is registered to a tenant other than the request's tenant.
# custom:
#   code: tenant_mismatch
deny contains lib.reason(rego.metadata.chain(), message) if {
	owner := object.get(inventory.agent, "tenant", "none")
	owner != input.tenant
	message := sprintf("agent tenant %q may not act in tenant %q", [owner, input.tenant])
}

# METADATA
# title: Delegation from another tenant
# description: The principal the agent acts for (agent.on_behalf_of.tenant) belongs to another tenant.
# custom:
#   code: delegation_tenant_mismatch
deny contains lib.reason(rego.metadata.chain(), message) if {
	delegated := input.agent.on_behalf_of.tenant
	delegated != input.tenant
	message := sprintf("agent acts on behalf of tenant %q but the request is in tenant %q", [delegated, input.tenant])
}

# METADATA
# title: Delegation without a tenant
# description: |
#   agent.on_behalf_of names a principal but not its tenant, so the delegation could not be
#   checked against the request's tenant.
# custom:
#   code: delegation_tenant_missing
deny contains lib.reason(rego.metadata.chain(), message) if {
	delegation
	not is_string(object.get(input.agent.on_behalf_of, "tenant", null))
	message := "the agent acts on behalf of a principal but does not name the principal's tenant"
}

# METADATA
# title: Delegated subject not of a documented form
# description: |
#   agent.on_behalf_of.subject is missing or not "user:<address or id>" or
#   "service:<name>" (lib.valid_subject), so it is never signed into a credential.
# custom:
#   code: delegation_subject_invalid
deny contains lib.reason(rego.metadata.chain(), message) if {
	delegation
	subject := object.get(input.agent.on_behalf_of, "subject", null)
	not lib.valid_subject(subject)
	message := sprintf("delegated subject %v is not of the form user:<address or id> or service:<name>", [subject])
}

# METADATA
# title: Unverified delegation
# description: |
#   The agent is registered with requires_verified_delegation and the request does not carry
#   a principal the PDP verified from a user assertion (agent.on_behalf_of.verified).
# custom:
#   code: delegation_unverified
deny contains lib.reason(rego.metadata.chain(), message) if {
	inventory.agent.requires_verified_delegation == true
	not input.agent.on_behalf_of.verified == true
	message := sprintf("agent %q acts only for a verified user", [input.identity.spiffe_id])
}

# METADATA
# title: Destination not registered
# description: input.destination.name has no entry in data.inventory.destinations.
# custom:
#   code: destination_unknown
deny contains lib.reason(rego.metadata.chain(), message) if {
	not facts.destination
	message := sprintf("destination %q is not registered in the inventory", [input.destination.name])
}

# METADATA
# title: Destination of another tenant
# description: The destination is owned by another tenant and not shared (tenant "*").
# custom:
#   code: destination_tenant_mismatch
deny contains lib.reason(rego.metadata.chain(), message) if {
	destination := facts.destination
	tenant := input.tenant

	# Neither the request's tenant nor shared. Two negations rather than a helper function:
	# a call would copy the whole inventory entry into its arguments.
	not destination.tenant == tenant
	not destination.tenant == "*"
	owner := object.get(destination, "tenant", "none")
	message := sprintf("destination %q belongs to tenant %q, not %q", [input.destination.name, owner, tenant])
}

# METADATA
# title: Untrusted trust domain
# description: The agent's SPIFFE trust domain is not among data.inventory.tenants[tenant].trust_domains.
# custom:
#   code: trust_domain_mismatch
deny contains lib.reason(rego.metadata.chain(), message) if {
	lib.authenticated(input.identity)
	domain := input.identity.trust_domain
	not domain in trust_domains
	message := sprintf("trust domain %q is not trusted by tenant %q", [domain, input.tenant])
}

# The trust domains of the request's tenant; none for an unknown tenant.
default trust_domains := []

trust_domains := data.inventory.tenants[input.tenant].trust_domains

# METADATA
# scope: document
# description: |
#   The request says the agent acts on behalf of someone: agent.on_behalf_of has any field
#   (subject, tenant, or even only the PDP's verified flag). Only an empty object is no
#   delegation.
delegation if count(input.agent.on_behalf_of) > 0
