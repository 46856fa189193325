# METADATA
# title: Findings of issue 9, end to end on the shipped inventory
# description: |
#   Each case is one way a request used to be treated more kindly by leaving out or bending a
#   field; examples/requests/ holds the same cases as gateway requests. These run the whole
#   decision on the shipped data (policies/data), so they fail if the inventory or a rule
#   reopens a finding.
package pdp.findings_test

import data.pdp.lib_test as fixtures

support_bot := "spiffe://acme.example/agents/support-bot"

finance_analyst := "spiffe://acme.example/agents/finance-analyst"

jira_write := {
	"action": {"name": "jira.create_issue", "operation": "write"},
	"prompt": {"risk_signals": ["pii_detected"]},
}

slack_post := {
	"task": {"purpose": "answer customer questions"},
	"action": {"type": "http.request", "name": "slack.post_message", "operation": "write"},
	"destination": {"type": "external", "name": "slack-webhook", "host": "hooks.slack.com"},
}

vault_read := {
	"identity": fixtures.identity(finance_analyst),
	"agent": {"on_behalf_of": {"subject": "user:bob@acme.example"}},
	"task": {"purpose": "payroll reconciliation"},
	"action": {"type": "secret.read", "name": "payroll.db_readonly_credential", "operation": "read"},
	"destination": {"type": "service", "name": "vault", "host": "vault.acme.internal", "environment": "prod"},
	"data": {"sensitivity": "restricted", "sensitivity_rank": 3, "categories": ["credentials"]},
}

sensitive_categories := {"sensitivity": "internal", "sensitivity_rank": 1, "categories": ["credentials", "phi", "pii"]}

cases := {
	"execute with a suspected injection on prod jira is refused": {
		"patch": {
			"action": {"name": "jira.run_automation", "operation": "execute"},
			"prompt": {"risk_signals": ["prompt_injection_suspected"]},
		},
		"want": ["high_risk_with_prompt_risk"],
	},
	"a write that leaves the environment out is a prod write": {
		"patch": jira_write,
		"want": ["high_risk_with_prompt_risk"],
	},
	"a write the request calls dev is still a prod write": {
		"patch": object.union(jira_write, {"destination": {"environment": "dev"}}),
		"want": ["high_risk_with_prompt_risk"],
	},
	"unlabelled data is restricted": {
		"patch": object.union(slack_post, {"data": {"sensitivity": "restricted", "sensitivity_rank": 3}}),
		"want": ["egress_sensitivity_blocked", "restricted_destination_not_allowed"],
	},
	"pii, credentials and phi may not go to an external webhook": {
		"patch": object.union(slack_post, {"data": sensitive_categories}),
		"want": ["egress_sensitivity_blocked"],
	},
	"pii, credentials and phi may not go to the public LLM": {
		"patch": {
			"action": {"type": "model.invoke", "name": "public-llm", "operation": "execute"},
			"destination": {"type": "model", "name": "public-llm", "host": "api.public-llm.example"},
			"data": sensitive_categories,
		},
		"want": ["egress_sensitivity_blocked", "model_sensitivity_exceeded"],
	},
	"a purpose-bound agent without a purpose is refused": {
		"patch": vault_read,
		"remove": ["task/purpose"],
		"want": ["approval_required", "purpose_required"],
	},
	"a delegation without a tenant is refused": {
		"remove": ["agent/on_behalf_of/tenant"],
		"want": ["delegation_tenant_missing"],
	},
	"a delegated subject of no documented form is refused": {
		"patch": {"agent": {"on_behalf_of": {"subject": "root;admin=true"}}},
		"want": ["delegation_subject_invalid"],
	},
	"a destination type other than the inventory's is refused": {
		"patch": {"destination": {"type": "model"}},
		"want": ["destination_type_mismatch"],
	},
	"a secret read without a granted approval is refused": {
		"patch": object.union(vault_read, {"agent": {"on_behalf_of": {"tenant": "acme"}}}),
		"want": ["approval_required"],
	},
	"a secret read with a granted approval is allowed": {
		"patch": object.union(vault_read, {
			"agent": {"on_behalf_of": {"tenant": "acme"}},
			"approval": {"id": "apr-1", "status": "granted", "expires_at": 1768471500},
		}),
		"want": [],
	},
	"an action name with a colon is refused": {
		"patch": {"action": {"name": "jira.search_issues:write"}},
		"want": ["action_name_invalid"],
	},
	"an action name with zero-width and bidi characters is refused": {
		"patch": {"action": {"name": "jira.search\u200b_issues\u202e"}},
		"want": ["action_name_invalid"],
	},
	"a disabled agent is refused": {
		"patch": {"agent": {"status": "disabled"}},
		"want": ["agent_disabled"],
	},
}

test_finding[note] if {
	some note, tc in cases
	request := fixtures.input_for(object.union({"patch": {"identity": fixtures.identity(support_bot)}}, tc))
	decision := data.pdp.decision with input as request
	[reason.code | some reason in decision.reasons] == tc.want
	agrees(decision.allow, tc.want)
}

# METADATA
# scope: document
# description: The verdict agrees with the expected reasons (none on allow, some on deny).
agrees(true, [])

agrees(false, want) if count(want) > 0
