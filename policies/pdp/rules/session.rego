# METADATA
# title: Session and task history
# description: |
#   Judges a call by what the agent already did in the same task (input.session.task) and
#   session (input.session.session): the histories of the calls the PDP allowed there,
#   read before this decision (pdp/sessions.py). Three rules: no egress to a destination
#   that is not internal once confidential or restricted data was touched in the task
#   (the toxic flow), a per-task budget of state-changing calls, and forbidden sequences
#   of calls declared in data.sessions.forbidden_sequences. A history the PDP could not
#   read denies the call, whether or not it names a task or session: leaving the task out
#   must never get a call past an unreadable history (pdpctl policy fuzz, monotonicity).
# custom:
#   controls:
#     - OWASP-ASI01
#     - OWASP-ASI02
#     - OWASP-ASI08
#     - MAESTRO
#     - NIST-AI-RMF:MANAGE-2.4
package pdp.rules.session

import data.pdp.facts
import data.pdp.lib
import data.pdp.rules.egress

# METADATA
# title: History unavailable
# description: The store holding the task and session histories could not be read.
# custom:
#   code: session_unavailable
deny contains lib.reason(rego.metadata.chain(), message) if {
	input.session.available == false
	message := sprintf("the history of this task or session could not be read: %s", [input.session.error])
}

# METADATA
# title: Toxic flow
# description: |
#   Data of data.sessions.toxic_flow.min_sensitivity or above was touched earlier in the task
#   or session, and this call goes to a destination that is not internal and not cleared
#   (allowed_sensitivities) for data that sensitive.
# custom:
#   code: session_toxic_flow
deny contains lib.reason(rego.metadata.chain(), message) if {
	# Nothing was touched before the first call of a task: stop before reading the threshold.
	touched_rank >= 0
	touched_rank >= toxic_rank
	egress.trust_level != "internal"
	not cleared_for_touched
	message := sprintf(
		"%s data was touched earlier in this task; %s on %s destination %q could carry it out",
		[touched, input.action.type, egress.trust_level, input.destination.name],
	)
}

# METADATA
# title: State-changing budget exhausted
# description: |
#   The task already made as many state-changing calls as its budget allows
#   (data.sessions.state_changing_budget: per tenant, else the default).
# custom:
#   code: session_budget_exceeded
deny contains lib.reason(rego.metadata.chain(), message) if {
	facts.state_changing
	used := input.session.task.state_changing
	used >= budget
	message := sprintf("task %q already made %d state-changing call(s); its budget is %d", [input.task.id, used, budget])
}

# METADATA
# title: Forbidden sequence
# description: |
#   This call would complete a sequence declared in data.sessions.forbidden_sequences: an
#   earlier call of the task or session matched the sequence's "earlier" pattern and this one
#   matches its "then" pattern. A history that reached its bounds (truncated) counts as
#   having seen every earlier pattern.
# custom:
#   code: session_forbidden_sequence
deny contains lib.reason(rego.metadata.chain(), message) if {
	# A call without a history (the common case) stops here, before any pattern is matched.
	some history in histories
	some sequence in data.sessions.forbidden_sequences
	matches(current, sequence.then)
	seen(history, sequence.earlier)
	message := sprintf(
		"forbidden sequence %q: %s (this call: %s %v on %q)",
		[sequence.name, sequence.description, input.action.type, input.action.name, input.destination.name],
	)
}

# METADATA
# description: The task's and the session's histories, those that exist.
histories := [history |
	some history in [input.session.task, input.session.session]
	is_object(history)
]

# METADATA
# scope: document
# description: |
#   The highest sensitivity rank touched in the task or session (-1 before any call): the
#   recorded rank of each call, raised as pdp.facts raises a label (the destination's and the
#   tool's data_class, the categories' floors, as the inventory says now); restricted once a
#   history is truncated, since a call it no longer lists may have touched anything.
default touched_rank := -1

touched_rank := max(ranks) if {
	count(histories) > 0
	ranks := {history.max_sensitivity_rank | some history in histories} | step_ranks
}

step_ranks contains rank if {
	some history in histories
	some step in history.steps
	rank := max({step.sensitivity_rank} | raised(step))
}

step_ranks contains 3 if {
	some history in histories
	history.truncated == true
}

# METADATA
# description: The ranks the inventory and classification raise a recorded call to.
raised(step) := {lib.sensitivity_rank(class) |
	some class in [
		object.get(data.inventory.destinations, [step.destination, "data_class"], null),
		object.get(data.inventory, ["tools", step.name, "data_class"], null),
	]
	class != null
} | {lib.sensitivity_rank(minimum) |
	some category in object.get(step, "categories", [])
	minimum := data.classification.category_floors[category]
}

touched := lib.sensitivity_labels[touched_rank]

# METADATA
# scope: document
# description: The rank from which touched data taints egress; confidential when data does not say.
default toxic_rank := 2

toxic_rank := lib.sensitivity_ranks[data.sessions.toxic_flow.min_sensitivity]

# METADATA
# description: The destination lists a sensitivity at least as high as the one touched.
cleared_for_touched if {
	some sensitivity in egress.destination.allowed_sensitivities
	lib.sensitivity_ranks[sensitivity] >= touched_rank
}

# METADATA
# scope: document
# description: The task's budget of state-changing calls; none (0) when data.sessions sets none.
default budget := 0

budget := object.get(
	data.sessions.state_changing_budget.tenants, input.tenant,
	data.sessions.state_changing_budget.default,
)

# METADATA
# description: This call in the shape patterns match.
current := {
	"type": input.action.type,
	"name": input.action.name,
	"operation": input.action.operation,
	"destination": input.destination.name,
	"trust": egress.trust_level,
}

# METADATA
# scope: document
# description: Some call shape of the history matches the pattern, or the history is truncated.
seen(history, pattern) if {
	some step in history.steps
	matches(shape(step), pattern)
}

seen(history, _) if history.truncated == true

# METADATA
# description: A history step in the shape patterns match (trust from the inventory).
shape(step) := {
	"type": step.type,
	"name": step.name,
	"operation": step.operation,
	"destination": step.destination,
	"trust": trust_of(step),
}

trust_of(step) := "external" if {
	step.destination_type == "external"
} else := object.get(data.inventory.destinations, [step.destination, "trust"], "external")

# METADATA
# description: |
#   A call matches a pattern when each list the pattern has admits it: action_types,
#   names (globs, "." delimited), operations, destinations, destination_trust.
matches(call, pattern) if {
	admits(pattern, "action_types", call.type)
	admits_name(pattern, call.name)
	admits(pattern, "operations", call.operation)
	admits(pattern, "destinations", call.destination)
	admits(pattern, "destination_trust", call.trust)
}

admits(pattern, key, _) if not pattern[key]

admits(pattern, key, value) if value in pattern[key]

admits_name(pattern, _) if not pattern.names

admits_name(pattern, name) if {
	is_string(name)
	some glob_pattern in pattern.names
	glob.match(glob_pattern, ["."], name)
}
