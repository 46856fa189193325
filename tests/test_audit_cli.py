"""`pdpctl audit verify|query|tail`, `pdpctl replay` and `pdpctl ci`, through CliRunner
(and a subprocess for `tail --follow`), on real trails, real bundles and a real OPA.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pdpctl import errors
from pdpctl.main import cli

from pdp.audit.log import AuditLog
from pdp.audit.segment import iter_records, list_segments
from pdp.audit.verify import verify
from pdp.bundle import BuiltBundle, build_bundle

from . import process_helpers
from .audit_helpers import delete, edit, make_trail, records, swap
from .conftest import POLICIES, ROOT

pytestmark = pytest.mark.opa

CORPUS = ROOT / "tests" / "corpus" / "audit"
SUPPORT_BOT = "spiffe://acme.example/agents/support-bot"


@pytest.fixture(autouse=True)
def _no_pdp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PDP_") or name == "GITHUB_STEP_SUMMARY":
            monkeypatch.delenv(name)


def run(*args: str, policies: Path = POLICIES) -> Result:
    result = CliRunner().invoke(cli, ["--policies", str(policies), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A copy of the committed corpus (an audit trail recorded by the real service)."""
    dest = tmp_path / "corpus"
    shutil.copytree(CORPUS, dest)
    return dest


@pytest.fixture(scope="module")
def widened_bundle(opa_bin: str, tmp_path_factory: pytest.TempPathFactory) -> BuiltBundle:
    """The repository's policies with one data change that widens access: support-bot
    may now delete Jira issues."""
    policies = tmp_path_factory.mktemp("wide") / "policies"
    shutil.copytree(POLICIES, policies)
    widen(policies)
    return build_bundle(opa_bin, policies, policies.parent / "wide.tar.gz")


def widen(policies: Path) -> None:
    path = policies / "data" / "inventory" / "data.json"
    doc = json.loads(path.read_text())
    jira = doc["agents"][SUPPORT_BOT]["entitlements"][0]
    assert jira["names"] == ["jira.*"]
    jira["operations"].append("delete")
    path.write_text(json.dumps(doc, indent=2) + "\n")


# --------------------------------------------------------------------------- corpus


def test_the_committed_corpus_is_an_intact_trail_of_real_decisions() -> None:
    result = verify(CORPUS)
    recs = [r for r in iter_records(CORPUS) if r["type"] == "decision"]

    assert result.problem is None
    assert len(recs) >= 100
    assert {r["decision"]["allow"] for r in recs} == {True, False}
    assert len({r["identity"]["error"] for r in recs}) >= 3  # valid and broken tokens
    assert all(isinstance(r["input"], dict) for r in recs)


# --------------------------------------------------------------------------- audit verify


def test_verify_reports_an_intact_trail(tmp_path: Path) -> None:
    d = tmp_path / "audit"
    make_trail(d, 20)
    last = records(d)[-1]

    result = run("audit", "verify", "--dir", str(d))

    assert (result.exit_code, result.output) == (
        errors.OK,
        f"ok: {last['seq']} records in {len(list_segments(d))} segment(s), "
        f"seq 1..{last['seq']}, head {last['hash']}\n"
        f"checkpoints: none: all {last['seq']} record(s) are unsealed\n",
    )


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda d: edit(d, 6, lambda r: r.update(time="x")),
         "seq 6: hash mismatch (record modified)"),
        (lambda d: delete(d, 6), "seq 6: missing (seq 6 deleted)"),
        (lambda d: swap(d, 6), "seq 6: out of order (found seq 7 in its place; records reordered)"),
    ],
    ids=["modified", "deleted", "reordered"],
)  # fmt: skip
def test_verify_exits_10_naming_the_first_bad_seq(
    tmp_path: Path, tamper: Any, message: str
) -> None:
    d = tmp_path / "audit"
    make_trail(d, 20)
    tamper(d)

    result = run("audit", "verify", "--dir", str(d))

    assert result.exit_code == errors.AUDIT_INVALID == 10
    first = list_segments(d)[0].name
    assert result.output == (f"error: audit trail {d} is not intact: {message} ({first} line 6)\n")


def test_verify_json_names_the_problem(tmp_path: Path) -> None:
    d = tmp_path / "audit"
    make_trail(d, 20)
    delete(d, 6)

    result = run("audit", "verify", "--dir", str(d), "--json")

    doc = json.loads(result.output.splitlines()[0])
    assert result.exit_code == 10
    assert doc["ok"] is False
    assert doc["problem"] == {
        "seq": 6,
        "kind": "deleted",
        "message": "missing (seq 6 deleted)",
        "segment": list_segments(d)[0].name,
        "line": 6,
    }


def test_verify_of_a_missing_directory_is_bad_input(tmp_path: Path) -> None:
    result = run("audit", "verify", "--dir", str(tmp_path / "nope"))

    assert (result.exit_code, result.output) == (
        errors.BAD_INPUT,
        f"error: {tmp_path / 'nope'}: no such audit directory\n",
    )


def test_verify_defaults_to_the_state_dirs_audit_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_trail(tmp_path / "state" / "audit", 2)
    monkeypatch.setenv("PDP_STATE_DIR", str(tmp_path / "state"))

    assert run("audit", "verify").exit_code == 0


# --------------------------------------------------------------------------- audit query / tail


def _decisions(source: Path) -> list[dict[str, Any]]:
    return [r for r in iter_records(source) if r["type"] == "decision"]


@pytest.mark.parametrize(
    ("args", "predicate"),
    [
        (["--tenant", "globex"], lambda r: r["tenant"] == "globex"),
        (["--agent", SUPPORT_BOT], lambda r: r["identity"]["spiffe_id"] == SUPPORT_BOT),
        (["--agent-name", "support-bot"], lambda r: r["agent"]["id"] == "support-bot"),
        (["--allow"], lambda r: r["decision"]["allow"]),
        (["--deny", "--tenant", "acme"],
         lambda r: not r["decision"]["allow"] and r["tenant"] == "acme"),
    ],
    ids=["tenant", "spiffe-id", "agent-id", "allow", "deny-and-tenant"],
)  # fmt: skip
def test_query_returns_exactly_the_matching_decisions(args: list[str], predicate: Any) -> None:
    result = run("audit", "query", "--dir", str(CORPUS), *args, "--format", "json")

    assert result.exit_code == 0
    found = [r["decision_id"] for r in json.loads(result.output)]
    expected = [r["decision_id"] for r in _decisions(CORPUS) if predicate(r)]
    assert found == expected and found


def test_query_since_keeps_only_later_decisions() -> None:
    recs = _decisions(CORPUS)
    cut = recs[len(recs) // 2]["time"]

    result = run("audit", "query", "--dir", str(CORPUS), "--since", cut, "--format", "json")

    assert [r["decision_id"] for r in json.loads(result.output)] == [
        r["decision_id"] for r in recs if r["time"] >= cut
    ]
    # A duration counts back from now: the corpus was recorded more than a second ago.
    everything = run(
        "audit", "query", "--dir", str(CORPUS), "--since", "36500d", "--format", "json"
    )
    nothing = run("audit", "query", "--dir", str(CORPUS), "--since", "1s", "--format", "json")
    assert (len(json.loads(everything.output)), json.loads(nothing.output)) == (len(recs), [])


def test_query_table_has_one_row_per_decision() -> None:
    result = run("audit", "query", "--dir", str(CORPUS), "--tenant", "globex", "--limit", "2")

    lines = result.output.splitlines()
    assert lines[0].split() == [
        "TIME", "SEQ", "DECISION", "AGENT", "TENANT", "ACTION", "DESTINATION", "RESULT"
    ]  # fmt: skip
    assert len(lines) == 3
    last_two = [r for r in _decisions(CORPUS) if r["tenant"] == "globex"][-2:]
    for line, rec in zip(lines[1:], last_two, strict=True):
        assert line.split()[:3] == [rec["time"], str(rec["seq"]), rec["decision_id"]]


def test_query_rejects_a_bad_since() -> None:
    result = run("audit", "query", "--dir", str(CORPUS), "--since", "yesterday")

    assert result.exit_code == errors.BAD_INPUT
    assert result.output == (
        "error: --since 'yesterday': expected a duration (90s, 30m, 24h, 7d) or an ISO 8601 time\n"
    )


def test_tail_prints_the_newest_decisions_one_json_per_line() -> None:
    result = run("audit", "tail", "--dir", str(CORPUS), "-n", "3", "--format", "json")

    assert [json.loads(line)["decision_id"] for line in result.output.splitlines()] == [
        r["decision_id"] for r in _decisions(CORPUS)[-3:]
    ]


def test_tail_follow_prints_decisions_as_they_become_durable(tmp_path: Path) -> None:
    d = tmp_path / "audit"
    log = AuditLog(d)
    log.open()
    log.append([{"type": "decision", "time": "t", "decision_id": "old"}])
    proc = subprocess.Popen(
        [sys.executable, "-m", "pdpctl", "audit", "tail", "--dir", str(d), "-n", "1",
         "--follow", "--interval", "0.05", "--format", "json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["decision_id"] == "old"
        time.sleep(0.3)
        log.append([{"type": "decision", "time": "t", "decision_id": f"new-{i}"} for i in range(2)])
        got = [json.loads(proc.stdout.readline())["decision_id"] for _ in range(2)]
    finally:
        process_helpers.kill(proc)
        assert proc.stdout is not None
        proc.stdout.close()
        log.close()
    assert got == ["new-0", "new-1"]


# --------------------------------------------------------------------------- replay


def test_replay_on_the_same_bundle_changes_nothing(
    corpus: Path, policy_bundle: BuiltBundle
) -> None:
    result = run("replay", "--audit", str(corpus), "--bundle", str(policy_bundle.path))

    n = len(_decisions(corpus))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        f"replayed {n} of {n} recorded decision(s) from {corpus} on {policy_bundle.path} "
        f"(revision {policy_bundle.revision})"
    )
    assert result.output.splitlines()[1:3] == [
        f"  unchanged            {n}",
        "  deny → allow         0",
    ]
    assert result.output.splitlines()[-1] == "PASS (--fail-on allow-gained)"


def test_replay_json_counts_total_and_changed(corpus: Path, policy_bundle: BuiltBundle) -> None:
    result = run(
        "replay", "--audit", str(corpus), "--bundle", str(policy_bundle.path), "--format", "json"
    )

    doc = json.loads(result.output)
    assert result.exit_code == 0
    assert (doc["total"], doc["changed"], doc["failed"]) == (len(_decisions(corpus)), 0, False)


def test_replay_of_a_widening_candidate_reports_allow_gained_and_exits_11(
    corpus: Path, widened_bundle: BuiltBundle
) -> None:
    result = run(
        "replay", "--audit", str(corpus), "--bundle", str(widened_bundle.path), "--format", "json"
    )

    assert result.exit_code == errors.REPLAY_CHANGED == 11
    *body, last = result.output.splitlines()
    doc = json.loads("\n".join(body))
    gained = [c for c in doc["changes"] if c["kind"] == "deny_to_allow"]
    expected = [
        r["decision_id"]
        for r in _decisions(corpus)
        if r["identity"]["spiffe_id"] == SUPPORT_BOT
        and r["action"]["operation"] == "delete"
        and r["action"]["name"].startswith("jira.")
        and [x["code"] for x in r["decision"]["reasons"]] == ["action_not_entitled"]
    ]
    assert [c["decision_id"] for c in gained] == expected and expected
    assert doc["deny_to_allow"] == len(expected)
    assert all(c["before"]["reasons"] == ["action_not_entitled"] for c in gained)
    assert all(c["after"]["allow"] is True for c in gained)
    assert last == (
        f"error: {len(expected)} decision(s) gain access, {doc['changed']} change(s) in all "
        "(--fail-on allow-gained)"
    )


@pytest.mark.parametrize(("fail_on", "code"), [("none", 0), ("any-change", 11)])
def test_replay_fail_on_chooses_what_fails(
    corpus: Path, widened_bundle: BuiltBundle, fail_on: str, code: int
) -> None:
    result = run(
        "replay", "--audit", str(corpus), "--bundle", str(widened_bundle.path),
        "--fail-on", fail_on,
    )  # fmt: skip

    assert result.exit_code == code


def test_replay_markdown_and_junit_reports(corpus: Path, widened_bundle: BuiltBundle) -> None:
    md = run("replay", "--audit", str(corpus), "--bundle", str(widened_bundle.path),
             "--format", "markdown")  # fmt: skip
    junit = run("replay", "--audit", str(corpus), "--bundle", str(widened_bundle.path),
                "--format", "junit")  # fmt: skip

    assert md.output.startswith("### Policy replay: ❌ fails (`--fail-on allow-gained`)\n")
    assert "| deny → allow | " in md.output
    assert "<details><summary>deny → allow: " in md.output
    xml_text = "\n".join(junit.output.splitlines()[:-1])  # the last line is the error
    suite = ET.fromstring(xml_text).find("testsuite")
    assert suite is not None
    failures = suite.findall("testcase/failure")
    assert int(suite.get("failures", "-1")) == len(failures) > 0
    assert int(suite.get("tests", "-1")) == len(_decisions(corpus))
    assert {f.get("type") for f in failures} == {"deny_to_allow"}


def test_replay_sample_and_since_select_decisions(corpus: Path, policy_bundle: BuiltBundle) -> None:
    sample = run("replay", "--audit", str(corpus), "--bundle", str(policy_bundle.path),
                 "--sample", "10", "--format", "json")  # fmt: skip
    again = run("replay", "--audit", str(corpus), "--bundle", str(policy_bundle.path),
                "--sample", "10", "--format", "json")  # fmt: skip
    future = run("replay", "--audit", str(corpus), "--bundle", str(policy_bundle.path),
                 "--since", "2999-01-01T00:00:00Z", "--format", "json")  # fmt: skip

    assert json.loads(sample.output)["total"] == 10
    assert sample.output == again.output  # seeded: the same sample every time
    assert json.loads(future.output)["total"] == 0


def test_replay_reads_a_jsonl_file_too(tmp_path: Path, policy_bundle: BuiltBundle) -> None:
    jsonl = tmp_path / "decisions.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in _decisions(CORPUS)[:5]))

    result = run("replay", "--audit", str(jsonl), "--bundle", str(policy_bundle.path),
                 "--format", "json")  # fmt: skip

    assert (json.loads(result.output)["total"], result.exit_code) == (5, 0)


def test_replay_without_a_bundle_file_is_bad_input(tmp_path: Path) -> None:
    result = run("replay", "--audit", str(CORPUS), "--bundle", str(tmp_path / "x.tar.gz"))

    assert (result.exit_code, result.output) == (
        errors.BAD_INPUT,
        f"error: {tmp_path / 'x.tar.gz'}: no such bundle file\n",
    )


# --------------------------------------------------------------------------- ci


def ci_rows(output: str) -> dict[str, str]:
    """The step table of the Markdown summary: step -> result."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] not in {"step", "---"}:
            rows[cells[0]] = cells[1]
    return rows


@pytest.fixture
def ci_policies(tmp_path: Path) -> Path:
    """A copy of the repository's policies, with the Regal configuration above them."""
    dest = tmp_path / "policies"
    shutil.copytree(POLICIES, dest)
    shutil.copytree(ROOT / ".regal", tmp_path / ".regal")
    return dest


def test_ci_passes_on_the_repository_and_writes_a_summary(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier steps\n")

    result = run("ci", "--bundle-output", str(tmp_path / "ci.tar.gz"), "--summary", str(summary))

    assert result.exit_code == 0, result.output
    assert ci_rows(result.output) == {
        "fmt": "✅", "check": "✅", "lint": "✅", "test": "✅", "bundle": "✅", "fuzz": "✅",
        "replay corpus": "✅",
    }  # fmt: skip
    text = summary.read_text()
    assert text.startswith("earlier steps\n## agent-pdp policy gate: ✅ passed\n")
    assert "### replay corpus: ✅ passes" in text


def test_ci_fails_with_the_replay_code_when_a_data_change_widens_access(
    ci_policies: Path, tmp_path: Path
) -> None:
    widen(ci_policies)

    result = run("ci", "--bundle-output", str(tmp_path / "ci.tar.gz"), policies=ci_policies)

    assert result.exit_code == errors.REPLAY_CHANGED
    rows = ci_rows(result.output)
    assert rows["replay corpus"] == "❌ exit 11"
    assert {k: v for k, v in rows.items() if k != "replay corpus"} == dict.fromkeys(
        ["fmt", "check", "lint", "test", "bundle", "fuzz"], "✅"
    )
    assert "## agent-pdp policy gate: ❌ failed (exit 11: replay corpus)" in result.output
    assert result.output.splitlines()[-1] == "error: policy gate failed at replay corpus"


def test_ci_runs_every_step_and_exits_with_the_first_failures_code(
    ci_policies: Path, tmp_path: Path
) -> None:
    rego = ci_policies / "pdp" / "rules" / "tenancy.rego"
    rego.write_text(rego.read_text() + "\nunused_rule := 1   \n")  # not `opa fmt` formatted

    result = run("ci", "--bundle-output", str(tmp_path / "ci.tar.gz"), policies=ci_policies)

    rows = ci_rows(result.output)
    assert result.exit_code == errors.NOT_FORMATTED
    assert rows["fmt"] == "❌ exit 7"
    assert rows["bundle"] == "✅" and rows["replay corpus"] == "✅"


def test_ci_verifies_and_replays_an_audit_dir(tmp_path: Path, corpus: Path) -> None:
    delete(corpus, 10)

    result = run("ci", "--bundle-output", str(tmp_path / "ci.tar.gz"), "--audit", str(corpus))

    rows = ci_rows(result.output)
    assert result.exit_code == errors.AUDIT_INVALID
    assert rows[f"verify {corpus}"] == "❌ exit 10"
    assert rows[f"replay {corpus}"] == "✅"
    assert "seq 10: missing (seq 10 deleted)" in result.output


def test_ci_without_the_corpus_is_bad_input(tmp_path: Path) -> None:
    result = run("ci", "--bundle-output", str(tmp_path / "ci.tar.gz"),
                 "--corpus", str(tmp_path / "none"))  # fmt: skip

    assert result.exit_code == errors.BAD_INPUT
    assert ci_rows(result.output)["replay corpus"] == "❌ exit 9"
