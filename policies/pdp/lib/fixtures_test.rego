# METADATA
# title: Test fixtures
# description: |
#   Shared by every *_test.rego: a small inventory and a normalised input (as pdp.normalize
#   builds it, see pdp/schemas/opa-input.schema.json) for one allowed call, which tests change
#   one field at a time. Test-only: *_test.rego files stay out of bundles.
package pdp.lib_test

# An allowed call: support-bot searches Jira while triaging tickets.
base_input := {
	"version": 1,
	"now": {"rfc3339": "2026-01-15T10:00:00.000000Z", "unix_ns": 1768471200000000000},
	"identity": identity("spiffe://acme.example/agents/support-bot"),
	"agent": {
		"id": "support-bot",
		"status": "active",
		"on_behalf_of": {"subject": "user:alice@acme.example", "tenant": "acme"},
	},
	"tenant": "acme",
	"task": {"id": "T-42", "purpose": "triage support tickets", "session": "s-9"},
	"action": {"type": "tool.call", "name": "jira.search_issues", "operation": "read", "arguments": {}},
	"destination": {
		"type": "tool",
		"name": "jira",
		"url": "https://jira.internal.acme/rest/api/2/search",
		"host": "jira.internal.acme",
		"scheme": "https",
		"port": 443,
		"environment": null,
	},
	"data": {"sensitivity": "internal", "sensitivity_rank": 1, "categories": []},
	"prompt": {"present": false, "sha256": null, "length": 0, "risk_signals": []},
	"context": {},
	"request": {"id": "req-1", "received_at": "2026-01-15T10:00:00.000000Z"},
	"session": {
		"available": true,
		"origin": "sqlite",
		"error": null,
		"read_at_ns": 1768471200000000000,
		"task": null,
		"session": null,
	},
	"chain": {
		"present": false,
		"verified": false,
		"error": null,
		"subject": null,
		"subject_tenant": null,
		"issuer": null,
		"actors": [],
		"depth": 0,
	},
}

# METADATA
# description: base_input with patch merged in (nested objects merge; a value replaces).
request(patch) := object.union(base_input, patch)

# METADATA
# description: |
#   The input a test case describes: base_input with the case's "patch" merged in, then the
#   case's "remove" paths (slash separated, as json.remove takes them) taken out.
input_for(tc) := json.remove(request(object.get(tc, "patch", {})), object.get(tc, "remove", []))

# METADATA
# description: |
#   The inventory a test case describes: the fixture inventory with the case's "inventory"
#   patch merged in, then its "inventory_remove" paths taken out.
inventory_for(tc) := json.remove(
	object.union(inventory, object.get(tc, "inventory", {})),
	object.get(tc, "inventory_remove", []),
)

# METADATA
# description: The identity of an agent whose JWT-SVID verified.
identity(spiffe_id) := {
	"authenticated": true,
	"spiffe_id": spiffe_id,
	"trust_domain": parts[2],
	"path": array.slice(parts, 3, count(parts)),
	"expires_at": 1768471500,
	"jti": "jti-1",
	"error": null,
} if {
	parts := split(spiffe_id, "/")
}

# METADATA
# description: The identity of a request whose token did not verify (error null or {code, message}).
failed_identity(error) := {
	"authenticated": false,
	"spiffe_id": null,
	"trust_domain": null,
	"path": null,
	"expires_at": null,
	"jti": null,
	"error": error,
}

# METADATA
# description: The codes of a set of reasons.
codes(reasons) := {reason.code | some reason in reasons}

support_bot := "spiffe://acme.example/agents/support-bot"

open_bot := "spiffe://acme.example/agents/open-bot"

retired_bot := "spiffe://acme.example/agents/retired-bot"

research_bot := "spiffe://globex.example/agents/research-bot"

inventory := {
	"tenants": {
		"acme": {"trust_domains": ["acme.example"]},
		"globex": {"trust_domains": ["globex.example"]},
	},
	"agents": {
		support_bot: {
			"tenant": "acme",
			"status": "active",
			"purposes": ["triage support tickets", "answer customer questions"],
			"entitlements": [
				{"action_types": ["tool.call"], "names": ["jira.*"], "operations": ["read", "write"], "destinations": ["jira"]},
				{"action_types": ["model.invoke"], "destinations": ["internal-llm", "public-llm"]},
			],
		},
		# Lists no purposes and is entitled to every operation of its data actions.
		open_bot: {
			"tenant": "acme",
			"status": "active",
			"entitlements": [{
				"action_types": ["data.read", "data.write", "data.export", "secret.read", "http.request"],
				"destinations": ["crm-db", "vault", "partner-analytics", "slack-webhook"],
			}],
		},
		retired_bot: {"tenant": "acme", "status": "disabled", "entitlements": []},
		research_bot: {"tenant": "globex", "status": "active", "entitlements": []},
	},
	"destinations": {
		"jira": {"tenant": "acme", "type": "tool", "trust": "internal", "hosts": ["jira.internal.acme"]},
		"crm-db": {"tenant": "acme", "type": "database", "trust": "internal", "environment": "prod"},
		"vault": {"tenant": "acme", "type": "service", "trust": "internal"},
		"slack-webhook": {"tenant": "acme", "type": "external", "trust": "internal"},
		"partner-analytics": {
			"tenant": "acme",
			"type": "service",
			"trust": "partner",
			"allowed_sensitivities": ["confidential"],
		},
		"github": {"tenant": "*", "type": "tool", "trust": "external", "hosts": ["api.github.com"]},
		"internal-llm": {"tenant": "*", "type": "model", "trust": "internal"},
		"public-llm": {"tenant": "*", "type": "model", "trust": "external"},
		"globex-wiki": {"tenant": "globex", "type": "tool", "trust": "internal"},
		"legacy-api": {"tenant": "acme", "type": "service"},
	},
	"restricted_destinations": ["vault", "internal-llm"],
	"models": {
		"internal-llm": {"max_sensitivity": "restricted"},
		"public-llm": {"max_sensitivity": "internal"},
	},
	"purposes": {
		"triage support tickets": {"actions": ["tool.call", "data.read", "model.invoke"]},
		"answer customer questions": {"actions": ["tool.call", "model.invoke", "http.request"]},
	},
}
