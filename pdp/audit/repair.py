"""Crash repair: find the last good record of a trail and cut what follows it.

Two entry points, both returning the notes the next ``start`` record carries:

* :func:`recover_from_disk` at start: reads backwards from the end of the newest segment,
  cuts a torn or corrupt tail, removes empty trailing segments, and notices records HEAD
  says were acknowledged but are gone;
* :func:`recover_to` after a failed write or sync: cuts everything after the last record
  known durable.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chain import GENESIS, record_hash
from .files import cut_tail, fsync_dir, last_record, rfind_newline
from .segment import AuditReadError, Segment, iter_lines, list_segments, parse, read_head

log = logging.getLogger("pdp.audit")


@dataclass(slots=True)
class Recovered:
    """Where the trail ends after repair, and what the start record says about it."""

    seq: int = 0
    head: str = GENESIS
    notes: dict[str, Any] = field(default_factory=lambda: {"previous": None, "cut": []})


def recover_from_disk(directory: Path) -> Recovered:
    """Find the last good record; cut a torn tail and empty trailing segments."""
    found = Recovered()
    notes = found.notes
    segments = list_segments(directory)
    while segments:
        seg = segments[-1]
        notes["cut"].extend(cut_invalid_tail(seg))
        rec = last_record(seg.path)
        # A crash leaves the blocks reserved past the data: give them back.
        with contextlib.suppress(OSError):
            os.truncate(seg.path, seg.path.stat().st_size)
        if rec is not None:
            found.seq, found.head = int(rec["seq"]), str(rec["hash"])
            notes["previous"] = {
                "seq": found.seq,
                "hash": found.head,
                "segment": seg.name,
                # A clean stop ends with the stop marker, or with the checkpoint that
                # seals it (signed trails: "final").
                "shutdown": "clean"
                if rec.get("type") == "stop" or rec.get("final") is True
                else "unclean",
            }
            break
        seg.path.unlink()
        fsync_dir(directory)
        notes["cut"].append({"segment": seg.name, "offset": 0, "bytes": 0, "removed": True})
        segments.pop()
    head = read_head(directory)
    if head is not None and head[0] > found.seq:
        # Records the writer had acknowledged are gone (the trail was truncated).
        notes["missing"] = {"from_seq": found.seq + 1, "through_seq": head[0]}
    return found


def cut_invalid_tail(seg: Segment) -> list[dict[str, Any]]:
    """Truncate ``seg`` after its last valid, newline-terminated record.

    Reads backwards from the end: a torn tail (no newline) is cut, and so is a last
    line that does not parse or whose hash does not match (garbage left by a crash).
    """
    size = seg.path.stat().st_size
    with seg.path.open("rb") as f:
        good = rfind_newline(f, size) + 1
        while good > 0:
            begin = rfind_newline(f, good - 1) + 1
            f.seek(begin)
            raw = f.read(good - 1 - begin)
            try:
                rec = parse(raw)
            except AuditReadError:
                rec = None
            if rec is not None and rec.get("hash") == record_hash(rec):
                break
            good = begin
    if good == size:
        return []
    note = cut_tail(seg.path, good)
    log.warning("audit: cut %d torn byte(s) at %s offset %d", note["bytes"], seg.name, good)
    return [note]


def recover_to(directory: Path, seq: int, head: str) -> dict[str, Any]:
    """Cut everything after record ``seq`` (hash ``head``, the last durable one)."""
    notes: dict[str, Any] = {"previous": None, "cut": []}
    for seg in reversed(list_segments(directory)):
        if seg.first_seq > seq:
            size = seg.path.stat().st_size
            notes["cut"].append({"segment": seg.name, "offset": 0, "bytes": size, "removed": True})
            seg.path.unlink()
            continue
        end = 0
        for line in iter_lines(seg.path):
            if not line.complete:
                break
            try:
                rec = parse(line.raw)
            except AuditReadError:
                break
            if rec.get("seq", 0) > seq:
                break
            end = line.offset + len(line.raw) + 1
        if end < seg.path.stat().st_size:
            notes["cut"].append(cut_tail(seg.path, end))
        notes["previous"] = {"seq": seq, "hash": head, "segment": seg.name}
        break
    fsync_dir(directory)
    return notes
