"""The files of an audit directory and how to read them.

::

    DIR/
      audit-00000000000000000001.jsonl   segment: one canonical JSON record per line,
      audit-00000000000000004711.jsonl   named by the seq of its first record
      HEAD                               "<seq, 20 digits> <hash>\\n": last committed record
      LOCK                               held (flock) by the one writer while it runs
      forward.cursor                     last seq the collector acknowledged (forwarding on)

Readers never need the writer: they read complete lines and stop at a torn last line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import AuditReadError as AuditReadError

SEGMENT_PREFIX = "audit-"
SEGMENT_SUFFIX = ".jsonl"
HEAD_FILE = "HEAD"
LOCK_FILE = "LOCK"
CURSOR_FILE = "forward.cursor"
_SEGMENT_RE = re.compile(r"^audit-(\d{20})\.jsonl$")
#: Size of the HEAD file: 20 digits, a space, 64 hex digits, a newline.
HEAD_SIZE = 86


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment file and the seq its name says it starts at."""

    path: Path
    first_seq: int

    @property
    def name(self) -> str:
        return self.path.name


def segment_name(first_seq: int) -> str:
    """File name of the segment whose first record has ``first_seq``."""
    return f"{SEGMENT_PREFIX}{first_seq:020d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[Segment]:
    """The segments of ``directory`` in chain order (by first seq)."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            m = _SEGMENT_RE.match(entry.name)
            if m and entry.is_file():
                found.append(Segment(Path(entry.path), int(m.group(1))))
    return sorted(found, key=lambda s: s.first_seq)


def format_head(seq: int, digest: str) -> bytes:
    return f"{seq:020d} {digest}\n".encode("ascii")


def read_head(directory: Path) -> tuple[int, str] | None:
    """(seq, hash) from the HEAD file, or None when there is none or it is unreadable."""
    try:
        raw = (directory / HEAD_FILE).read_bytes()
    except OSError:
        return None
    parts = raw.decode("ascii", errors="replace").split()
    if len(parts) != 2 or not parts[0].isdigit() or len(parts[1]) != 64:
        return None
    return int(parts[0]), parts[1]


def writer_running(directory: Path) -> bool:
    """True when a writer holds the directory's LOCK (the trail is live)."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also drops a lock we may have taken
    return False


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a segment: its bytes (without newline), offset, and 1-based number."""

    raw: bytes
    offset: int
    number: int
    complete: bool


def iter_lines(path: Path, start: int = 0, first_number: int = 1) -> Iterator[Line]:
    """The lines of ``path`` from byte ``start``; the last one may be incomplete (torn)."""
    with path.open("rb") as f:
        f.seek(start)
        offset, number = start, first_number
        for raw in f:
            complete = raw.endswith(b"\n")
            yield Line(raw[:-1] if complete else raw, offset, number, complete)
            offset += len(raw)
            number += 1


def parse(raw: bytes) -> dict[str, Any]:
    """One record from a line; :class:`AuditReadError` if it is not a JSON object."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise AuditReadError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise AuditReadError("not a JSON object")
    return doc


def iter_records(source: Path) -> Iterator[dict[str, Any]]:
    """Every record of an audit directory (all segments) or of one JSONL file, in order.

    A torn last line is skipped (it was never acknowledged); any other unreadable line
    raises :class:`AuditReadError` naming the file and line.
    """
    if source.is_dir():
        paths = [s.path for s in list_segments(source)]
        if not paths:
            raise AuditReadError(f"{source}: no audit segments ({SEGMENT_PREFIX}*.jsonl)")
    elif source.is_file():
        paths = [source]
    else:
        raise AuditReadError(f"{source}: no such audit directory or file")
    for path in paths:
        for line in iter_lines(path):
            if not line.complete or not line.raw.strip():
                continue
            try:
                yield parse(line.raw)
            except AuditReadError as exc:
                raise AuditReadError(f"{path}:{line.number}: {exc}") from None
