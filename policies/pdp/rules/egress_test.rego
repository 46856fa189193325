package pdp.rules.egress_test

import data.pdp.lib_test as fixtures
import data.pdp.rules.egress

confidential := {"sensitivity": "confidential", "sensitivity_rank": 2}

restricted := {"sensitivity": "restricted", "sensitivity_rank": 3}

deny_cases := {
	"internal data to an internal destination is not denied": {"want": set()},
	"confidential data to an internal destination is not denied": {
		"patch": {"data": confidential},
		"want": set(),
	},
	"internal data to an external destination is not denied": {
		"patch": {"destination": {"name": "github", "host": "api.github.com"}},
		"want": set(),
	},
	"confidential data to an external destination is egress_sensitivity_blocked": {
		"patch": {"data": confidential, "destination": {"name": "github", "host": "api.github.com"}},
		"want": {"egress_sensitivity_blocked"},
	},
	"confidential data to a partner that allows it is not denied": {
		"patch": {"data": confidential, "destination": {"type": "service", "name": "partner-analytics", "host": null}},
		"want": set(),
	},
	"restricted data to a partner that allows only confidential is blocked twice over": {
		"patch": {"data": restricted, "destination": {"type": "service", "name": "partner-analytics", "host": null}},
		"want": {"egress_sensitivity_blocked", "restricted_destination_not_allowed"},
	},
	"a registered destination of type external is external whatever its trust": {
		"patch": {"data": confidential, "destination": {"type": "service", "name": "slack-webhook", "host": null}},
		"want": {"egress_sensitivity_blocked"},
	},
	"a request that calls its destination external is believed": {
		"patch": {"data": confidential, "destination": {"type": "external"}},
		"want": {"egress_sensitivity_blocked"},
	},
	"a destination without a trust level counts as external": {
		"patch": {"data": confidential, "destination": {"type": "service", "name": "legacy-api", "host": null}},
		"want": {"egress_sensitivity_blocked"},
	},
	"restricted data to a cleared internal destination is not denied": {
		"patch": {"data": restricted, "destination": {"type": "service", "name": "vault", "host": null}},
		"want": set(),
	},
	"restricted data to an uncleared destination is restricted_destination_not_allowed": {
		"patch": {"data": restricted, "destination": {"type": "database", "name": "crm-db", "host": null}},
		"want": {"restricted_destination_not_allowed"},
	},
	"restricted data to an unknown destination is restricted_destination_not_allowed": {
		"patch": {"data": restricted, "destination": {"name": "confluence", "host": null}},
		"want": {"restricted_destination_not_allowed"},
	},
	"without a list of cleared destinations restricted data goes nowhere": {
		"patch": {"data": restricted, "destination": {"type": "service", "name": "vault", "host": null}},
		"inventory_remove": ["restricted_destinations"],
		"want": {"restricted_destination_not_allowed"},
	},
	"a URL host the destination does not register is destination_host_mismatch": {
		"patch": {"destination": {"url": "https://jira.attacker.example/rest", "host": "jira.attacker.example"}},
		"want": {"destination_host_mismatch"},
	},
	"a request without a URL to a destination that registers hosts is destination_host_mismatch": {
		"patch": {"destination": {"url": null, "host": null, "scheme": null, "port": null}},
		"want": {"destination_host_mismatch"},
	},
	"a request without a URL to a destination that registers no hosts is not host-checked": {
		"patch": {"destination": {"type": "database", "name": "crm-db", "url": null, "host": null}},
		"want": set(),
	},
	"a destination that registers no hosts is not host-checked": {
		"patch": {"destination": {"type": "database", "name": "crm-db", "host": "10.0.0.7"}},
		"want": set(),
	},
	"plain http to a destination that registers no schemes is destination_scheme_not_allowed": {
		"patch": {"destination": {"url": "http://jira.internal.acme/rest", "scheme": "http", "port": 80}},
		"want": {"destination_scheme_not_allowed", "destination_port_not_registered"},
	},
	"a port the destination does not register is destination_port_not_registered": {
		"patch": {"destination": {"url": "https://jira.internal.acme:8443/rest", "port": 8443}},
		"want": {"destination_port_not_registered"},
	},
	"a URL naming no port (a scheme without a default) is destination_port_not_registered": {
		"patch": {"destination": {"url": "ftp://jira.internal.acme/x", "scheme": "ftp", "port": null}},
		"want": {"destination_scheme_not_allowed", "destination_port_not_registered"},
	},
	"a registered scheme and port are not denied": {
		"patch": {"destination": {
			"type": "database", "name": "crm-db", "url": "postgres://10.0.0.7:5432/crm",
			"host": "10.0.0.7", "scheme": "postgres", "port": 5432,
		}},
		"inventory": {"destinations": {"crm-db": {"schemes": ["postgres"], "ports": [5432]}}},
		"want": set(),
	},
	"a destination registering other schemes denies https": {
		"patch": {"destination": {"type": "database", "name": "crm-db", "host": "10.0.0.7"}},
		"inventory": {"destinations": {"crm-db": {"schemes": ["postgres"], "ports": [5432]}}},
		"want": {"destination_scheme_not_allowed", "destination_port_not_registered"},
	},
	"an unknown destination is left to tenancy": {
		"patch": {"data": confidential, "destination": {
			"name": "confluence", "host": "confluence.example", "url": "http://confluence.example:81/",
			"scheme": "http", "port": 81,
		}},
		"want": set(),
	},
}

test_deny[note] if {
	some note, tc in deny_cases
	reasons := egress.deny with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory_for(tc)
	fixtures.codes(reasons) == tc.want
}

test_blocked_reason_names_the_trust_level if {
	no_exceptions := {"inventory": {"destinations": {"partner-analytics": {"allowed_sensitivities": []}}}}
	reasons := egress.deny with input as fixtures.request({
		"data": confidential,
		"destination": {"type": "service", "name": "partner-analytics", "host": null},
	})
		with data.inventory as fixtures.inventory_for(no_exceptions)
	reasons == {{
		"code": "egress_sensitivity_blocked",
		"message": `confidential data may not be sent to partner destination "partner-analytics"`,
		"rule": "pdp.rules.egress",
		"controls": ["OWASP-ASI01", "OWASP-ASI02", "MAESTRO", "NIST-AI-RMF:MEASURE-2.10"],
	}}
}
