"""Retention: which closed segments may go, oldest first, never leaving a hole.

:func:`plan` is pure (segments, sizes, clock and limits in, the doomed segments out);
:class:`~pdp.audit.log.AuditLog` records the plan in the chain first, then
:func:`remove` deletes the files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .files import fsync_dir
from .segment import Segment

log = logging.getLogger("pdp.audit")


@dataclass(frozen=True, slots=True)
class Plan:
    """The oldest segments past the limits, and why (``age``, ``size``)."""

    doomed: list[Segment]
    reasons: list[str]


def plan(
    segments: list[Segment],
    *,
    active: Path | None,
    sizes: dict[Path, int],
    mtimes: dict[Path, float],
    now: float,
    max_age_s: float,
    max_bytes: int,
    keep_from: int | None,
) -> Plan:
    """The closed segments to delete, oldest first.

    Never the active segment, never a segment after one that is kept (no hole), never a
    segment holding a record at or after ``keep_from`` (not yet forwarded).
    """
    total = sum(sizes.values())
    doomed: list[Segment] = []
    reasons: set[str] = set()
    for seg, nxt in zip(segments, segments[1:], strict=False):
        if seg.path == active:
            break
        last_seq = nxt.first_seq - 1
        if keep_from is not None and last_seq >= keep_from:
            break
        old = bool(max_age_s) and now - mtimes[seg.path] > max_age_s
        big = bool(max_bytes) and total > max_bytes
        if not (old or big):
            break
        reasons.add("age" if old else "size")
        doomed.append(seg)
        total -= sizes[seg.path]
    return Plan(doomed, sorted(reasons))


def remove(directory: Path, doomed: list[Segment]) -> None:
    """Delete the planned segments (a failure is logged; the chain already names them)."""
    for seg in doomed:
        try:
            seg.path.unlink()
        except OSError as exc:
            log.error("audit retention could not remove %s: %s", seg.name, exc)
    fsync_dir(directory)
