"""The trail on disk: :class:`AuditLog` owns the files of an audit directory.

It takes the directory's ``LOCK``, has the tail repaired after a crash
(:mod:`pdp.audit.repair`), chains and appends records (write, then ``fdatasync`` unless the
fsync mode is ``off``), rotates segments by size and age, applies retention
(:mod:`pdp.audit.retention`), and keeps ``HEAD`` current. File primitives are in
:mod:`pdp.audit.files`. It is synchronous and not thread-safe:
:class:`~pdp.audit.writer.AuditWriter` is its one caller, one call at a time, except that
:meth:`AuditLog.sync` of a written batch may run on a helper thread while the next batch is
prepared and written.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ..errors import AuditError
from ..timefmt import rfc3339
from . import repair, retention
from .chain import GENESIS, seal
from .files import (
    PREALLOCATE_BYTES,
    fsync_dir,
    keep_size_allocator,
    last_record,
    release_allocation,
    sync_data,
    write_all,
)
from .segment import HEAD_FILE, LOCK_FILE, format_head, list_segments, segment_name

__all__ = [
    "FSYNC_MODES",
    "PREALLOCATE_BYTES",
    "AuditError",
    "AuditLog",
    "Prepared",
    "Written",
    "last_record",
    "pdp_version",
]

log = logging.getLogger("pdp.audit")

FSYNC_MODES = ("batch", "always", "off")

# Module attributes so that tests can fail a sync or a write (monkeypatch).
_sync = sync_data
_write_all = write_all
#: Reserves blocks ahead of the data where the platform can (None: it cannot).
_allocate = keep_size_allocator()


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
        preallocate: bool = True,
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
        self._allocate = _allocate if preallocate else None
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
        found = repair.recover_from_disk(self.directory)
        if found.notes["previous"] is not None:
            self.seq, self.head = found.seq, found.head
            self.durable_seq, self.durable_head = found.seq, found.head
        self._resume({"reason": "start", **found.notes})

    def recover(self, error: str) -> None:
        """After a failed write or sync: cut back to the last durable record and resume."""
        self._close_fds()
        self.seq, self.head = self.durable_seq, self.durable_head
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock()
        notes = repair.recover_to(self.directory, self.seq, self.head)
        self._resume({"reason": "recovery", "error": error[:500], **notes})

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
            release_allocation(self._fd)
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
            release_allocation(self._fd)
            os.close(self._fd)
            self._fd = None
        path = self.directory / segment_name(self.seq + 1)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        self._segment = path
        self._size = self._allocated = 0
        self._opened_at = self._monotonic()
        fsync_dir(self.directory)

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
        seal_with: Callable[[int, str], dict[str, Any]] | None = None,
    ) -> Prepared:
        """Chain and serialise ``records`` (CPU only, no I/O) for :meth:`commit`.

        When the active segment is due for rotation, the batch starts with the header
        record of the next segment, which :meth:`commit` opens. ``seal_with(seq, hash)`` of
        the batch's last record, when given, makes the record that ends the batch (a signed
        checkpoint, :mod:`pdp.audit.checkpoint`). Nothing changes until the batch is
        committed; prepare and commit one batch at a time.
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
            line, head = seal(rec, seq, head)
            lines.append(line)
        if seal_with is not None:
            line, head = seal(seal_with(seq, head), seq + 1, head)
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
        allocate = self._allocate
        if allocate is None or self._fd is None or self._size + incoming <= self._allocated:
            return
        target = self._size + incoming + PREALLOCATE_BYTES
        if allocate(self._fd, self._allocated, target - self._allocated):
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
        stats = {s.path: s.path.stat() for s in segments}
        planned = retention.plan(
            segments,
            active=self._segment,
            sizes={p: st.st_size for p, st in stats.items()},
            mtimes={p: st.st_mtime for p, st in stats.items()},
            now=self._wall(),
            max_age_s=self.retention_max_age_s,
            max_bytes=self.retention_max_bytes,
            keep_from=self.keep_from() if self.keep_from is not None else None,
        )
        doomed = planned.doomed
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
                            "reasons": planned.reasons,
                        },
                    }
                ]
            )
        finally:
            self._retaining = False
        retention.remove(self.directory, doomed)
        log.info("audit retention removed %s", ", ".join(names))
        return names
