package pdp_test

import data.pdp
import data.pdp.lib_test as fixtures

grant_a := {"code": "entitled", "message": "granted", "rule": "pdp.rules.a", "controls": []}

deny_a := {"code": "tenant_mismatch", "message": "agent tenant", "rule": "pdp.rules.a", "controls": []}

deny_b := {"code": "agent_unknown", "message": "agent x", "rule": "pdp.rules.b", "controls": []}

deny_b2 := {"code": "tenant_mismatch", "message": "a different message", "rule": "pdp.rules.b", "controls": []}

# Rule modules replaced by stand-ins, so these cases test composition alone.
rules(modules) := object.union(
	{
		"credential": {"ttl_seconds": 60},
		"risk": {"recheck_at_target": false, "approval": null},
	},
	modules,
)

composition_cases := {
	"a grant and no deny allows, with no reasons": {
		"rules": rules({"a": {"grant": {grant_a}, "deny": set()}}),
		"allow": true,
		"reasons": [],
	},
	"a deny overrides a grant": {
		"rules": rules({"a": {"grant": {grant_a}}, "b": {"deny": {deny_b}}}),
		"allow": false,
		"reasons": [deny_b],
	},
	"nothing granted and nothing denied is no_grant": {
		"rules": rules({"a": {"grant": set(), "deny": set()}}),
		"allow": false,
		"reasons": [{
			"code": "no_grant",
			"message": "no rule granted this action",
			"rule": "pdp",
			"controls": ["OWASP-ASI03", "MAESTRO", "NIST-AI-RMF:GOVERN-1.2"],
		}],
	},
	"deny reasons of all modules are sorted by code, then message": {
		"rules": rules({"a": {"deny": {deny_a}}, "b": {"deny": {deny_b, deny_b2}}}),
		"allow": false,
		"reasons": [deny_b, deny_b2, deny_a],
	},
	"a module that only denies is composed": {
		"rules": rules({"a": {"grant": {grant_a}}, "new_module": {"deny": {deny_a}}}),
		"allow": false,
		"reasons": [deny_a],
	},
}

test_composition[note] if {
	some note, tc in composition_cases
	decision := pdp.decision with pdp.rules as tc.rules
	decision.allow == tc.allow
	decision.reasons == tc.reasons
}

test_obligations_come_from_credential_and_risk if {
	approval := {"required": true, "reason": "secret.read needs approval"}
	modules := {
		"a": {"grant": {grant_a}},
		"credential": {"ttl_seconds": 30},
		"risk": {"recheck_at_target": true, "approval": approval},
	}
	decision := pdp.decision with pdp.rules as modules
	decision.obligations == {"credential": {"ttl_seconds": 30}, "recheck_at_target": true, "approval": approval}
	decision.cache == {"ttl_seconds": 0}
}

test_cache_ttl_comes_from_the_cache_module if {
	modules := {"a": {"grant": {grant_a}}, "cache": {"ttl_seconds": 15}}
	decision := pdp.decision with pdp.rules as rules(modules)
	decision.cache == {"ttl_seconds": 15}
}

malformed_cases := {
	"a zero credential lifetime": {"credential": {"ttl_seconds": 0}},
	"a fractional credential lifetime": {"credential": {"ttl_seconds": 1.5}},
	"a credential lifetime that is not a number": {"credential": {"ttl_seconds": "60"}},
	"a negative cache lifetime": {"cache": {"ttl_seconds": -1}},
	"a fractional cache lifetime": {"cache": {"ttl_seconds": 0.5}},
	"a cache lifetime that is not a number": {"cache": {"ttl_seconds": "30"}},
	"a recheck that is not a boolean": {"risk": {"recheck_at_target": "yes", "approval": null}},
	"an approval that does not say whether it is required": {"risk": {"recheck_at_target": true, "approval": {}}},
	"an approval whose grant lasts no time": {"risk": approval_risk({"ttl_seconds": 0})},
	"an approval with fractional uses": {"risk": approval_risk({"uses": 1.5})},
	"an approval whose uses are not a number": {"risk": approval_risk({"uses": "1"})},
	"a module whose deny is a boolean": {"b": {"deny": true}},
	"a module whose grant is a list": {"b": {"grant": [grant_a]}},
	"a deny reason without a code": {"b": {"deny": {{"message": "no code"}}}},
	"a grant reason without a message": {"b": {"grant": {{"code": "entitled"}}}},
	"a deny reason that is not an object": {"b": {"deny": {"tenant_mismatch"}}},
}

# METADATA
# description: The risk module's document with a required approval that has the given fields.
approval_risk(fields) := {"recheck_at_target": true, "approval": object.union({"required": true}, fields)}

test_malformed_obligations_deny_with_policy_error[note] if {
	some note, modules in malformed_cases
	decision := pdp.decision with pdp.rules as rules(object.union({"a": {"grant": {grant_a}}}, modules))
	decision.allow == false
	[reason.code | some reason in decision.reasons] == ["policy_error"]
	decision.obligations.credential.ttl_seconds == 30
}

# End to end: the real rule modules over the fixture inventory.
end_to_end_cases := {
	"an entitled, low-risk read is allowed for 120s and cacheable for 30s": {
		"patch": {},
		"want": {
			"allow": true,
			"reasons": [],
			"obligations": {"credential": {"ttl_seconds": 120}, "recheck_at_target": false, "approval": null},
			"cache": {"ttl_seconds": 30},
		},
	},
	"a secret read with a granted approval is allowed for 30s with a recheck": {
		"patch": {
			"identity": fixtures.identity(fixtures.open_bot),
			"action": {"type": "secret.read", "name": "payroll.db_password", "operation": "read"},
			"destination": {"type": "service", "name": "vault", "host": null},
			"data": {"sensitivity": "restricted", "sensitivity_rank": 3},
			"approval": {"id": "apr-1", "status": "granted", "expires_at": 1768471260},
		},
		"remove": ["task/purpose"],
		"want": {
			"allow": true,
			"reasons": [],
			"obligations": {
				"credential": {"ttl_seconds": 30},
				"recheck_at_target": true,
				"approval": approval_obligation,
			},
			"cache": {"ttl_seconds": 0},
		},
	},
	"a secret read without an approval is denied with approval_required and the approval obligation": {
		"patch": {
			"identity": fixtures.identity(fixtures.open_bot),
			"action": {"type": "secret.read", "name": "payroll.db_password", "operation": "read"},
			"destination": {"type": "service", "name": "vault", "host": null},
			"data": {"sensitivity": "restricted", "sensitivity_rank": 3},
		},
		"remove": ["task/purpose"],
		"want": {
			"allow": false,
			"reasons": [{
				"code": "approval_required",
				"message": `secret.read on "vault" needs a human's approval first`,
				"rule": "pdp.rules.risk",
				"controls": [
					"OWASP-ASI01", "OWASP-ASI02", "OWASP-ASI09", "MAESTRO",
					"NIST-AI-RMF:MAP-3.5", "NIST-AI-RMF:MANAGE-2.4",
				],
			}],
			"obligations": {
				"credential": {"ttl_seconds": 30},
				"recheck_at_target": true,
				"approval": approval_obligation,
			},
			"cache": {"ttl_seconds": 0},
		},
	},
}

approval_obligation := {
	"required": true,
	"reason": `secret.read on "vault" needs human approval`,
	"ttl_seconds": 900,
	"uses": 1,
}

test_end_to_end[note] if {
	some note, tc in end_to_end_cases
	decision := pdp.decision with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory
	decision == tc.want
}

deny_codes_cases := {
	"a missing token denies with the verifier's code only": {
		"patch": {"identity": fixtures.failed_identity({"code": "authn.token_missing", "message": "no token"})},
		"want": ["authn.token_missing"],
	},
	"an agent of another tenant on that tenant's destination collects every reason, sorted": {
		"patch": {
			"identity": fixtures.identity(fixtures.research_bot),
			"destination": {"name": "globex-wiki", "host": "wiki.attacker.example"},
		},
		"inventory": {"destinations": {"globex-wiki": {"hosts": ["wiki.globex.example"]}}},
		"want": [
			"action_not_entitled",
			"destination_host_mismatch",
			"destination_tenant_mismatch",
			"tenant_mismatch",
			"trust_domain_mismatch",
		],
	},
}

test_deny_codes[note] if {
	some note, tc in deny_codes_cases
	decision := pdp.decision with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory_for(tc)
	decision.allow == false
	[reason.code | some reason in decision.reasons] == tc.want
}

test_no_input_is_denied if {
	decision := pdp.decision with input as {} with data.inventory as fixtures.inventory
	decision.allow == false
	[reason.code | some reason in decision.reasons] == ["authn.unauthenticated"]
}
