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
	"a delegation that names no tenant is delegation_tenant_missing": {
		"remove": ["agent/on_behalf_of/tenant"],
		"want": {"delegation_tenant_missing"},
	},
	"a delegation that names only a tenant is delegation_subject_invalid": {
		"remove": ["agent/on_behalf_of/subject"],
		"want": {"delegation_subject_invalid"},
	},
	"a delegation of only a verified flag is delegation_subject_invalid and delegation_tenant_missing": {
		"remove": ["agent/on_behalf_of/subject", "agent/on_behalf_of/tenant"],
		"patch": {"agent": {"on_behalf_of": {"verified": true}}},
		"want": {"delegation_subject_invalid", "delegation_tenant_missing"},
	},
	"no delegation at all is not checked": {
		"remove": ["agent/on_behalf_of/subject", "agent/on_behalf_of/tenant"],
		"want": set(),
	},
	"a service may be the delegated subject": {
		"patch": {"agent": {"on_behalf_of": {"subject": "service:billing-batch"}}},
		"want": set(),
	},
	"a user id may be the delegated subject": {
		"patch": {"agent": {"on_behalf_of": {"subject": "user:u-12345"}}},
		"want": set(),
	},
	"a subject without a documented prefix is delegation_subject_invalid": {
		"patch": {"agent": {"on_behalf_of": {"subject": "alice@acme.example"}}},
		"want": {"delegation_subject_invalid"},
	},
	"a subject with a colon in its name is delegation_subject_invalid": {
		"patch": {"agent": {"on_behalf_of": {"subject": "user:alice:admin"}}},
		"want": {"delegation_subject_invalid"},
	},
	"a subject with a zero-width character is delegation_subject_invalid": {
		"patch": {"agent": {"on_behalf_of": {"subject": "user:al\u200bice@acme.example"}}},
		"want": {"delegation_subject_invalid"},
	},
	"a subject longer than 256 characters is delegation_subject_invalid": {
		"patch": {"agent": {"on_behalf_of": {"subject": sprintf("user:%0260d", [0])}}},
		"want": {"delegation_subject_invalid"},
	},
	"an agent that requires verified delegation is denied an unverified one": {
		"inventory": {"agents": {fixtures.support_bot: {"requires_verified_delegation": true}}},
		"want": {"delegation_unverified"},
	},
	"an agent that requires verified delegation accepts a verified one": {
		"inventory": {"agents": {fixtures.support_bot: {"requires_verified_delegation": true}}},
		"patch": {"agent": {"on_behalf_of": {"verified": true}}},
		"want": set(),
	},
	"an agent that requires verified delegation is denied when it names none": {
		"inventory": {"agents": {fixtures.support_bot: {"requires_verified_delegation": true}}},
		"remove": ["agent/on_behalf_of/subject", "agent/on_behalf_of/tenant"],
		"want": {"delegation_unverified"},
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
