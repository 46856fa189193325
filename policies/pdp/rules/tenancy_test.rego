package pdp.rules.tenancy_test

import data.pdp.lib_test as fixtures
import data.pdp.rules.tenancy

deny_cases := {
	"an agent of the tenant on its own destination is not denied": {"want": set()},
	"an agent registered to another tenant is tenant_mismatch": {
		"inventory": {"agents": {fixtures.support_bot: {"tenant": "globex"}}},
		"want": {"tenant_mismatch"},
	},
	"an agent registered without a tenant is tenant_mismatch": {
		"inventory_remove": [["agents", fixtures.support_bot, "tenant"]],
		"want": {"tenant_mismatch"},
	},
	"an unregistered agent is left to inventory": {
		"patch": {"identity": fixtures.identity("spiffe://acme.example/agents/shadow-bot")},
		"want": set(),
	},
	"acting for a principal of another tenant is delegation_tenant_mismatch": {
		"patch": {"agent": {"on_behalf_of": {"tenant": "globex"}}},
		"want": {"delegation_tenant_mismatch"},
	},
	"a delegation that names no tenant is not checked": {
		"remove": ["agent/on_behalf_of/tenant"],
		"want": set(),
	},
	"a destination missing from the inventory is destination_unknown": {
		"patch": {"destination": {"name": "confluence", "host": null}},
		"want": {"destination_unknown"},
	},
	"another tenant's destination is destination_tenant_mismatch": {
		"patch": {"destination": {"name": "globex-wiki", "host": null}},
		"want": {"destination_tenant_mismatch"},
	},
	"a shared destination serves every tenant": {
		"patch": {"destination": {"name": "github", "host": "api.github.com"}},
		"want": set(),
	},
	"a trust domain the tenant does not list is trust_domain_mismatch": {
		"inventory": {"tenants": {"acme": {"trust_domains": ["partner.example"]}}},
		"want": {"trust_domain_mismatch"},
	},
	"a tenant without trust domains trusts no agent": {
		"inventory_remove": [["tenants", "acme", "trust_domains"]],
		"want": {"trust_domain_mismatch"},
	},
	"a tenant missing from the inventory trusts no agent": {
		"inventory_remove": [["tenants", "acme"]],
		"want": {"trust_domain_mismatch"},
	},
	"an agent of another tenant and trust domain fails both checks": {
		"patch": {"identity": fixtures.identity(fixtures.research_bot)},
		"want": {"tenant_mismatch", "trust_domain_mismatch"},
	},
	"an unauthenticated request is only checked on what it names": {
		"patch": {"identity": fixtures.failed_identity(null), "destination": {"name": "globex-wiki", "host": null}},
		"want": {"destination_tenant_mismatch"},
	},
}

test_deny[note] if {
	some note, tc in deny_cases
	reasons := tenancy.deny with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory_for(tc)
	fixtures.codes(reasons) == tc.want
}

test_tenant_mismatch_reason_names_both_tenants if {
	reasons := tenancy.deny with input as fixtures.request({"tenant": "acme"})
		with data.inventory as fixtures.inventory_for({"inventory": {"agents": {fixtures.support_bot: {"tenant": "beta"}}}})
	reasons == {{
		"code": "tenant_mismatch",
		"message": "agent tenant \"beta\" may not act in tenant \"acme\"",
		"rule": "pdp.rules.tenancy",
		"controls": ["OWASP-ASI03", "OWASP-ASI07", "MAESTRO", "NIST-AI-RMF:MEASURE-2.7"],
	}}
}
