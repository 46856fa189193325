"""Helpers for the audit tests: small trails written with the real writer, and tampering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pdp.audit.log import AuditLog
from pdp.audit.segment import list_segments


def decision(i: int) -> dict[str, Any]:
    """A small decision-like record (the chain does not care about its shape)."""
    return {
        "type": "decision",
        "time": f"2026-01-01T00:00:{i % 60:02d}.000000Z",
        "decision_id": f"d-{i:04d}",
        "decision": {"allow": i % 2 == 0, "reasons": []},
        "pad": "x" * 200,
    }


def make_trail(directory: Path, n: int, *, close: bool = True, **kw: Any) -> AuditLog:
    """A trail of a start record, ``n`` decisions (one per append) and, if closed, a stop."""
    kw.setdefault("segment_max_bytes", 4096)
    log = AuditLog(directory, **kw)
    log.open()
    for i in range(n):
        log.append([decision(i)])
    if close:
        log.close()
    else:
        log.release()
    return log


def segment_lines(directory: Path) -> list[tuple[Path, list[bytes]]]:
    return [
        (s.path, s.path.read_bytes().splitlines(keepends=True)) for s in list_segments(directory)
    ]


def locate(directory: Path, seq: int) -> tuple[Path, int]:
    """(segment, line index) of the record with ``seq``."""
    for path, lines in segment_lines(directory):
        for i, line in enumerate(lines):
            if json.loads(line)["seq"] == seq:
                return path, i
    raise LookupError(seq)


def records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for _, lines in segment_lines(directory) for line in lines]


def edit(directory: Path, seq: int, change: Any) -> None:
    """Rewrite the line of ``seq`` with ``change(record)`` applied (hash left as it was)."""
    path, i = locate(directory, seq)
    lines = path.read_bytes().splitlines(keepends=True)
    rec = json.loads(lines[i])
    change(rec)
    lines[i] = json.dumps(rec, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    path.write_bytes(b"".join(lines))


def delete(directory: Path, seq: int, count: int = 1) -> None:
    """Remove the line of ``seq`` (and the ``count - 1`` lines after it in its segment)."""
    path, i = locate(directory, seq)
    lines = path.read_bytes().splitlines(keepends=True)
    del lines[i : i + count]
    path.write_bytes(b"".join(lines))


def swap(directory: Path, seq: int) -> None:
    """Swap the lines of ``seq`` and ``seq + 1`` (possibly across two segments)."""
    (pa, ia), (pb, ib) = locate(directory, seq), locate(directory, seq + 1)
    la = pa.read_bytes().splitlines(keepends=True)
    lb = la if pa == pb else pb.read_bytes().splitlines(keepends=True)
    la[ia], lb[ib] = lb[ib], la[ia]
    pa.write_bytes(b"".join(la))
    if pb != pa:
        pb.write_bytes(b"".join(lb))
