package pdp_test

import data.pdp

# alice: Sales manager; bob: Legal employee. 101: Legal, owner alice; 102: Legal, owner bob;
# 104: Finance, owner dan.
cases := [
	{"user": "alice", "action": "view", "record": "104", "allow": true},
	{"user": "alice", "action": "edit", "record": "104", "allow": false},
	{"user": "alice", "action": "delete", "record": "101", "allow": true},
	{"user": "bob", "action": "view", "record": "101", "allow": true},
	{"user": "bob", "action": "edit", "record": "101", "allow": false},
	{"user": "bob", "action": "edit", "record": "102", "allow": true},
	{"user": "bob", "action": "view", "record": "104", "allow": false},
	{"user": "bob", "action": "delete", "record": "101", "allow": false},
	{"user": "dan", "action": "edit", "record": "104", "allow": true},
	{"user": "nobody", "action": "view", "record": "101", "allow": false},
	{"user": "alice", "action": "view", "record": "999", "allow": false},
	{"user": "alice", "action": "share", "record": "101", "allow": false},
]

test_cases[note] if {
	some tc in cases
	note := concat(" ", [tc.user, tc.action, tc.record])
	got := pdp.decision with input as {
		"subject": {"type": "user", "id": tc.user, "asserted": true},
		"action": {"name": tc.action},
		"resource": {"type": "record", "id": tc.record},
	}
	got.allow == tc.allow
}

test_subject_not_asserted_by_a_pep_is_denied if {
	d := pdp.decision with input as {
		"subject": {"type": "user", "id": "alice"},
		"action": {"name": "view"},
		"resource": {"type": "record", "id": "101"},
	}
	d.reasons[0].code == "records.not_permitted"
}
