"""`pdpctl audit verify|query|tail`: check and read an audit trail (docs/audit.md)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from pdp.audit.segment import AuditReadError, iter_lines, iter_records, list_segments, parse
from pdp.audit.verify import verify as verify_trail

from .errors import AUDIT_INVALID, BAD_INPUT, CLIError

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def default_audit_dir() -> Path:
    """PDP_AUDIT_DIR, else PDP_STATE_DIR/audit, else .pdp-state/audit (as `serve` uses)."""
    if os.environ.get("PDP_AUDIT_DIR"):
        return Path(os.environ["PDP_AUDIT_DIR"])
    return Path(os.environ.get("PDP_STATE_DIR") or ".pdp-state") / "audit"


def parse_since(value: str | None) -> datetime | None:
    """``--since``: a duration back from now (90s, 30m, 24h, 7d) or an ISO 8601 time."""
    if value is None:
        return None
    m = _DURATION.match(value.strip())
    if m:
        delta = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        return datetime.now(UTC) - delta
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CLIError(
            f"--since {value!r}: expected a duration (90s, 30m, 24h, 7d) or an ISO 8601 time",
            BAD_INPUT,
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Audit directory [PDP_AUDIT_DIR, else PDP_STATE_DIR/audit, else .pdp-state/audit].",
)
format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)


def _dir(directory: Path | None) -> Path:
    d = directory or default_audit_dir()
    if not d.is_dir():
        raise CLIError(f"{d}: no such audit directory", BAD_INPUT)
    return d


@click.group()
def audit() -> None:
    """Verify and read the audit trail."""


@audit.command()
@dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON object.")
def verify(directory: Path | None, as_json: bool) -> None:
    """Check every hash, link and seq of the trail (exit 10 naming the first bad seq)."""
    d = _dir(directory)
    result = verify_trail(d)
    problem = result.problem
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "records": result.records,
                    "segments": result.segments,
                    "first_seq": result.first_seq,
                    "last_seq": result.last_seq,
                    "head_hash": result.head_hash,
                    "live": result.live,
                    "problem": None
                    if problem is None
                    else {
                        "seq": problem.seq,
                        "kind": problem.kind,
                        "message": problem.message,
                        "segment": problem.segment,
                        "line": problem.line,
                    },
                }
            )
        )
    if problem is not None:
        raise CLIError(f"audit trail {d} is not intact: {problem}", AUDIT_INVALID)
    if not as_json:
        live = " (live: a writer holds the lock)" if result.live else ""
        click.echo(
            f"ok: {result.records} records in {result.segments} segment(s), "
            f"seq {result.first_seq}..{result.last_seq}, head {result.head_hash}{live}"
        )


def _matches(
    rec: dict[str, Any],
    agent: str | None,
    tenant: str | None,
    allow: bool | None,
    since: datetime | None,
) -> bool:
    if rec.get("type") != "decision":
        return False
    if tenant is not None and rec.get("tenant") != tenant:
        return False
    decision = rec.get("decision") or {}
    if allow is not None and (decision.get("allow") is True) != allow:
        return False
    if agent is not None:
        spiffe_id = (rec.get("identity") or {}).get("spiffe_id")
        if agent not in {spiffe_id, (rec.get("agent") or {}).get("id")}:
            return False
    if since is not None:
        when = rec.get("time")
        if not isinstance(when, str) or datetime.fromisoformat(when) < since:
            return False
    return True


_COLUMNS = ("TIME", "SEQ", "DECISION", "AGENT", "TENANT", "ACTION", "DESTINATION", "RESULT")


def _row(rec: dict[str, Any]) -> tuple[str, ...]:
    decision = rec.get("decision") or {}
    identity = rec.get("identity") or {}
    action = rec.get("action") or {}
    if decision.get("status") != 200:
        result = f"error {decision.get('status')}"
    else:
        result = "allow" if decision.get("allow") else "deny"
        codes = [str(r.get("code")) for r in decision.get("reasons", [])]
        if codes:
            result += " " + ",".join(codes)
    return (
        str(rec.get("time") or "-"),
        str(rec.get("seq", "-")),
        str(rec.get("decision_id") or "-"),
        str(identity.get("spiffe_id") or f"({identity.get('error') or 'unauthenticated'})"),
        str(rec.get("tenant") or "-"),
        " ".join(str(action[k]) for k in ("type", "name") if action.get(k)) or "-",
        str((rec.get("destination") or {}).get("name") or "-"),
        result,
    )


def print_table(records: Iterable[dict[str, Any]], header: bool = True) -> None:
    rows = [_row(r) for r in records]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(_COLUMNS)]
    if header:
        click.echo("  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True)).rstrip())
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _records(d: Path) -> Iterator[dict[str, Any]]:
    try:
        yield from iter_records(d)
    except AuditReadError as exc:
        raise CLIError(str(exc), BAD_INPUT) from None


@audit.command()
@dir_option
@click.option("--agent", help="SPIFFE ID or agent id (last path segment).")
@click.option("--tenant", help="Tenant the request was made in.")
@click.option("--allow/--deny", "allow", default=None, help="Only allowed / only denied decisions.")
@click.option("--since", help="Only decisions since: a duration back (30m, 24h, 7d) or a time.")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many (newest).")
@format_option
def query(
    directory: Path | None,
    agent: str | None,
    tenant: str | None,
    allow: bool | None,
    since: str | None,
    limit: int | None,
    fmt: str,
) -> None:
    """List the decisions that match every filter, oldest first."""
    d = _dir(directory)
    when = parse_since(since)
    found = [r for r in _records(d) if _matches(r, agent, tenant, allow, when)]
    if limit is not None:
        found = found[-limit:]
    if fmt == "json":
        click.echo(json.dumps(found, indent=2))
    else:
        print_table(found)


def _end(d: Path) -> tuple[Path | None, int]:
    """The position after the last complete line of the trail, right now."""
    segments = list_segments(d)
    if not segments:
        return None, 0
    seg = segments[-1].path
    offset = 0
    for line in iter_lines(seg):
        if line.complete:
            offset = line.offset + len(line.raw) + 1
    return seg, offset


def _tail_records(d: Path, n: int, end: tuple[Path | None, int]) -> list[dict[str, Any]]:
    """The last ``n`` decision records before ``end``, reading segments from the newest."""
    found: list[dict[str, Any]] = []
    for seg in reversed(list_segments(d)):
        if end[0] is not None and seg.path.name > end[0].name:
            continue
        recs = []
        for line in iter_lines(seg.path):
            if not line.complete or (seg.path == end[0] and line.offset >= end[1]):
                break
            try:
                rec = parse(line.raw)
            except AuditReadError as exc:
                raise CLIError(f"{seg.path}:{line.number}: {exc}", BAD_INPUT) from None
            if rec.get("type") == "decision":
                recs.append(rec)
        found = recs + found
        if len(found) >= n:
            break
    return found[-n:] if n else []


def _follow(d: Path, start: tuple[Path | None, int], fmt: str, interval: float) -> None:
    """Print decision records from ``start`` as the writer makes them durable."""
    seg, offset = start
    while True:
        if seg is None:
            segments = list_segments(d)
            seg, offset = (segments[0].path, 0) if segments else (None, 0)
        if seg is not None:
            for line in iter_lines(seg, offset):
                if not line.complete:
                    break
                offset = line.offset + len(line.raw) + 1
                rec = parse(line.raw)
                if rec.get("type") == "decision":
                    _emit(rec, fmt)
            later = [s for s in list_segments(d) if s.path.name > seg.name]
            if later:
                seg, offset = later[0].path, 0
                continue
        time.sleep(interval)


def _emit(rec: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(rec, separators=(",", ":")))
    else:
        click.echo("  ".join(_row(rec)))


@audit.command()
@dir_option
@click.option("-n", "--lines", "n", type=click.IntRange(0), default=10, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new decisions as they land.")
@click.option("--interval", type=click.FloatRange(0.05), default=0.5, hidden=True)
@format_option
def tail(directory: Path | None, n: int, follow: bool, interval: float, fmt: str) -> None:
    """Print the newest decisions (json: one record per line); --follow keeps going."""
    d = _dir(directory)
    end = _end(d)
    recent = _tail_records(d, n, end)
    if fmt == "json":
        for rec in recent:
            _emit(rec, fmt)
    else:
        print_table(recent)
    if follow:
        try:
            _follow(d, end, fmt, interval)
        except KeyboardInterrupt:  # pragma: no cover - interactive
            pass
