package pdp_test

import data.pdp

rick := "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"

morty := "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"

beth := "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"

todo(owner) := {"type": "todo", "id": "t-1", "properties": {"ownerID": owner}}

cases := [
	{
		"note": "admin updates another's todo",
		"subject": rick, "action": "can_update_todo", "allow": true,
		"resource": todo("morty@the-citadel.com"),
	},
	{
		"note": "editor updates own todo",
		"subject": morty, "action": "can_update_todo", "allow": true,
		"resource": todo("morty@the-citadel.com"),
	},
	{
		"note": "editor may not update another's todo",
		"subject": morty, "action": "can_update_todo", "allow": false,
		"resource": todo("rick@the-citadel.com"),
	},
	{
		"note": "draft 00: owner at resource top level",
		"subject": "morty@the-citadel.com", "action": "can_delete_todo", "allow": true,
		"resource": {"type": "todo", "id": "t", "ownerID": "morty@the-citadel.com"},
	},
	{
		"note": "viewer may not create",
		"subject": beth, "action": "can_create_todo", "allow": false,
		"resource": {"type": "todo", "id": "t"},
	},
	{
		"note": "viewer reads todos",
		"subject": beth, "action": "can_read_todos", "allow": true,
		"resource": {"type": "todo", "id": "t"},
	},
	{
		"note": "unknown action",
		"subject": rick, "action": "can_launch_rocket", "allow": false,
		"resource": {"type": "todo", "id": "t"},
	},
	{
		"note": "unknown user",
		"subject": "nobody", "action": "can_read_todos", "allow": false,
		"resource": {"type": "todo", "id": "t"},
	},
	{
		"note": "gateway: editor PUT",
		"subject": morty, "action": "PUT", "allow": true,
		"resource": {"type": "route", "id": "/todos/{todoId}"},
	},
	{
		"note": "gateway: viewer DELETE",
		"subject": beth, "action": "DELETE", "allow": false,
		"resource": {"type": "route", "id": "/todos/{todoId}"},
	},
	{
		"note": "gateway: unknown route",
		"subject": rick, "action": "GET", "allow": false,
		"resource": {"type": "route", "id": "/admin"},
	},
]

test_cases[note] if {
	some tc in cases
	note := tc.note
	got := pdp.decision with input as {
		"subject": {"type": "user", "id": tc.subject, "asserted": true},
		"action": {"name": tc.action},
		"resource": tc.resource,
	}
	got.allow == tc.allow
}

test_subject_not_asserted_by_a_pep_is_denied if {
	not pdp.decision.allow with input as {
		"subject": {"type": "user", "id": rick},
		"action": {"name": "can_read_todos"},
		"resource": {"type": "todo", "id": "t"},
	}
}

test_deny_names_its_reason if {
	d := pdp.decision with input as {"subject": {"type": "agent", "id": rick, "asserted": true}}
	d.reasons[0].code == "todo.not_permitted"
}
