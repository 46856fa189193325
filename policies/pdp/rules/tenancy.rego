# METADATA
# title: Tenant isolation
# description: |
#   Keeps every call inside one tenant. The agent's registered tenant, the tenant it claims
#   to act for (agent.on_behalf_of.tenant) and the destination's owner must all be the
#   request's tenant (a destination owned by "*" is shared by all tenants), and the agent's
#   SPIFFE trust domain must be one the tenant trusts.
# custom:
#   controls:
#     - OWASP-ASI03
#     - OWASP-ASI07
#     - MAESTRO
#     - NIST-AI-RMF:MEASURE-2.7
package pdp.rules.tenancy

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
# title: Destination not registered
# description: input.destination.name has no entry in data.inventory.destinations.
# custom:
#   code: destination_unknown
deny contains lib.reason(rego.metadata.chain(), message) if {
	not data.inventory.destinations[input.destination.name]
	message := sprintf("destination %q is not registered in the inventory", [input.destination.name])
}

# METADATA
# title: Destination of another tenant
# description: The destination is owned by another tenant and not shared (tenant "*").
# custom:
#   code: destination_tenant_mismatch
deny contains lib.reason(rego.metadata.chain(), message) if {
	destination := data.inventory.destinations[input.destination.name]
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
