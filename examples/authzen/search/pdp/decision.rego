# METADATA
# title: AuthZEN interop "Search" demo
# description: |
#   The policy of the AuthZEN interop search scenario (openid/authzen
#   interop/authzen-search-demo), served with `pdpctl serve --policies examples/authzen/search`.
#   A user may view a record they own, of their department, or any record when a manager;
#   edit one they own or, as a manager, one of their department; delete one they own.
#   Users and records are data (data.records); the candidates the search APIs evaluate are
#   data.authzen.search (docs/authzen.md#search).
package pdp

# METADATA
# title: Decision
# description: The decision document; always defined, deny by default.
# entrypoint: true
default decision := {
	"allow": false,
	"reasons": [{
		"code": "records.not_permitted",
		"message": "the user may not perform this action on this record",
		"rule": "pdp",
	}],
	"obligations": {},
}

decision := {"allow": true, "reasons": [], "obligations": {}} if permitted

user := data.records.users[input.subject.id] if {
	input.subject.asserted
	input.subject.type == "user"
}

record := data.records.records[input.resource.id] if input.resource.type == "record"

owns if record.owner == input.subject.id

same_department if record.department == user.department

manager if user.role == "manager"

permitted if {
	input.action.name == "view"
	user
	viewer
}

permitted if {
	input.action.name == "edit"
	user
	editor
}

permitted if {
	input.action.name == "delete"
	user
	owns
}

viewer if owns

viewer if same_department

viewer if {
	record
	manager
}

editor if owns

editor if {
	same_department
	manager
}
