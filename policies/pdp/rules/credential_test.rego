package pdp.rules.credential_test

import data.pdp.lib_test as fixtures
import data.pdp.rules.credential

secret_read := {
	"identity": fixtures.identity(fixtures.open_bot),
	"action": {"type": "secret.read", "name": "payroll.db_password", "operation": "read"},
	"destination": {"type": "service", "name": "vault", "host": null},
}

public := {"sensitivity": "public", "sensitivity_rank": 0}

confidential := {"sensitivity": "confidential", "sensitivity_rank": 2}

restricted := {"sensitivity": "restricted", "sensitivity_rank": 3}

ttl_cases := {
	"internal data at low risk lives 120s": {"want": 120},
	"public data at low risk lives 120s": {"patch": {"data": public}, "want": 120},
	"confidential data lives 60s": {"patch": {"data": confidential}, "want": 60},
	"restricted data lives 60s": {"patch": {"data": restricted}, "want": 60},
	"a high-risk action lives 30s": {"patch": secret_read, "want": 30},
	"a high-risk action on restricted data still lives 30s": {
		"patch": object.union(secret_read, {"data": restricted}),
		"want": 30,
	},
}

test_ttl_seconds[note] if {
	some note, tc in ttl_cases
	got := credential.ttl_seconds with input as fixtures.input_for(tc) with data.inventory as fixtures.inventory
	got == tc.want
}
