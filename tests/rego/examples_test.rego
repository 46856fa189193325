# The shared example corpus (examples/requests/*.json), evaluated by the policies themselves.
# tests/test_examples.py normalises each example's request with pdp.normalize and loads the
# inputs as data.examples.cases ({name: {input, expect}}); `opa test` checks every case.
package examples_test

import data.pdp

answer(case) := {"allow": decision.allow, "reasons": [r.code | some r in decision.reasons]} if {
	decision := pdp.decision with input as case.input
}

test_every_example_gets_its_expected_decision if {
	wrong := {name: answer(case) |
		some name, case in data.examples.cases
		answer(case) != case.expect
	}
	print("examples answered otherwise:", wrong)
	count(wrong) == 0
}

test_the_corpus_is_loaded if {
	count(data.examples.cases) >= 8
}
