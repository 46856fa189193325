"""`pdpctl audit query|tail --kind`: the record kinds of a trail written by the real writer
(decisions, outcomes, approvals and the writer's start/segment/stop markers)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pdpctl import errors
from pdpctl.audit import KINDS
from pdpctl.main import cli

from pdp.audit.log import AuditLog
from pdp.schema import load_schema
from tests.audit_helpers import decision

BOT = "spiffe://acme.example/agents/support-bot"
OTHER = "spiffe://globex.example/agents/research-bot"


def approval(i: int, event: str, agent: str = BOT, tenant: str = "acme") -> dict[str, Any]:
    return {
        "type": "approval",
        "time": f"2026-01-01T00:01:{i:02d}.000000Z",
        "event": event,
        "approval_id": f"ap-{i}",
        "status": {"requested": "pending", "granted": "granted"}.get(event, event),
        "decision_id": f"d-{i:04d}",
        "agent": agent,
        "tenant": tenant,
        "action": {"type": "secret.read", "name": "payroll.key"},
        "destination": "vault",
        "arguments_digest": "0" * 64,
        "uses_left": 1,
        "decided_by": None,
        "approver": None,
        "note": None,
    }


def outcome(i: int, agent: str | None = BOT, status: str = "ok") -> dict[str, Any]:
    return {
        "type": "outcome",
        "time": f"2026-01-01T00:02:{i:02d}.000000Z",
        "decision_id": f"d-{i:04d}",
        "credential": {"jti": f"j-{i}"},
        "agent": agent,
        "target": "hr-files",
        "status": status,
        "latency_us": 1200,
        "error": None if status == "ok" else "upstream said no",
    }


def decision_of(i: int, agent: str, tenant: str, *, allow: bool = True) -> dict[str, Any]:
    rec = decision(i)
    rec["decision"]["allow"] = allow
    rec.update(
        identity={"spiffe_id": agent},
        agent={"id": agent.rsplit("/", 1)[-1]},
        tenant=tenant,
        action={"type": "tool.call", "name": "jira.search"},
        destination={"name": "jira"},
    )
    rec["decision"]["status"] = 200
    return rec


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """start; 4 decisions, 3 approvals, 2 outcomes interleaved (segments rotating); stop."""
    d = tmp_path_factory.mktemp("trail")
    log = AuditLog(d, segment_max_bytes=2048)
    log.open()
    log.append([decision_of(0, BOT, "acme")])
    log.append([approval(1, "requested")])
    log.append([decision_of(2, BOT, "acme"), outcome(2)])
    log.append([approval(3, "granted")])
    log.append([decision_of(4, OTHER, "globex", allow=False)])
    log.append([approval(5, "used", agent=OTHER, tenant="globex")])
    log.append([decision_of(6, BOT, "acme", allow=False), outcome(6, status="error")])
    log.close()
    return d


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def kinds_of(result: Result) -> list[str]:
    assert result.exit_code == errors.OK, result.output
    return [r["type"] for r in json.loads(result.output)]


def test_the_kinds_are_the_audit_record_schemas() -> None:
    assert set(KINDS) == set(load_schema("audit-record")["properties"]["type"]["enum"])
    assert {"decision", "outcome", "approval", "checkpoint", "start", "stop"} <= set(KINDS)


def test_query_shows_decisions_by_default(trail: Path) -> None:
    result = run("audit", "query", "--dir", str(trail), "--format", "json")
    assert kinds_of(result) == ["decision"] * 4


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (["outcome"], ["outcome", "outcome"]),
        (["approval"], ["approval"] * 3),
        (["approval", "outcome"], ["approval", "outcome", "approval", "approval", "outcome"]),
        (["stop"], ["stop"]),
    ],
)
def test_query_kind_selects_those_kinds_in_trail_order(
    trail: Path, kinds: list[str], expected: list[str]
) -> None:
    args = [a for k in kinds for a in ("--kind", k)]
    result = run("audit", "query", "--dir", str(trail), *args, "--format", "json")
    assert kinds_of(result) == expected


def test_query_kind_all_is_every_record(trail: Path) -> None:
    result = run("audit", "query", "--dir", str(trail), "--kind", "all", "--format", "json")
    found = kinds_of(result)
    lines = [
        json.loads(line)["type"]
        for seg in sorted(trail.glob("*.jsonl"))
        for line in seg.read_text().splitlines()
    ]
    assert found == lines
    assert found[0] == "start" and found[-1] == "stop"
    assert "segment" in found  # the small segments rotated


def test_filters_apply_to_each_kind(trail: Path) -> None:
    base = ["audit", "query", "--dir", str(trail), "--kind", "all", "--format", "json"]
    by_agent = json.loads(run(*base, "--agent", OTHER).output)
    assert [(r["type"], r["decision_id"]) for r in by_agent] == [
        ("decision", "d-0004"),
        ("approval", "d-0005"),
    ]
    by_name = json.loads(run(*base, "--agent-name", "support-bot").output)
    assert [r["type"] for r in by_name] == [
        "decision", "approval", "decision", "outcome", "approval", "decision", "outcome",
    ]  # fmt: skip
    by_tenant = json.loads(run(*base, "--tenant", "globex").output)
    assert [r["type"] for r in by_tenant] == ["decision", "approval"]
    # --allow/--deny only ever match decisions
    denied = json.loads(run(*base, "--deny").output)
    assert [(r["type"], r["decision_id"]) for r in denied] == [
        ("decision", "d-0004"),
        ("decision", "d-0006"),
    ]
    some = ["audit", "query", "--dir", str(trail), "--kind", "approval", "--kind", "outcome"]
    since = json.loads(run(*some, "--since", "2026-01-01T00:01:04Z", "--format", "json").output)
    assert [(r["type"], r["decision_id"]) for r in since] == [
        ("outcome", "d-0002"),
        ("approval", "d-0005"),
        ("outcome", "d-0006"),
    ]


def test_an_unknown_kind_is_refused(trail: Path) -> None:
    result = run("audit", "query", "--dir", str(trail), "--kind", "decisions")
    assert result.exit_code == 2
    assert "Invalid value for '--kind': 'decisions' is not one of" in result.output


def test_the_table_gains_a_kind_column_for_other_kinds(trail: Path) -> None:
    default = run("audit", "query", "--dir", str(trail))
    assert default.output.splitlines()[0].split() == [
        "TIME", "SEQ", "DECISION", "AGENT", "TENANT", "ACTION", "DESTINATION", "RESULT",
    ]  # fmt: skip
    table = run("audit", "query", "--dir", str(trail), "--kind", "approval", "--kind", "outcome")
    lines = table.output.splitlines()
    assert lines[0].split() == [
        "TIME", "SEQ", "KIND", "DECISION", "AGENT", "TENANT", "ACTION", "DESTINATION", "RESULT",
    ]  # fmt: skip
    rows = [line.split() for line in lines[1:]]
    assert [r[2] for r in rows] == ["approval", "outcome", "approval", "approval", "outcome"]
    assert rows[0][3:] == [
        "d-0001", BOT, "acme", "secret.read", "payroll.key", "vault", "requested", "(pending)",
        "ap-1",
    ]  # fmt: skip
    assert rows[4][3:] == ["d-0006", BOT, "-", "-", "hr-files", "error", "upstream", "said", "no"]


def test_tail_kind_prints_the_newest_of_those_kinds(trail: Path) -> None:
    result = run("audit", "tail", "--dir", str(trail), "-n", "2", "--kind", "approval",
                 "--format", "json")  # fmt: skip
    assert result.exit_code == errors.OK
    recs = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["type"], r["event"]) for r in recs] == [
        ("approval", "granted"),
        ("approval", "used"),
    ]
    default = run("audit", "tail", "--dir", str(trail), "-n", "1", "--format", "json")
    assert [json.loads(line)["type"] for line in default.output.splitlines()] == ["decision"]


def lines_of(stream: Any) -> queue.Queue[str]:
    """The lines of ``stream`` as a reader thread sees them. (``select`` on the pipe, then
    ``readline``, misses a line already read into the text wrapper's buffer.)"""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def readline(lines: queue.Queue[str], timeout_s: float = 120.0) -> str:
    """The next line, failing (not hanging) when none comes in time."""
    try:
        return lines.get(timeout=timeout_s)
    except queue.Empty:
        raise AssertionError("no line from audit tail --follow") from None


def test_tail_follow_kind_prints_only_those_kinds(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, segment_max_bytes=4096)
    log.open()
    log.append([outcome(0), decision_of(0, BOT, "acme")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "pdpctl", "audit", "tail", "--dir", str(tmp_path), "-n", "1",
         "--follow", "--interval", "0.05", "--kind", "outcome", "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = lines_of(proc.stdout)
        # the newest outcome before it started (not the decision after it): it follows now
        assert json.loads(readline(lines))["decision_id"] == "d-0000"
        log.append([decision_of(1, BOT, "acme"), outcome(1)])
        log.append([approval(2, "requested"), outcome(3, status="timeout")])
        first, second = (json.loads(readline(lines)) for _ in range(2))
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        log.close()
    assert [(first["type"], first["decision_id"]), (second["type"], second["status"])] == [
        ("outcome", "d-0001"),
        ("outcome", "timeout"),
    ]
