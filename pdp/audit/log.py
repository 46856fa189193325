"""The trail on disk: :class:`AuditLog` owns the files of an audit directory.

It takes the directory's ``LOCK``, recovers the tail after a crash (a torn last line is cut
and noted), chains and appends records (write, then ``fdatasync`` unless the fsync mode is
``off``), rotates segments by size and age, applies retention, and keeps ``HEAD`` current.
It is synchronous and not thread-safe: :class:`~pdp.audit.writer.AuditWriter` is its one
caller, one call at a time, except that :meth:`AuditLog.sync` of a written batch may run on
a helper thread while the next batch is prepared and written.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, BinaryIO

from ..normalize import rfc3339
from .chain import GENESIS, record_hash
from .chain import seal as chain_seal
from .segment import (
    HEAD_FILE,
    LOCK_FILE,
    AuditReadError,
    Segment,
    format_head,
    iter_lines,
    list_segments,
    parse,
    read_head,
    segment_name,
)

log = logging.getLogger("pdp.audit")

FSYNC_MODES = ("batch", "always", "off")


class AuditError(RuntimeError):
    """The trail cannot be written (locked by another writer, closed, broken)."""

    def __init__(self, message: str, short: str | None = None) -> None:
        super().__init__(message)
        #: The message without paths, for a client's error body.
        self.short = short or message


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync(fd: int) -> None:
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)


#: How far ahead of the data the active segment's blocks are reserved.
PREALLOCATE_BYTES = 4 * 1024 * 1024
_FALLOC_FL_KEEP_SIZE = 1


def _keep_size_allocator() -> Callable[[int, int, int], bool] | None:
    """fallocate(FALLOC_FL_KEEP_SIZE) on Linux: reserve blocks past EOF, size unchanged."""
    if not sys.platform.startswith("linux"):  # pragma: no cover - Linux only
        return None
    try:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):  # pragma: no cover - no such libc function
        return None
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fallocate.restype = ctypes.c_int

    def allocate(fd: int, offset: int, length: int) -> bool:
        return bool(fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0)

    return allocate


_allocate = None if os.environ.get("NO_PREALLOC") else _keep_size_allocator()


def _release_allocation(fd: int) -> None:
    """Give back the blocks reserved past the data (truncating to the current size)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, os.fstat(fd).st_size)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _now() -> str:
    return rfc3339(time.time_ns())


def pdp_version() -> str:
    """The installed agent-pdp version ("unknown" from an uninstalled tree)."""
    try:
        return version("agent-pdp")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "unknown"


def _writer_info() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "version": pdp_version()}


def _rfind_newline(f: BinaryIO, end: int) -> int:
    """Offset of the last newline before ``end`` in ``f``, or -1."""
    pos = end
    while pos > 0:
        start = max(0, pos - 65536)
        f.seek(start)
        found = f.read(pos - start).rfind(b"\n")
        if found >= 0:
            return start + found
        pos = start
    return -1


def last_record(path: Path) -> dict[str, Any] | None:
    """The last complete, parseable record of a segment (reads backwards from the end)."""
    size = path.stat().st_size
    window = 64 * 1024
    with path.open("rb") as f:
        while True:
            start = max(0, size - window)
            f.seek(start)
            chunk = f.read(size - start)
            end = chunk.rfind(b"\n")
            if end >= 0:
                begin = chunk.rfind(b"\n", 0, end) + 1
                if begin > 0 or start == 0:
                    try:
                        return parse(chunk[begin:end])
                    except AuditReadError:
                        return None
            if start == 0:
                return None
            window *= 4


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch chained and serialised by :meth:`AuditLog.prepare`, ready to commit."""

    data: bytes
    #: seq of the last record before the batch (the trail must still end there).
    after: int
    #: seq and hash of the batch's last record.
    seq: int
    head: str
    #: Rotation reason when the batch opens a new segment.
    rotate: str | None


@dataclass(frozen=True, slots=True)
class Written:
    """A batch written to the page cache: the segment's descriptor and the batch's tail."""

    fd: int
    seq: int
    head: str


class AuditLog:
    """The trail on disk. Not thread-safe: the writer calls it from one thread only."""

    def __init__(
        self,
        directory: Path,
        *,
        fsync: str = "batch",
        segment_max_bytes: int = 64 * 1024 * 1024,
        segment_max_age_s: float = 3600.0,
        retention_max_age_s: float = 0.0,
        retention_max_bytes: int = 0,
        keep_from: Callable[[], int | None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}: {fsync!r}")
        self.directory = directory
        self.fsync = fsync
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_age_s = segment_max_age_s
        self.retention_max_age_s = retention_max_age_s
        self.retention_max_bytes = retention_max_bytes
        self.keep_from = keep_from
        self._monotonic = monotonic
        self._wall = wall
        #: seq and hash of the last record written (the tail the next batch chains to).
        self.seq = 0
        self.head = GENESIS
        #: seq and hash of the last record known durable (synced, or found at start).
        self.durable_seq = 0
        self.durable_head = GENESIS
        self._lock_fd: int | None = None
        self._head_fd: int | None = None
        self._fd: int | None = None
        self._segment: Path | None = None
        self._size = 0
        #: Bytes of the active segment with blocks reserved (see PREALLOCATE_BYTES).
        self._allocated = 0
        self._opened_at = 0.0
        self._retaining = False
        #: A segment was rotated: :meth:`retain` should run (the writer calls it).
        self.retention_due = False

    # ------------------------------------------------------------------ open / close

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    @property
    def segment(self) -> Path | None:
        """The segment being appended to."""
        return self._segment

    def open(self) -> None:
        """Lock the directory, recover the tail, start a new segment with a start marker."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock()
        self._resume({"reason": "start", **self._recover_from_disk()})

    def recover(self, error: str) -> None:
        """After a failed write or sync: cut back to the last durable record and resume."""
        self._close_fds()
        self.seq, self.head = self.durable_seq, self.durable_head
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock()
        self._resume({"reason": "recovery", "error": error[:500], **self._recover_to(self.seq)})

    def close(self) -> None:
        """Write the stop marker, sync, and release the directory."""
        try:
            if self._fd is not None:
                self.append([{"type": "stop", "time": _now()}])
        finally:
            self.release()

    def release(self) -> None:
        """Close every file and drop the lock (no marker)."""
        self._close_fds()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # drops the flock
            self._lock_fd = None

    def _close_fds(self) -> None:
        if self._fd is not None:
            _release_allocation(self._fd)
        for name in ("_fd", "_head_fd"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)
        self._segment = None

    def _lock(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditError(
                f"{self.directory} is in use by another writer (its {LOCK_FILE} is held)",
                "the audit directory is in use by another writer",
            ) from None
        self._lock_fd = fd

    def _recover_from_disk(self) -> dict[str, Any]:
        """Find the last good record; cut a torn tail and empty trailing segments."""
        notes: dict[str, Any] = {"previous": None, "cut": []}
        segments = list_segments(self.directory)
        while segments:
            seg = segments[-1]
            cut = self._cut_invalid_tail(seg)
            notes["cut"].extend(cut)
            rec = last_record(seg.path)
            # A crash leaves the blocks reserved past the data: give them back.
            with contextlib.suppress(OSError):
                os.truncate(seg.path, seg.path.stat().st_size)
            if rec is not None:
                self.seq, self.head = int(rec["seq"]), str(rec["hash"])
                self.durable_seq, self.durable_head = self.seq, self.head
                notes["previous"] = {
                    "seq": self.seq,
                    "hash": self.head,
                    "segment": seg.name,
                    # A clean stop ends with the stop marker, or with the checkpoint
                    # sealing it (signed trails).
                    "shutdown": "clean"
                    if rec.get("type") == "stop" or rec.get("final") is True
                    else "unclean",
                }
                break
            seg.path.unlink()
            _fsync_dir(self.directory)
            notes["cut"].append({"segment": seg.name, "offset": 0, "bytes": 0, "removed": True})
            segments.pop()
        head = read_head(self.directory)
        if head is not None and head[0] > self.seq:
            # Records the writer had acknowledged are gone (the trail was truncated).
            notes["missing"] = {"from_seq": self.seq + 1, "through_seq": head[0]}
        return notes

    def _cut_invalid_tail(self, seg: Segment) -> list[dict[str, Any]]:
        """Truncate ``seg`` after its last valid, newline-terminated record.

        Reads backwards from the end: a torn tail (no newline) is cut, and so is a last
        line that does not parse or whose hash does not match (garbage left by a crash).
        """
        size = seg.path.stat().st_size
        with seg.path.open("rb") as f:
            good = _rfind_newline(f, size) + 1
            while good > 0:
                begin = _rfind_newline(f, good - 1) + 1
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
        with seg.path.open("r+b") as f:
            f.seek(good)
            cut = f.read()
            f.truncate(good)
            f.flush()
            os.fsync(f.fileno())
        log.warning("audit: cut %d torn byte(s) at %s offset %d", len(cut), seg.name, good)
        return [
            {
                "segment": seg.name,
                "offset": good,
                "bytes": len(cut),
                "sha256": hashlib.sha256(cut).hexdigest(),
            }
        ]

    def _recover_to(self, seq: int) -> dict[str, Any]:
        """Cut everything after record ``seq`` (the last durable one) from the trail."""
        notes: dict[str, Any] = {"previous": None, "cut": []}
        for seg in reversed(list_segments(self.directory)):
            if seg.first_seq > seq:
                notes["cut"].append(
                    {
                        "segment": seg.name,
                        "offset": 0,
                        "bytes": seg.path.stat().st_size,
                        "removed": True,
                    }  # fmt: skip
                )
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
            size = seg.path.stat().st_size
            if end < size:
                with seg.path.open("r+b") as f:
                    f.seek(end)
                    cut = f.read()
                    f.truncate(end)
                    os.fsync(f.fileno())
                notes["cut"].append(
                    {
                        "segment": seg.name,
                        "offset": end,
                        "bytes": len(cut),
                        "sha256": hashlib.sha256(cut).hexdigest(),
                    }  # fmt: skip
                )
            notes["previous"] = {"seq": self.seq, "hash": self.head, "segment": seg.name}
            break
        _fsync_dir(self.directory)
        return notes

    def _resume(self, notes: dict[str, Any]) -> None:
        self._head_fd = os.open(self.directory / HEAD_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        start: dict[str, Any] = {
            "type": "start",
            "time": _now(),
            "writer": _writer_info(),
            "fsync": self.fsync,
            **notes,
        }
        self._new_segment()
        self.append([start])
        self.retain()

    def _new_segment(self) -> None:
        if self._fd is not None:
            _release_allocation(self._fd)
            os.close(self._fd)
            self._fd = None
        path = self.directory / segment_name(self.seq + 1)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        self._segment = path
        self._size = self._allocated = 0
        self._opened_at = self._monotonic()
        _fsync_dir(self.directory)

    # ------------------------------------------------------------------ append

    def _rotation_due(self) -> str | None:
        if self.segment_max_bytes and self._size >= self.segment_max_bytes:
            return "size"
        age = self._monotonic() - self._opened_at
        if self.segment_max_age_s and self._size and age >= self.segment_max_age_s:
            return "age"
        return None

    def prepare(
        self,
        records: list[dict[str, Any]],
        seal: Callable[[int, str], dict[str, Any]] | None = None,
    ) -> Prepared:
        """Chain and serialise ``records`` (CPU only, no I/O) for :meth:`commit`.

        When the active segment is due for rotation, the batch starts with the header
        record of the next segment, which :meth:`commit` opens. ``seal(seq, hash)`` of the
        batch's last record, when given, makes the record that ends the batch (a signed
        checkpoint). Nothing changes until the batch is committed; prepare and commit one
        batch at a time.
        """
        if self._fd is None or self._segment is None:
            raise AuditError("the audit trail is not open")
        rotate = self._rotation_due()
        if rotate is not None:
            header = {
                "type": "segment",
                "time": _now(),
                "segment": {
                    "name": segment_name(self.seq + 1),
                    "previous": self._segment.name,
                    "reason": rotate,
                },
            }
            records = [header, *records]
        seq, head = self.seq, self.head
        lines = []
        for rec in records:
            seq += 1
            line, head = chain_seal(rec, seq, head)
            lines.append(line)
        if seal is not None:
            line, head = chain_seal(seal(seq, head), seq + 1, head)
            seq += 1
            lines.append(line)
        return Prepared(b"".join(lines), self.seq, seq, head, rotate)

    def commit(self, batch: Prepared) -> None:
        """Write a prepared batch, sync it (per the fsync mode) and mark it durable.

        Opens the next segment first when the batch says so. On error nothing of the batch
        counts: ``seq``/``head`` stay put and :meth:`recover` cuts whatever reached the file.
        Only while no :meth:`sync` is in flight.
        """
        if self._fd is None or batch.after != self.seq:
            raise AuditError("the batch was not prepared against the trail as it is")
        if batch.rotate is not None:
            self._new_segment()
        assert self._fd is not None
        self._preallocate(len(batch.data))
        _write_all(self._fd, batch.data)
        written = Written(self._fd, batch.seq, batch.head)
        self.sync(written)
        self._size += len(batch.data)
        self.seq, self.head = batch.seq, batch.head
        self.mark_durable(written)
        if batch.rotate is not None:
            self.retention_due = True

    def write(self, batch: Prepared) -> Written:
        """Write a prepared batch that opens no segment to the page cache; no sync.

        The pipelined path: the writer calls this on its own thread (a write to the page
        cache is quick), then :meth:`sync` on a helper thread, then :meth:`mark_durable`.
        """
        if self._fd is None or batch.after != self.seq or batch.rotate is not None:
            raise AuditError("the batch cannot be written on the pipelined path")
        self._preallocate(len(batch.data))
        _write_all(self._fd, batch.data)
        self._size += len(batch.data)
        self.seq, self.head = batch.seq, batch.head
        return Written(self._fd, batch.seq, batch.head)

    def _preallocate(self, incoming: int) -> None:
        """Keep blocks reserved ahead of the data, so that a sync after an append need not
        also journal a block allocation (about half the cost of an ``fdatasync`` on ext4).
        Best effort: where it is not supported the writes simply allocate as they go."""
        if _allocate is None or self._fd is None or self._size + incoming <= self._allocated:
            return
        target = self._size + incoming + PREALLOCATE_BYTES
        if _allocate(self._fd, self._allocated, target - self._allocated):
            self._allocated = target
        else:
            self._allocated = self._size + incoming  # try again at the next batch

    def sync(self, written: Written) -> None:
        """Make the segment durable up to ``written`` (``fdatasync``; nothing when off).

        Safe on any thread, also while the next batch is being written.
        """
        if self.fsync != "off":
            _sync(written.fd)

    def mark_durable(self, written: Written) -> None:
        """Record that everything up to ``written`` is durable; point HEAD at it."""
        if written.seq > self.durable_seq:
            self.durable_seq, self.durable_head = written.seq, written.head
            if self._head_fd is not None:
                os.pwrite(self._head_fd, format_head(written.seq, written.head), 0)

    def append(self, records: list[dict[str, Any]]) -> None:
        """:meth:`prepare` and :meth:`commit` in one call."""
        self.commit(self.prepare(records))

    # ------------------------------------------------------------------ retention

    def retain(self) -> list[str]:
        """Delete the oldest closed segments past the age/size limits; note it in the chain.

        Never deletes the active segment, never leaves a hole (oldest first, stops at the
        first segment to keep) and never deletes records not yet forwarded (``keep_from``).
        """
        self.retention_due = False
        if self._retaining or not (self.retention_max_age_s or self.retention_max_bytes):
            return []
        segments = list_segments(self.directory)
        sizes = {s.path: s.path.stat().st_size for s in segments}
        total = sum(sizes.values())
        keep_from = self.keep_from() if self.keep_from is not None else None
        now = self._wall()
        doomed: list[Segment] = []
        reasons = set()
        for seg, nxt in zip(segments, segments[1:], strict=False):
            if seg.path == self._segment:
                break
            last_seq = nxt.first_seq - 1
            if keep_from is not None and last_seq >= keep_from:
                break
            old = self.retention_max_age_s and now - seg.path.stat().st_mtime > (
                self.retention_max_age_s
            )
            big = self.retention_max_bytes and total > self.retention_max_bytes
            if not (old or big):
                break
            reasons.add("age" if old else "size")
            doomed.append(seg)
            total -= sizes[seg.path]
        if not doomed:
            return []
        last = last_record(doomed[-1].path)
        if last is None:  # pragma: no cover - a closed segment always ends in a record
            return []
        names = [s.name for s in doomed]
        # The record goes first: if deleting fails, the chain still says what was meant.
        self._retaining = True
        try:
            self.append(
                [
                    {
                        "type": "retention",
                        "time": _now(),
                        "pruned": {
                            "segments": names,
                            "through_seq": int(last["seq"]),
                            "last_hash": str(last["hash"]),
                            "reasons": sorted(reasons),
                        },
                    }
                ]
            )
        finally:
            self._retaining = False
        for seg in doomed:
            try:
                seg.path.unlink()
            except OSError as exc:
                log.error("audit retention could not remove %s: %s", seg.name, exc)
        _fsync_dir(self.directory)
        log.info("audit retention removed %s", ", ".join(names))
        return names
