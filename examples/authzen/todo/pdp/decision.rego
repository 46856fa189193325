# METADATA
# title: AuthZEN interop "Todo" application
# description: |
#   The policy of the AuthZEN interop Todo scenario (openid/authzen interop/authzen-todo-backend
#   and interop/authzen-api-gateways), served with `pdpctl serve --policies examples/authzen/todo`.
#   Subjects are asserted by the PEP (AuthZEN subject type "user" or "identity"); users, roles,
#   actions and gateway routes are data (data.todo). Backend actions (can_read_user, ...) are
#   checked against roles, editors only on their own todos; gateway requests (resource type
#   "route", action name = HTTP method) against the roles of the route.
package pdp

# METADATA
# title: Decision
# description: The decision document; always defined, deny by default.
# entrypoint: true
default decision := {
	"allow": false,
	"reasons": [{
		"code": "todo.not_permitted",
		"message": "the subject may not perform this action on this resource",
		"rule": "pdp",
	}],
	"obligations": {},
}

decision := {"allow": true, "reasons": [], "obligations": {}} if permitted

# The user the PEP asserts: subject.id is the user's identity, or (1.0 draft 00) the e-mail.
user := data.todo.users[input.subject.id] if {
	input.subject.asserted
	input.subject.type in {"user", "identity"}
}

user := u if {
	input.subject.asserted
	input.subject.type in {"user", "identity"}
	some u in data.todo.users
	u.email == input.subject.id
}

# The todo's owner: resource.properties.ownerID (1.0 draft 00: resource.ownerID).
owner := input.resource.properties.ownerID

owner := input.resource.ownerID if not input.resource.properties.ownerID

permitted if {
	input.resource.type != "route"
	some role in user.roles
	rule := data.todo.actions[input.action.name]
	role in rule.roles
	not role in rule.owner_only_for
}

permitted if {
	input.resource.type != "route"
	owner == user.email
	rule := data.todo.actions[input.action.name]
	some role in user.roles
	role in rule.owner_only_for
}

permitted if {
	input.resource.type == "route"
	roles := data.todo.routes[concat(" ", [input.action.name, input.resource.id])]
	some role in user.roles
	role in roles
}
