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

from pdp.audit.checkpoint import CheckpointError, load_public_keys, read_expected
from pdp.audit.segment import AuditReadError, iter_lines, iter_records, list_segments, parse
from pdp.audit.verify import verify as verify_trail
from pdp.identity import parse_spiffe_id
from pdp.schema import load_schema
from pdp.textsafe import safe

from .admin_client import AdminClient, admin_options, echo_json
from .errors import AUDIT_INVALID, BAD_INPUT, CLIError
from .options import path_option

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


dir_option = path_option(
    "--dir",
    "directory",
    "Audit directory [PDP_AUDIT_DIR, else PDP_STATE_DIR/audit, else .pdp-state/audit].",
    file_okay=False,
)
format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)


#: The record kinds (the ``type`` member of a record, from the audit-record schema).
KINDS: tuple[str, ...] = tuple(load_schema("audit-record")["properties"]["type"]["enum"])
kind_option = click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice([*KINDS, "all"]),
    default=("decision",),
    show_default=True,
    help="Record kinds to show (repeat for several; all: every record): decision, "
    "outcome (what the target did with a credential), approval (requested, granted, "
    "denied, used), checkpoint, and the writer's start, segment, retention, stop markers.",
)


def _kinds(kinds: tuple[str, ...]) -> frozenset[str]:
    return frozenset(KINDS) if "all" in kinds else frozenset(kinds)


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
@path_option(
    "--keys",
    "keys_file",
    "JWKS of the audit-signing keys (jwks.json, or /.well-known/audit-jwks.json): "
    "check every checkpoint's signature.",
    dir_okay=False,
)
@path_option(
    "--expect-checkpoint",
    "expect_file",
    "A checkpoint kept out of band (the collector's copy, `audit checkpoint`): the "
    "trail must still reach it and match it.",
    dir_okay=False,
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON object.")
def verify(
    directory: Path | None, keys_file: Path | None, expect_file: Path | None, as_json: bool
) -> None:
    """Check every hash, link and seq of the trail, and with --keys every checkpoint's
    signature (exit 10 naming the first bad seq)."""
    d = _dir(directory)
    try:
        keys = load_public_keys(keys_file) if keys_file is not None else None
        expected = read_expected(expect_file, keys) if expect_file is not None else None
    except CheckpointError as exc:
        if expect_file is not None and keys_file is not None and "signature" in str(exc):
            raise CLIError(f"--expect-checkpoint: {exc}", AUDIT_INVALID) from None
        raise CLIError(str(exc), BAD_INPUT) from None
    result = verify_trail(d, keys=keys, expected=expected)
    problem = result.problem
    last = result.last_checkpoint
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
                    "checkpoints": result.checkpoints,
                    "last_checkpoint": None if last is None else last.to_json(),
                    "unsealed": result.unsealed,
                    "signatures_checked": result.signatures_checked,
                    "expected_checkpoint": None
                    if result.expected is None
                    else {**result.expected.to_json(), "checked": result.expected_checked},
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
        if last is not None:
            signed = "signatures checked" if result.signatures_checked else "signatures NOT "
            signed += "" if result.signatures_checked else "checked (no --keys)"
            click.echo(
                f"checkpoints: {result.checkpoints} ({signed}); the last seals seq {last.seq} "
                f"at {last.time} with key {last.kid}"
            )
        else:
            click.echo(f"checkpoints: none: all {result.records} record(s) are unsealed")
        if last is not None and result.unsealed:
            click.echo(
                f"unsealed: {result.unsealed} record(s) after the last checkpoint "
                "(not covered by a signature yet)"
            )
        if result.expected is not None:
            state = (
                "reached and matches"
                if result.expected_checked
                else ("not checked: its seq is no longer in the trail (retention)")
            )
            click.echo(f"expected checkpoint seq {result.expected.seq}: {state}")


def _agent_of(rec: dict[str, Any]) -> str | None:
    """The SPIFFE ID of the agent a record is about: the verified identity of a decision,
    the agent of an approval or outcome; None for the writer's markers."""
    if rec.get("type") == "decision":
        spiffe_id = (rec.get("identity") or {}).get("spiffe_id")
    else:
        spiffe_id = rec.get("agent")
    return spiffe_id if isinstance(spiffe_id, str) else None


def _agent_name_of(rec: dict[str, Any]) -> str | None:
    if rec.get("type") == "decision":
        name = (rec.get("agent") or {}).get("id")
        return name if isinstance(name, str) else None
    spiffe_id = _agent_of(rec)
    return spiffe_id.rstrip("/").rsplit("/", 1)[-1] if spiffe_id else None


def _matches(
    rec: dict[str, Any],
    kinds: frozenset[str],
    agent: str | None,
    agent_name: str | None,
    tenant: str | None,
    allow: bool | None,
    since: datetime | None,
) -> bool:
    """Whether ``rec`` is of one of ``kinds`` and passes every filter given. A filter a
    kind has nothing for (--allow on an outcome, --tenant on a checkpoint) excludes it."""
    if rec.get("type") not in kinds:
        return False
    if tenant is not None and rec.get("tenant") != tenant:
        return False
    if allow is not None:
        decision = rec.get("decision") if rec.get("type") == "decision" else None
        if not isinstance(decision, dict) or (decision.get("allow") is True) != allow:
            return False
    if agent is not None and _agent_of(rec) != agent:
        return False
    if agent_name is not None and _agent_name_of(rec) != agent_name:
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
    return tuple(
        safe(cell)
        for cell in (
            str(rec.get("time") or "-"),
            str(rec.get("seq", "-")),
            str(rec.get("decision_id") or "-"),
            str(identity.get("spiffe_id") or f"({identity.get('error') or 'unauthenticated'})"),
            str(rec.get("tenant") or "-"),
            " ".join(str(action[k]) for k in ("type", "name") if action.get(k)) or "-",
            str((rec.get("destination") or {}).get("name") or "-"),
            result,
        )
    )


def _other_row(rec: dict[str, Any]) -> tuple[str, ...]:
    """A non-decision record in the decision table's columns (RESULT says what it is)."""
    kind = rec.get("type")
    raw_action = rec.get("action")
    action: dict[str, Any] = raw_action if isinstance(raw_action, dict) else {}
    destination: Any = rec.get("destination") or rec.get("target") or "-"
    result: str
    if kind == "approval":
        result = f"{rec.get('event')} ({rec.get('status')}) {rec.get('approval_id')}"
    elif kind == "outcome":
        result = str(rec.get("status")) + (f" {rec['error']}" if rec.get("error") else "")
    elif kind == "checkpoint":
        result = f"seals seq {(rec.get('checkpoint') or {}).get('seq')}"
    elif kind == "start":
        result = str(rec.get("reason") or "start")
    elif kind == "retention":
        result = "pruned " + json.dumps(rec.get("pruned"), sort_keys=True)
    elif kind == "segment":
        result = "next segment " + json.dumps(rec.get("segment"), sort_keys=True)
    else:
        result = "-"
    return tuple(
        safe(cell)
        for cell in (
            str(rec.get("time") or "-"),
            str(rec.get("seq", "-")),
            str(rec.get("decision_id") or "-"),
            _agent_of(rec) or "-",
            str(rec.get("tenant") or "-"),
            " ".join(str(action[k]) for k in ("type", "name") if action.get(k)) or "-",
            str(destination),
            result,
        )
    )


def _cells(rec: dict[str, Any], with_kind: bool) -> tuple[str, ...]:
    row = _row(rec) if rec.get("type") == "decision" else _other_row(rec)
    return (*row[:2], safe(str(rec.get("type"))), *row[2:]) if with_kind else row


def _with_kind(kinds: frozenset[str]) -> bool:
    """The table has a KIND column unless it shows decisions only (the default)."""
    return kinds != {"decision"}


def print_table(
    records: Iterable[dict[str, Any]], header: bool = True, *, with_kind: bool = False
) -> None:
    columns = (*_COLUMNS[:2], "KIND", *_COLUMNS[2:]) if with_kind else _COLUMNS
    rows = [_cells(r, with_kind) for r in records]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    if header:
        click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _records(d: Path) -> Iterator[dict[str, Any]]:
    try:
        yield from iter_records(d)
    except AuditReadError as exc:
        raise CLIError(str(exc), BAD_INPUT) from None


@audit.command()
@dir_option
@click.option(
    "--agent",
    help="Full SPIFFE ID of the agent (spiffe://domain/path), matched exactly.",
)
@click.option(
    "--agent-name",
    help="Bare agent id (the last SPIFFE path segment): matches that name in every trust "
    "domain and path, so only when that is what you mean.",
)
@click.option("--tenant", help="Tenant the request was made in.")
@click.option("--allow/--deny", "allow", default=None, help="Only allowed / only denied decisions.")
@click.option("--since", help="Only records since: a duration back (30m, 24h, 7d) or a time.")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many (newest).")
@kind_option
@format_option
def query(
    directory: Path | None,
    agent: str | None,
    agent_name: str | None,
    tenant: str | None,
    allow: bool | None,
    since: str | None,
    limit: int | None,
    kinds: tuple[str, ...],
    fmt: str,
) -> None:
    """List the records (decisions unless --kind says otherwise) that match every filter,
    oldest first."""
    d = _dir(directory)
    if agent is not None:
        try:
            parse_spiffe_id(agent)
        except ValueError as exc:
            raise CLIError(
                f"--agent {agent!r}: not a SPIFFE ID ({exc}); use --agent-name for a bare "
                "agent name",
                BAD_INPUT,
            ) from None
    when = parse_since(since)
    wanted = _kinds(kinds)
    found = [r for r in _records(d) if _matches(r, wanted, agent, agent_name, tenant, allow, when)]
    if limit is not None:
        found = found[-limit:]
    if fmt == "json":
        click.echo(json.dumps(found, indent=2))
    else:
        print_table(found, with_kind=_with_kind(wanted))


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


def _tail_records(
    d: Path, n: int, end: tuple[Path | None, int], kinds: frozenset[str]
) -> list[dict[str, Any]]:
    """The last ``n`` records of ``kinds`` before ``end``, reading segments from the newest."""
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
            if rec.get("type") in kinds:
                recs.append(rec)
        found = recs + found
        if len(found) >= n:
            break
    return found[-n:] if n else []


def _follow(
    d: Path, start: tuple[Path | None, int], fmt: str, interval: float, kinds: frozenset[str]
) -> None:
    """Print records of ``kinds`` from ``start`` as the writer makes them durable."""
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
                if rec.get("type") in kinds:
                    _emit(rec, fmt, _with_kind(kinds))
            later = [s for s in list_segments(d) if s.path.name > seg.name]
            if later:
                seg, offset = later[0].path, 0
                continue
        time.sleep(interval)


def _emit(rec: dict[str, Any], fmt: str, with_kind: bool = False) -> None:
    if fmt == "json":
        click.echo(json.dumps(rec, separators=(",", ":")))
    else:
        click.echo("  ".join(_cells(rec, with_kind)))


@audit.command()
@dir_option
@click.option("-n", "--lines", "n", type=click.IntRange(0), default=10, show_default=True)
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Keep printing new records of the chosen kinds as they become durable.",
)
@click.option("--interval", type=click.FloatRange(0.05), default=0.5, hidden=True)
@kind_option
@format_option
def tail(
    directory: Path | None,
    n: int,
    follow: bool,
    interval: float,
    kinds: tuple[str, ...],
    fmt: str,
) -> None:
    """Print the newest records (decisions unless --kind says otherwise; json: one record
    per line); --follow keeps going."""
    d = _dir(directory)
    wanted = _kinds(kinds)
    end = _end(d)
    recent = _tail_records(d, n, end, wanted)
    if fmt == "json":
        for rec in recent:
            _emit(rec, fmt)
    else:
        print_table(recent, with_kind=_with_kind(wanted))
    if follow:
        try:
            _follow(d, end, fmt, interval, wanted)
        except KeyboardInterrupt:  # pragma: no cover - interactive
            pass


@audit.command("checkpoint")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the checkpoint here (for `audit verify --expect-checkpoint`).",
)
@admin_options
def checkpoint_command(client: AdminClient, as_json: bool, output: Path | None) -> None:
    """Seal the running service's trail now and print (or save) the signed checkpoint:
    an anchor to keep out of band."""
    answer = client.call("GET", "/v1/audit/checkpoint")
    if output is not None:
        output.write_text(json.dumps(answer) + "\n")
    if as_json or output is None:
        echo_json(answer)
    if output is not None:
        claims = answer.get("checkpoint") or {}
        line = f"checkpoint seq {claims.get('seq')} ({claims.get('kid')}) -> {output}"
        click.echo(line, err=as_json)  # under --json stdout is the JSON only


@audit.group("keys")
def audit_keys() -> None:
    """Audit-signing keys of the running service (admin API)."""


@audit_keys.command("rotate")
@admin_options
def rotate_audit_key(client: AdminClient, as_json: bool) -> None:
    """Sign checkpoints with a new key from now on; old public keys stay in the JWKS."""
    answer = client.call("POST", "/v1/audit/keys/rotate", {})
    if as_json:
        echo_json(answer)
        return
    click.echo(f"rotated: {answer['previous']} -> {answer['current']}")
