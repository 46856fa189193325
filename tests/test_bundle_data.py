"""Every data document a bundle carries is checked against its JSON Schema before anything
is written (pdp/bundledata.py): real `pdpctl bundle build` and real opa on a copy of the
shipped policies, one off-schema change per case."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pdpctl import errors
from pdpctl.main import cli

from pdp.bundle import source_roots
from pdp.bundledata import BUILTIN, policy_data_problems
from tests.conftest import POLICIES, free_port

ROOT = Path(__file__).resolve().parent.parent
BOT = "spiffe://acme.example/agents/support-bot"
#: The JSON pointer of the support bot's entry (RFC 6901: "/" in the id is "~1").
BOT_PTR = "/agents/spiffe:~1~1acme.example~1agents~1support-bot"
INVENTORY = "data/inventory/data.json"
SESSIONS = "data/sessions/data.json"
CLASSIFICATION = "data/classification/data.json"
DELEGATION = "data/delegation/data.json"


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    dst = tmp_path / "policies"
    shutil.copytree(POLICIES, dst)
    return dst


def build(policies: Path, out: Path) -> Result:
    return CliRunner().invoke(
        cli, ["--policies", str(policies), "bundle", "build", "--output", str(out)]
    )


def edit(policies: Path, relative: str, change: Callable[[Any], Any]) -> None:
    """Apply ``change`` to the document in place (its return value is ignored)."""
    path = policies / relative
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


def setter(*path: str, value: Any) -> Callable[[Any], None]:
    def change(doc: Any) -> None:
        for key in path[:-1]:
            doc = doc[key]
        doc[path[-1]] = value

    return change


def deleter(*path: str) -> Callable[[Any], None]:
    def change(doc: Any) -> None:
        for key in path[:-1]:
            doc = doc[key]
        del doc[path[-1]]

    return change


# (id, file, change, the pointer and message the build must name)
OFF_SCHEMA: list[tuple[str, str, Callable[[Any], Any], str]] = [
    # the agent entry: every member the policies read
    ("purposes false", INVENTORY, setter("agents", BOT, "purposes", value=False),
     f"{BOT_PTR}/purposes: must be of type array"),
    ("purposes null", INVENTORY, setter("agents", BOT, "purposes", value=None),
     f"{BOT_PTR}/purposes: must be of type array"),
    ("purposes a string", INVENTORY, setter("agents", BOT, "purposes", value="triage"),
     f"{BOT_PTR}/purposes: must be of type array"),
    ("purposes empty", INVENTORY, setter("agents", BOT, "purposes", value=[]),
     f"{BOT_PTR}/purposes: must not be empty"),
    ("purpose not a string", INVENTORY, setter("agents", BOT, "purposes", value=[1]),
     f"{BOT_PTR}/purposes/0: must be of type string"),
    ("status unknown", INVENTORY, setter("agents", BOT, "status", value="retired"),
     f"{BOT_PTR}/status: must be one of: active, disabled"),
    ("status missing", INVENTORY, deleter("agents", BOT, "status"),
     f"{BOT_PTR}/status: is required"),
    ("tenant not a string", INVENTORY, setter("agents", BOT, "tenant", value=["acme"]),
     f"{BOT_PTR}/tenant: must be of type string"),
    ("requires_verified_delegation a string", INVENTORY,
     setter("agents", BOT, "requires_verified_delegation", value="true"),
     f"{BOT_PTR}/requires_verified_delegation: must be of type boolean"),
    ("unknown agent member", INVENTORY, setter("agents", BOT, "purpose", value=["x"]),
     f"{BOT_PTR}/purpose: is not a known field"),
    ("entitlements an object", INVENTORY, setter("agents", BOT, "entitlements", value={}),
     f"{BOT_PTR}/entitlements: must be of type array"),
    ("entitlement names a string", INVENTORY,
     lambda d: d["agents"][BOT]["entitlements"][0].__setitem__("names", "jira.*"),
     f"{BOT_PTR}/entitlements/0/names: must be of type array"),
    ("entitlement names empty", INVENTORY,
     lambda d: d["agents"][BOT]["entitlements"][0].__setitem__("names", []),
     f"{BOT_PTR}/entitlements/0/names: must not be empty"),
    # a name glob OPA cannot compile (glob.match is then undefined: it matches nothing) or
    # that names a character no valid action name has (lib.valid_name: ASCII)
    ("entitlement name glob unclosed", INVENTORY,
     lambda d: d["agents"][BOT]["entitlements"][0].__setitem__("names", ["jira.[a-z"]),
     f"{BOT_PTR}/entitlements/0/names/0: has characters or a form that is not allowed here"),
    ("entitlement name glob not ASCII", INVENTORY,
     lambda d: d["agents"][BOT]["entitlements"][0].__setitem__("names", ["jira.\u0131ssue*"]),
     f"{BOT_PTR}/entitlements/0/names/0: has characters or a form that is not allowed here"),
    ("entitlement operations false", INVENTORY,
     lambda d: d["agents"][BOT]["entitlements"][0].__setitem__("operations", False),
     f"{BOT_PTR}/entitlements/0/operations: must be of type array"),
    ("entitlement without destinations", INVENTORY,
     lambda d: d["agents"][BOT]["entitlements"][0].pop("destinations"),
     f"{BOT_PTR}/entitlements/0/destinations: is required"),
    ("entitlement with a misspelt member", INVENTORY,
     lambda d: d["agents"][BOT]["entitlements"][0].__setitem__("operation", ["read"]),
     f"{BOT_PTR}/entitlements/0/operation: is not a known field"),
    # tenants, destinations, tools, models, purposes
    ("trust domains a string", INVENTORY,
     setter("tenants", "acme", "trust_domains", value="acme.example"),
     "/tenants/acme/trust_domains: must be of type array"),
    ("destination trust unknown", INVENTORY,
     setter("destinations", "jira", "trust", value="Internal"),
     "/destinations/jira/trust: must be one of: internal, partner, external"),
    ("destination trust missing", INVENTORY, deleter("destinations", "jira", "trust"),
     "/destinations/jira/trust: is required"),
    ("destination environment unknown", INVENTORY,
     setter("destinations", "jira", "environment", value="production"),
     "/destinations/jira/environment: must be one of: prod, staging, dev"),
    ("destination hosts empty", INVENTORY, setter("destinations", "jira", "hosts", value=[]),
     "/destinations/jira/hosts: must not be empty"),
    ("destination port a string", INVENTORY, setter("destinations", "jira", "ports", value=["443"]),
     "/destinations/jira/ports/0: must be of type integer"),
    ("destination data_class misspelt", INVENTORY,
     setter("destinations", "jira", "data_class", value="confidental"),
     "/destinations/jira/data_class: must be one of: public, internal, confidential, restricted"),
    ("destination allowed sensitivity unknown", INVENTORY,
     setter("destinations", "partner-analytics", "allowed_sensitivities", value=["secret"]),
     "/destinations/partner-analytics/allowed_sensitivities/0: must be one of: public, internal, "
     "confidential, restricted"),
    ("tool data_class false", INVENTORY,
     setter("tools", "crm.employees.salaries", "data_class", value=False),
     "/tools/crm.employees.salaries/data_class: must be one of: public, internal, confidential, "
     "restricted"),
    ("tool without data_class", INVENTORY, setter("tools", "x.y", value={}),
     "/tools/x.y/data_class: is required"),
    ("restricted destinations an object", INVENTORY,
     setter("restricted_destinations", value={"vault": True}),
     "/restricted_destinations: must be of type array"),
    ("model max_sensitivity misspelt", INVENTORY,
     setter("models", "public-llm", "max_sensitivity", value="Internal"),
     "/models/public-llm/max_sensitivity: must be one of: public, internal, confidential, "
     "restricted"),
    ("purpose actions a string", INVENTORY,
     setter("purposes", "literature review", "actions", value="tool.call"),
     "/purposes/literature review/actions: must be of type array"),
    ("unknown inventory member", INVENTORY, setter("agent", value={}),
     "/agent: is not a known field"),
    # sessions
    ("budget a string", SESSIONS, setter("state_changing_budget", "default", value="20"),
     "/state_changing_budget/default: must be of type integer"),
    ("tenant budget negative", SESSIONS,
     setter("state_changing_budget", "tenants", "globex", value=-1),
     "/state_changing_budget/tenants/globex: must be at least 0"),
    ("budget without tenants", SESSIONS, deleter("state_changing_budget", "tenants"),
     "/state_changing_budget/tenants: is required"),
    ("toxic threshold unknown", SESSIONS,
     setter("toxic_flow", "min_sensitivity", value="secret"),
     "/toxic_flow/min_sensitivity: must be one of: public, internal, confidential, restricted"),
    ("sequence names a string", SESSIONS,
     lambda d: d["forbidden_sequences"][1]["earlier"].__setitem__("names", "vault.*"),
     "/forbidden_sequences/1/earlier/names: must be of type array"),
    ("sequence name glob unclosed", SESSIONS,
     lambda d: d["forbidden_sequences"][1]["earlier"].__setitem__("names", ["vault.{get,read"]),
     "/forbidden_sequences/1/earlier/names/0: has characters or a form that is not allowed here"),
    ("sequence name glob not ASCII", SESSIONS,
     lambda d: d["forbidden_sequences"][1]["earlier"].__setitem__("names", ["v\u0430ult.*"]),
     "/forbidden_sequences/1/earlier/names/0: has characters or a form that is not allowed here"),
    # an action type or operation no request has (decision-request.schema.json) matches
    # nothing, so the sequence would never be denied
    ("sequence action type misspelt", SESSIONS,
     lambda d: d["forbidden_sequences"][0]["then"].__setitem__("action_types", ["tool_call"]),
     "/forbidden_sequences/0/then/action_types/0: must be one of: tool.call, model.invoke, "
     "data.read, data.write, data.export, secret.read, http.request"),
    ("sequence operation misspelt", SESSIONS,
     lambda d: d["forbidden_sequences"][0]["then"].__setitem__("operations", ["Write"]),
     "/forbidden_sequences/0/then/operations/0: must be one of: read, write, delete, execute"),
    ("sequence pattern misspelt", SESSIONS,
     lambda d: d["forbidden_sequences"][0]["then"].__setitem__("action_type", ["x"]),
     "/forbidden_sequences/0/then/action_type: is not a known field"),
    ("sequence pattern list empty", SESSIONS,
     lambda d: d["forbidden_sequences"][0]["then"].__setitem__("action_types", []),
     "/forbidden_sequences/0/then/action_types: must not be empty"),
    ("sequence without then", SESSIONS, lambda d: d["forbidden_sequences"][0].pop("then"),
     "/forbidden_sequences/0/then: is required"),
    ("sequence trust unknown", SESSIONS,
     lambda d: d["forbidden_sequences"][0]["then"].__setitem__("destination_trust", ["public"]),
     "/forbidden_sequences/0/then/destination_trust/0: must be one of: internal, partner, "
     "external"),
    # classification, delegation
    ("category floor misspelt", CLASSIFICATION,
     setter("category_floors", "pii", value="confidental"),
     "/category_floors/pii: must be one of: public, internal, confidential, restricted"),
    ("category floors a list", CLASSIFICATION, setter("category_floors", value=["pii"]),
     "/category_floors: must be of type object"),
    ("delegation depth a string", DELEGATION, setter("max_depth", value="3"),
     "/max_depth: must be of type integer"),
    ("delegation depth zero", DELEGATION, setter("max_depth", value=0),
     "/max_depth: must be at least 1"),
    ("delegation depth a float", DELEGATION, setter("max_depth", value=2.5),
     "/max_depth: must be of type integer"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("relative", "change", "expected"),
    [c[1:] for c in OFF_SCHEMA],
    ids=[c[0] for c in OFF_SCHEMA],
)
def test_an_off_schema_data_document_fails_the_build_and_writes_nothing(
    policies: Path, tmp_path: Path, relative: str, change: Callable[[Any], Any], expected: str
) -> None:
    edit(policies, relative, change)
    out = tmp_path / "out" / "bundle.tar.gz"

    result = build(policies, out)

    assert result.exit_code == errors.DOES_NOT_COMPILE, result.output
    assert f"{policies / relative}: {expected}\n" in result.output
    assert result.output.endswith(
        "error: bundle build failed: data documents do not match their schemas (nothing written)\n"
    )
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_a_failed_build_leaves_the_previous_bundle_untouched(
    policies: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bundle.tar.gz"
    assert build(policies, out).exit_code == errors.OK
    before = out.read_bytes()
    edit(policies, INVENTORY, setter("agents", BOT, "purposes", value=False))

    assert build(policies, out).exit_code == errors.DOES_NOT_COMPILE
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.tar.gz", "policies"] or sorted(
        p.name for p in tmp_path.iterdir()
    ) == ["bundle.tar.gz", "policies"]


def test_a_policy_that_does_not_compile_leaves_no_partial_file(
    policies: Path, tmp_path: Path
) -> None:
    (policies / "pdp" / "broken.rego").write_text("package pdp.broken\n\nx := \n")
    out = tmp_path / "out" / "bundle.tar.gz"

    result = build(policies, out)

    assert result.exit_code == errors.DOES_NOT_COMPILE
    assert list(out.parent.iterdir()) == []


def test_all_problems_are_reported_at_once(policies: Path, tmp_path: Path) -> None:
    edit(policies, INVENTORY, setter("agents", BOT, "purposes", value=False))
    edit(policies, DELEGATION, setter("max_depth", value="3"))

    result = build(policies, tmp_path / "b.tar.gz")

    assert f"{policies / INVENTORY}: {BOT_PTR}/purposes: must be of type array" in result.output
    assert f"{policies / DELEGATION}: /max_depth: must be of type integer" in result.output


@pytest.mark.parametrize(
    ("text", "pointer", "message"),
    [
        ('{"max_depth": 3, "max_depth": 1}', "/max_depth", "member appears more than once"),
        ('{"max_depth": 9007199254740993}', "/max_depth", "integers must be within"),
        ('{"max_depth": 3} x', "/", "Extra data"),
        ('\ufeff{"max_depth": 3}', "/", "a byte order mark is not allowed"),
        ('{"max_depth": NaN}', "/max_depth", "NaN is not JSON"),
    ],
    ids=["duplicate member", "big integer", "trailing data", "bom", "nan"],
)
def test_data_is_read_by_the_strict_parser(
    policies: Path, tmp_path: Path, text: str, pointer: str, message: str
) -> None:
    (policies / DELEGATION).write_text(text, encoding="utf-8")

    result = build(policies, tmp_path / "b.tar.gz")

    assert result.exit_code == errors.DOES_NOT_COMPILE
    assert f"{policies / DELEGATION}: {pointer}: {message}" in result.output


def test_a_duplicate_agent_entry_is_refused(policies: Path, tmp_path: Path) -> None:
    path = policies / INVENTORY
    text = path.read_text()
    entry = '"spiffe://acme.example/agents/retired-bot": {'
    assert text.count(entry) == 1
    path.write_text(text.replace(entry, f'"{BOT}": {{', 1))

    result = build(policies, tmp_path / "b.tar.gz")

    assert result.exit_code == errors.DOES_NOT_COMPILE
    assert f"{path}: {BOT_PTR}: member appears more than once" in result.output


def test_every_data_file_opa_would_merge_is_checked(policies: Path, tmp_path: Path) -> None:
    # opa build merges any .json under data/inventory/ into data.inventory, and data/x.json
    # at the root; both are validated as part of the document they land in.
    (policies / "data/inventory/extra.json").write_text(
        json.dumps({"agents": {"spiffe://acme.example/agents/x": {"purposes": False}}})
    )
    (policies / "data/more.json").write_text(json.dumps({"delegation2": {}}))

    result = build(policies, tmp_path / "b.tar.gz")

    assert result.exit_code == errors.DOES_NOT_COMPILE
    extra = policies / "data/inventory/extra.json"
    ptr = "/agents/spiffe:~1~1acme.example~1agents~1x"
    assert f"{extra}: {ptr}/purposes: must be of type array" in result.output
    assert f"{extra}: {ptr}/status: is required" in result.output
    assert f"{policies / 'data/more.json'}: /: data.delegation2 has no schema" in result.output


def test_a_member_two_files_define_is_refused(policies: Path, tmp_path: Path) -> None:
    (policies / "data/delegation/other.json").write_text('{"max_depth": 1}')

    result = build(policies, tmp_path / "b.tar.gz")

    assert result.exit_code == errors.DOES_NOT_COMPILE
    assert (
        f"{policies / 'data/delegation/other.json'}: /max_depth: data.delegation already has "
        f"this member from {policies / DELEGATION}"
    ) in result.output


def test_json_under_pdp_is_data_too(policies: Path, tmp_path: Path) -> None:
    (policies / "pdp/inventory").mkdir()
    (policies / "pdp/inventory/data.json").write_text('{"restricted_destinations": {}}')

    result = build(policies, tmp_path / "b.tar.gz")

    assert result.exit_code == errors.DOES_NOT_COMPILE
    assert "pdp/inventory/data.json: /restricted_destinations: already has" not in result.output
    assert f"{policies / 'pdp/inventory/data.json'}: /restricted_destinations:" in result.output


@pytest.mark.parametrize("name", ["data.yaml", "data.yml"])
def test_yaml_data_is_refused(policies: Path, tmp_path: Path, name: str) -> None:
    (policies / "data/sessions" / name).write_text("toxic_flow:\n  min_sensitivity: public\n")

    result = build(policies, tmp_path / "b.tar.gz")

    assert result.exit_code == errors.DOES_NOT_COMPILE
    assert f"{policies / 'data/sessions' / name}: /: data documents must be JSON" in result.output


@pytest.mark.parametrize("name", ["pdp_index", "system"])
def test_a_document_the_build_derives_cannot_come_from_the_sources(
    policies: Path, tmp_path: Path, name: str
) -> None:
    # A forged data.pdp_index.entitlements would be read as the entitlement index.
    (policies / "data" / name).mkdir()
    (policies / "data" / name / "data.json").write_text('{"entitlements": {}}')

    result = build(policies, tmp_path / "b.tar.gz")

    assert result.exit_code == errors.DOES_NOT_COMPILE
    assert f"data.{name} is derived by the bundle build" in result.output


def test_a_document_of_the_policy_directory_needs_its_schema(
    policies: Path, tmp_path: Path
) -> None:
    (policies / "data/limits").mkdir()
    (policies / "data/limits/data.json").write_text('{"per_minute": "10"}')

    refused = build(policies, tmp_path / "a.tar.gz")
    assert refused.exit_code == errors.DOES_NOT_COMPILE
    assert (
        f"{policies / 'data/limits/data.json'}: /: data.limits has no schema: add "
        "schemas/limits.schema.json to the policy directory"
    ) in refused.output

    (policies / "schemas").mkdir()
    (policies / "schemas/limits.schema.json").write_text(
        json.dumps(
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {"per_minute": {"type": "integer"}},
            }
        )
    )
    off = build(policies, tmp_path / "b.tar.gz")
    assert off.exit_code == errors.DOES_NOT_COMPILE
    assert (
        f"{policies / 'data/limits/data.json'}: /per_minute: must be of type integer"
    ) in off.output

    (policies / "data/limits/data.json").write_text('{"per_minute": 10}')
    ok = build(policies, tmp_path / "c.tar.gz")
    assert ok.exit_code == errors.OK, ok.output
    assert (tmp_path / "c.tar.gz").is_file()


def test_a_policy_directory_cannot_replace_a_shipped_schema(policies: Path, tmp_path: Path) -> None:
    (policies / "schemas").mkdir()
    (policies / "schemas/inventory.schema.json").write_text("{}")

    result = build(policies, tmp_path / "b.tar.gz")

    assert result.exit_code == errors.DOES_NOT_COMPILE
    assert "has its schema in pdp/schemas/inventory.schema.json" in result.output


def test_an_invalid_schema_of_the_policy_directory_is_refused(
    policies: Path, tmp_path: Path
) -> None:
    (policies / "data/limits").mkdir()
    (policies / "data/limits/data.json").write_text("{}")
    (policies / "schemas").mkdir()
    (policies / "schemas/limits.schema.json").write_text('{"type": 12}')

    result = build(policies, tmp_path / "b.tar.gz")

    assert result.exit_code == errors.DOES_NOT_COMPILE
    assert "schemas/limits.schema.json: /: not a valid JSON Schema" in result.output


@pytest.mark.parametrize(
    "policy_dir",
    [POLICIES, ROOT / "examples/authzen/search", ROOT / "examples/authzen/todo"],
    ids=["policies", "authzen-search", "authzen-todo"],
)
def test_the_shipped_policy_directories_build(policy_dir: Path, tmp_path: Path) -> None:
    assert policy_data_problems(policy_dir, source_roots(policy_dir)) == []
    out = tmp_path / "b.tar.gz"

    result = build(policy_dir, out)

    assert result.exit_code == errors.OK, result.output
    assert out.is_file()


def test_policy_check_reports_the_same_problems(policies: Path) -> None:
    edit(policies, SESSIONS, setter("state_changing_budget", "default", value="20"))

    result = CliRunner().invoke(cli, ["--policies", str(policies), "policy", "check"])

    assert result.exit_code == errors.DOES_NOT_COMPILE
    assert (
        f"{policies / SESSIONS}: /state_changing_budget/default: must be of type integer"
    ) in result.output


def test_the_builtin_documents_are_the_ones_the_library_reads() -> None:
    # every data.<name> the shipped Rego reads has a shipped schema (and nothing else does)
    read = set()
    for path in (POLICIES / "pdp").rglob("*.rego"):
        if path.name.endswith("_test.rego"):
            continue
        text = path.read_text()
        for name in ("inventory", "sessions", "classification", "delegation", "pdp_index"):
            if f"data.{name}" in text:
                read.add(name)
    assert read - {"pdp_index"} == set(BUILTIN) - {"authzen"}


# -- property: an agent member of another type than the policy assumes is always refused ----

#: member -> the one shape the policies read it as (the oracle, written apart from the schema)
AGENT_MEMBERS: dict[str, Callable[[Any], bool]] = {
    "purposes": lambda v: isinstance(v, list) and v != [] and all(
        isinstance(p, str) and p for p in v
    ),
    "requires_verified_delegation": lambda v: isinstance(v, bool),
    "status": lambda v: v in ("active", "disabled"),
    "tenant": lambda v: isinstance(v, str) and v != "",
    "entitlements": lambda v: isinstance(v, list) and all(
        isinstance(e, dict)
        and set(e) <= {"action_types", "destinations", "names", "operations"}
        and {"action_types", "destinations"} <= set(e)
        and all(
            isinstance(x, list) and x and all(isinstance(s, str) and s for s in x)
            for x in e.values()
        )
        for e in v
    ),
}  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["", "x", "active", "read"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["action_types", "destinations", "names", "operations", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=8,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(member=st.sampled_from(sorted(AGENT_MEMBERS)), value=json_values)
def test_an_agent_member_is_accepted_only_in_the_shape_the_policy_reads(
    tmp_path: Path, member: str, value: Any
) -> None:
    policies = tmp_path / "hyp"
    if not policies.exists():
        shutil.copytree(POLICIES, policies)
    original = (POLICIES / INVENTORY).read_text()
    doc = json.loads(original)
    doc["agents"][BOT][member] = copy.deepcopy(value)
    (policies / INVENTORY).write_text(json.dumps(doc))

    problems = policy_data_problems(policies, source_roots(policies))

    here = [p for p in problems if f": {BOT_PTR}/{member}" in p]
    assert (problems == []) == AGENT_MEMBERS[member](value), problems
    assert problems == here


def test_a_bundle_archive_in_a_source_root_is_refused(policies: Path, tmp_path: Path) -> None:
    """`opa build` skips a ``*.tar.gz`` under a source root, but the ``opa eval`` that derives
    the entitlement index (data.pdp_index) loads it as a bundle: an archive carrying a
    ``package pdp.index`` rule (or data) forged index entries the shipped inventory and
    modules do not have, unchecked by any schema and outside the content revision."""
    import tarfile

    forged = (
        "package pdp.index\n\n"
        f'entitlements["{BOT}"]["forged-dest"]["tool.call"] contains '
        '{"action_types": ["tool.call"], "destinations": ["forged-dest"]}\n'
    )
    inner = tmp_path / "inner.rego"
    inner.write_text(forged)
    with tarfile.open(policies / "data" / "extra.tar.gz", "w:gz") as tar:
        tar.add(inner, arcname="forged.rego")
    out = tmp_path / "bundle.tar.gz"
    result = build(policies, out)
    assert result.exit_code != 0, result.output
    assert "data/extra.tar.gz" in result.output
    assert not out.exists()
    assert any("extra.tar.gz" in p for p in policy_data_problems(policies, source_roots(policies)))


@pytest.mark.parametrize(
    ("link", "target_kind"),
    [
        ("data/extra", "dir"),  # a directory of data OPA would load as data.extra
        ("data/inventory/more", "dir"),  # inside a shipped document's directory
        ("data/sessions/data.json", "file"),  # a shipped document read through a link
        ("pdp/rules/linked.rego", "rego"),  # a module outside the review digest
    ],
)
def test_a_symbolic_link_in_a_source_root_is_refused(
    policies: Path, tmp_path: Path, link: str, target_kind: str
) -> None:
    """`opa build` follows symbolic links; the schema check, the content revision and the
    fast-path review digest walk the tree without following them. A link would bundle what
    it points at unchecked (here an off-schema agent) and outside the revision."""
    outside = tmp_path / "outside"
    outside.mkdir()
    path = policies / link
    if target_kind == "dir":
        (outside / "data.json").write_text('{"agents": {"x": {"purposes": false}}}')
        target = outside
    elif target_kind == "file":
        real = policies / link
        target = outside / "data.json"
        target.write_text(real.read_text())
        real.unlink()
    else:
        target = outside / "linked.rego"
        target.write_text("package pdp.rules.linked\n\ndeny contains {} if false\n")
    path.symlink_to(target)
    out = tmp_path / "bundle.tar.gz"
    result = build(policies, out)
    assert result.exit_code != 0, result.output
    assert "symbolic link" in result.output and link in result.output
    assert not out.exists()


def test_a_number_more_precise_than_a_double_is_refused(policies: Path, tmp_path: Path) -> None:
    """OPA reads bundle data exactly; the schema check reads doubles. A budget written
    ``20.00000000000000001`` is 20 to the check (an integer within bounds) and more than 20
    to OPA (a 21st state-changing call under budget): the two must not disagree."""
    path = policies / SESSIONS
    text = path.read_text()
    assert '"default": 20,' in text
    path.write_text(text.replace('"default": 20,', '"default": 20.00000000000000001,', 1))
    out = tmp_path / "bundle.tar.gz"
    result = build(policies, out)
    assert result.exit_code != 0, result.output
    assert "data/sessions/data.json" in result.output
    assert "more precision than a double holds" in result.output
    assert not out.exists()


def test_a_source_root_that_is_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real-data"
    real.mkdir()
    root = tmp_path / "data"
    root.symlink_to(real)
    problems = policy_data_problems(tmp_path, [root])
    assert len(problems) == 1 and "symbolic link" in problems[0]


def test_serve_with_off_schema_data_does_not_start(policies: Path, tmp_path: Path) -> None:
    # the embedded build (pdpctl serve with no config) checks the data like bundle build
    edit(policies, INVENTORY, setter("agents", BOT, "purposes", value=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDP_")}
    cmd = [
        sys.executable, "-m", "pdpctl", "--policies", str(policies), "serve",
        "--port", str(free_port()), "--state-dir", str(tmp_path / "state"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert proc.returncode == errors.DOES_NOT_COMPILE, proc.stderr
    assert (
        "error: could not start: data documents do not match their schemas: "
        f"{policies / INVENTORY}: {BOT_PTR}/purposes: must be of type array"
    ) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "state" / "bundles" / "policies.tar.gz").exists()
