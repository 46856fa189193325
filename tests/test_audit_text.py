"""What humans read: `audit query --agent` matches full SPIFFE IDs only (a bare name needs
--agent-name), and control, bidi and zero-width characters are escaped in tables and in
the Markdown reports posted to pull requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pdpctl import errors
from pdpctl.main import cli
from pdpctl.replay import md_cell, render_markdown, render_text

from pdp.audit.log import AuditLog
from pdp.replay import Change, Outcome, ReplayReport
from pdp.textsafe import safe

RLO, ZWSP, BEL = "\u202e", "\u200b", "\x07"


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def record(spiffe_id: str, tenant: str, i: int) -> dict[str, Any]:
    return {
        "type": "decision",
        "time": f"2026-01-01T00:00:{i:02d}.000000Z",
        "decision_id": f"d-{i}",
        "identity": {"spiffe_id": spiffe_id},
        "agent": {"id": spiffe_id.rsplit("/", 1)[-1]},
        "tenant": tenant,
        "action": {"type": "tool.call", "name": f"jira.search{ZWSP}"},
        "destination": {"name": "jira"},
        "decision": {"status": 200, "allow": False, "reasons": [{"code": f"x{RLO}y"}]},
    }


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    d = tmp_path / "audit"
    log = AuditLog(d)
    log.open()
    log.append(
        [
            record("spiffe://acme.example/agents/support-bot", "acme", 1),
            record("spiffe://evil.example/agents/support-bot", f"acme{RLO}emca", 2),
            record("spiffe://acme.example/agents/other", f"line{BEL}\nforged", 3),
        ]
    )
    log.close()
    return d


def test_agent_matches_the_full_spiffe_id_only(trail: Path) -> None:
    result = run(
        "audit", "query", "--dir", str(trail), "--agent",
        "spiffe://acme.example/agents/support-bot", "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0
    assert '"d-1"' in result.output and '"d-2"' not in result.output


def test_a_bare_agent_name_needs_its_own_flag(trail: Path) -> None:
    refused = run("audit", "query", "--dir", str(trail), "--agent", "support-bot")
    assert refused.exit_code == errors.BAD_INPUT
    assert "use --agent-name" in refused.output

    named = run("audit", "query", "--dir", str(trail), "--agent-name", "support-bot")
    assert named.exit_code == 0
    assert "d-1" in named.output and "d-2" in named.output and "d-3" not in named.output


def test_the_table_escapes_control_bidi_and_zero_width_characters(trail: Path) -> None:
    result = run("audit", "query", "--dir", str(trail))
    assert result.exit_code == 0
    for bad in (RLO, ZWSP, BEL):
        assert bad not in result.output
    assert "acme\\u202eemca" in result.output and "jira.search\\u200b" in result.output
    assert "line\\u0007\\u000aforged" in result.output
    assert len(result.output.splitlines()) == 4  # header + 3 rows: no forged line


def test_safe_leaves_ordinary_text_alone_and_escapes_each_kind() -> None:
    assert safe("héllo → wörld ✅") == "héllo → wörld ✅"
    assert safe("\u2066a\u2069\ufeff\u2028\x1b[31m") == "\\u2066a\\u2069\\ufeff\\u2028\\u001b[31m"


def test_markdown_and_text_reports_escape_what_records_hold() -> None:
    before, after = Outcome(False, (f"x{RLO}",), {}), Outcome(True, (), {})
    change = Change(
        "deny_to_allow", "d-1", "t", f"spiffe://a/{ZWSP}b", f"acme{RLO}", "tool.call",
        "<img src=x>|", before, after,
    )  # fmt: skip
    report = ReplayReport(source="s", bundle="b", total=1, changes=[change], decision_ids=["d-1"])
    md = render_markdown(report, "allow-gained")
    text = render_text(report, "allow-gained")
    for out in (md, text):
        assert RLO not in out and ZWSP not in out
    assert "<img" not in md and "&lt;img src=x&gt;\\|" in md
    assert md_cell("a\nb") == "a b"


def test_decide_and_agent_listings_escape_what_requests_put_in_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pdpctl.main import _print_decision

    _print_decision(
        200,
        {
            "allow": False,
            "decision_id": "d-1",
            "reasons": [{"code": "tenant_mismatch", "message": f"tenant {RLO}emca", "rule": "r"}],
            "policy": {"revision": "v1"},
        },
    )
    out = capsys.readouterr().out
    assert RLO not in out and "tenant \\u202eemca" in out
