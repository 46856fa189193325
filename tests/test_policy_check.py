"""`pdpctl policy check` type-checks the policies against the OPA input schema and the
inventory data schema, and validates the inventory: real opa, a copy of the policies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from jsonschema import Draft202012Validator
from pdpctl import errors
from pdpctl.main import cli

from pdp.identity import Identity
from pdp.normalize import normalize
from pdp.schema import load_schema
from tests.conftest import POLICIES


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    return copy


def check(policies: Path) -> Result:
    return CliRunner().invoke(cli, ["--policies", str(policies), "policy", "check"])


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_the_shipped_policies_pass_the_typed_check() -> None:
    result = check(POLICIES)

    assert result.exit_code == errors.OK, result.output
    assert result.output.splitlines()[0] == "policies compile (opa check --strict)"


def test_a_misspelt_input_field_does_not_compile(policies: Path) -> None:
    replace(policies / "pdp/rules/egress.rego", "input.destination.name", "input.destination.nmae")

    result = check(policies)

    assert result.exit_code == errors.DOES_NOT_COMPILE
    assert "undefined ref: input.destination.nmae" in result.output


def test_a_misspelt_inventory_key_does_not_compile(policies: Path) -> None:
    rule = policies / "pdp/rules/entitlements.rego"
    replace(rule, ":= data.inventory.purposes[", ":= data.inventory.purposs[")

    result = check(policies)

    assert result.exit_code == errors.DOES_NOT_COMPILE, result.output
    assert "data.inventory.purposs" in result.output


def test_an_inventory_that_breaks_its_schema_is_refused(policies: Path) -> None:
    path = policies / "data/inventory/data.json"
    doc = json.loads(path.read_text())
    agent = next(iter(doc["agents"]))
    doc["agents"][agent]["status"] = "retired"
    del doc["destinations"][next(iter(doc["destinations"]))]["trust"]
    path.write_text(json.dumps(doc))

    result = check(policies)

    assert result.exit_code == errors.DOES_NOT_COMPILE
    pointer = agent.replace("~", "~0").replace("/", "~1")
    assert f"{path}: /agents/{pointer}/status: must be one of: active, disabled" in result.output
    assert f"{path}: /destinations/jira/trust: is required" in result.output
    assert "data documents do not match their schemas" in result.output


def test_the_pep_asserted_input_matches_its_schema() -> None:
    request = {
        "subject": {"type": "user", "id": "alice", "properties": {"dept": "x"}},
        "action": {"name": "can_read_todos"},
        "resource": {"type": "todo", "id": "1", "ownerID": "bob"},
    }
    doc = normalize(request, Identity.failure("authn.token_missing", "no token"), 0)

    schema = Draft202012Validator(load_schema("opa-input-asserted"))
    assert [e.message for e in schema.iter_errors(doc)] == []
    assert [e.message for e in schema.iter_errors({**doc, "tenant": "acme"})] != []
