"""The example corpus (examples/requests/*.json) is one set of cases for two runners.

tests/test_api.py runs each example end to end (a minted token, the service, a real OPA);
here every example is checked against examples/example.schema.json and the decision
request schema, then its request is normalised (pdp.normalize, as the service does) and
the policies evaluate it in `opa test` (tests/rego/examples_test.rego).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pdp.identity import Identity, parse_spiffe_id
from pdp.normalize import normalize
from pdp.schema import load_schema
from tests.conftest import EXAMPLES, POLICIES, ROOT, load_example

EXAMPLE_SCHEMA = json.loads((ROOT / "examples" / "example.schema.json").read_text())
REGO_TEST = ROOT / "tests" / "rego" / "examples_test.rego"
#: A fixed clock for the inputs: the policies' answers must not depend on the wall clock.
NOW_NS = 1_795_000_000_000_000_000


def identity_of(spiffe_id: str | None) -> Identity:
    """What the verifier makes of a valid dev token for ``spiffe_id`` (or of no token)."""
    if spiffe_id is None:
        return Identity.failure("authn.token_missing", "no agent token was presented")
    domain, path = parse_spiffe_id(spiffe_id)
    return Identity(
        authenticated=True,
        spiffe_id=spiffe_id,
        trust_domain=domain,
        path=path,
        expires_at=NOW_NS // 1_000_000_000 + 300,
        jti="example",
    )


def example_input(example: dict[str, Any]) -> dict[str, Any]:
    """The OPA input the service builds for ``example`` (agents are active, as in a fresh
    store)."""
    identity = identity_of(example["spiffe_id"])
    status = "active" if identity.authenticated else None
    return normalize(example["request"], identity, NOW_NS, agent_status=status)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_matches_the_example_schema(path: Path) -> None:
    example = load_example(path)

    assert list(Draft202012Validator(EXAMPLE_SCHEMA).iter_errors(example)) == []
    request_errors = Draft202012Validator(load_schema("decision-request")).iter_errors(
        example["request"]
    )
    assert [e.message for e in request_errors] == []
    assert path.stem.startswith("allow-" if example["expect"]["allow"] else "deny-")


def test_the_example_schema_refuses_a_case_without_an_expectation() -> None:
    example = load_example(EXAMPLES[0])
    del example["expect"]["reasons"]

    assert list(Draft202012Validator(EXAMPLE_SCHEMA).iter_errors(example)) != []


def run_rego_examples(opa_bin: str, cases: dict[str, Any], tmp_path: Path) -> Any:
    data = tmp_path / "examples"
    data.mkdir()
    (data / "data.json").write_text(json.dumps({"cases": cases}))
    return subprocess.run(
        [opa_bin, "test", str(POLICIES / "pdp"), str(POLICIES / "data"), str(tmp_path),
         str(REGO_TEST), "--run", "data.examples_test", "--fail-on-empty", "-v"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def corpus_cases() -> dict[str, Any]:
    cases = {}
    for path in EXAMPLES:
        example = load_example(path)
        cases[path.stem] = {"input": example_input(example), "expect": example["expect"]}
    return cases


def test_the_policies_give_every_example_its_expected_decision_in_opa_test(
    opa_bin: str, tmp_path: Path
) -> None:
    cases = corpus_cases()
    input_schema = Draft202012Validator(load_schema("opa-input"))
    for name, case in cases.items():
        assert list(input_schema.iter_errors(case["input"])) == [], name

    proc = run_rego_examples(opa_bin, cases, tmp_path)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_every_example_gets_its_expected_decision: PASS" in proc.stdout


def test_the_rego_example_test_fails_when_an_expectation_is_wrong(
    opa_bin: str, tmp_path: Path
) -> None:
    cases = corpus_cases()
    flipped = EXAMPLES[0].stem
    cases[flipped]["expect"] = {**cases[flipped]["expect"], "allow": None}

    proc = run_rego_examples(opa_bin, cases, tmp_path)

    assert proc.returncode != 0
    assert "test_every_example_gets_its_expected_decision: FAIL" in proc.stdout
    assert "test_the_corpus_is_loaded: PASS" in proc.stdout
    assert flipped in proc.stdout
