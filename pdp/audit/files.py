"""File primitives of the audit trail: sync, preallocation, whole writes, reading backwards,
and cutting a segment's tail (the one truncate both recovery paths use)."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .segment import AuditReadError, parse

#: How far ahead of the data the active segment's blocks are reserved.
PREALLOCATE_BYTES = 4 * 1024 * 1024
_FALLOC_FL_KEEP_SIZE = 1

Allocator = Callable[[int, int, int], bool]


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (created, removed files) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_data(fd: int) -> None:
    """``fdatasync`` (``fsync`` where there is none)."""
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)


def keep_size_allocator() -> Allocator | None:
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


def release_allocation(fd: int) -> None:
    """Give back the blocks reserved past the data (truncating to the current size)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, os.fstat(fd).st_size)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def rfind_newline(f: BinaryIO, end: int) -> int:
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


def cut_tail(path: Path, offset: int) -> dict[str, Any]:
    """Truncate ``path`` at ``offset``, sync it, and describe what was cut (for the chain)."""
    with path.open("r+b") as f:
        f.seek(offset)
        cut = f.read()
        f.truncate(offset)
        f.flush()
        os.fsync(f.fileno())
    return {
        "segment": path.name,
        "offset": offset,
        "bytes": len(cut),
        "sha256": hashlib.sha256(cut).hexdigest(),
    }
