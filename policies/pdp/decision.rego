# METADATA
# title: Policy decision point
# description: |
#   The one entrypoint, data.pdp.decision. It composes the rule modules under pdp.rules by
#   deny-overrides: any deny reason from any module denies; otherwise the request is allowed
#   only when some module granted it. Obligations come from pdp.rules.risk (recheck, approval)
#   and pdp.rules.credential (credential lifetime); cache.ttl_seconds from pdp.rules.cache (only
#   low-risk reads are cacheable).
# custom:
#   controls:
#     - OWASP-ASI03
#     - MAESTRO
#     - NIST-AI-RMF:GOVERN-1.2
package pdp

import data.pdp.fast
import data.pdp.lib
import data.pdp.rules.cache
import data.pdp.rules.credential
import data.pdp.rules.risk

# METADATA
# title: Decision
# description: |
#   The decision document (pdp/schemas/decision.schema.json). Always defined: when a module
#   returns something the composition cannot trust (a deny or grant that is not a set of
#   reasons, or ill-formed obligations), the default denies with policy_error.
# entrypoint: true
# scope: document
default decision := {
	"allow": false,
	"reasons": [{
		"code": "policy_error",
		"message": "the policy could not compose a well-formed decision",
		"rule": "pdp",
		"controls": ["OWASP-ASI03", "MAESTRO", "NIST-AI-RMF:GOVERN-1.2"],
	}],
	"obligations": {"credential": {"ttl_seconds": 30}, "recheck_at_target": true, "approval": null},
	"cache": {"ttl_seconds": 0},
}

decision := fast.decision if fast.cleared

else := composed

# METADATA
# title: Composed decision
# description: |
#   The decision of the full composition: every module's deny and grant reasons and
#   obligations. Undefined when a module returns something the composition cannot trust,
#   so that decision falls back to its default. The decision for a call that pdp.fast
#   clears is the same (tests/test_policy_fastpath.py).
composed := {
	"allow": allow,
	"reasons": reasons,
	"obligations": obligations,
	"cache": {"ttl_seconds": cache_ttl_seconds},
} if {
	well_formed(obligations)
	whole(cache_ttl_seconds, 0)
	every reason in denials | grants {
		is_string(reason.code)
		is_string(reason.message)
	}
}

# METADATA
# title: Deny reasons
# description: |
#   The deny reasons of every module under pdp.rules: a new module is composed as soon as it
#   is loaded. One pass over the modules, and union() takes only sets, so a module whose deny
#   is not a set (say `deny if ...`, a boolean) leaves denials undefined: policy_error.
denials := union({reasons | some name; reasons := data.pdp.rules[name].deny})

# METADATA
# title: Grant reasons
# description: The grant reasons of every module under pdp.rules; a set, like denials.
grants := union({reasons | some name; reasons := data.pdp.rules[name].grant})

# METADATA
# scope: document
# title: Allow
# description: Deny-overrides, so at least one grant and not a single deny reason.
default allow := false

allow if {
	count(grants) > 0
	count(denials) == 0
}

# METADATA
# scope: document
# title: Reasons
# description: Empty on allow; else the deny reasons, sorted by code then message; else no_grant.
reasons := [] if allow

else := sorted(denials) if count(denials) > 0

else := [no_grant]

# METADATA
# title: Nothing granted
# description: Nothing denied the request, but no rule granted it either; deny by default.
# custom:
#   code: no_grant
no_grant := lib.reason(rego.metadata.chain(), "no rule granted this action")

# METADATA
# scope: document
# title: Cache TTL
# description: Seconds the PDP may reuse the decision (pdp.rules.cache); 0 when no module says.
default cache_ttl_seconds := 0

cache_ttl_seconds := cache.ttl_seconds

obligations := {
	"credential": {"ttl_seconds": credential.ttl_seconds},
	"recheck_at_target": risk.recheck_at_target,
	"approval": risk.approval,
}

# METADATA
# description: Reasons in a stable order, by code, then message, then the rest of the reason.
sorted(reasons) := [entry[2] | some entry in sort({[r.code, r.message, r] | some r in reasons})]

# METADATA
# description: Obligations the PDP can act on, i.e. a whole, positive TTL and a boolean recheck.
well_formed(obligations) if {
	whole(obligations.credential.ttl_seconds, 1)
	is_boolean(obligations.recheck_at_target)
	well_formed_approval(obligations.approval)
}

# METADATA
# description: A whole number no smaller than least.
whole(n, least) if {
	is_number(n)
	n >= least
	round(n) == n
}

# METADATA
# scope: document
# description: |
#   No approval, or one that says whether it is required and, if it says them, a whole,
#   positive grant lifetime (ttl_seconds) and number of uses.
well_formed_approval(null)

well_formed_approval(approval) if {
	is_boolean(approval.required)
	every key in ["ttl_seconds", "uses"] {
		whole_positive(object.get(approval, key, 1))
	}
}

# METADATA
# description: A whole number of at least one.
whole_positive(n) if {
	is_number(n)
	n >= 1
	round(n) == n
}
