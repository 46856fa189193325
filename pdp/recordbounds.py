"""Bounds on what one audit record may hold.

A record keeps the replayable OPA input, and the input carries the free-form values a
gateway sends (``action.arguments``, ``context``). Unbounded, one client could fill the
fsynced trail with whatever it posts (250 KB a request, 23 MB/s from one client, pushing
genuine records out under size retention). So:

* a free-form value whose JSON is larger than the bound is recorded as its digest and
  size, ``{"omitted": true, "sha256": "<hex>", "size": <bytes>}``: never dropped
  silently, and still provably the value the decision saw;
* the bound is ``PDP_AUDIT_MAX_VALUE_BYTES`` (16 KiB by default) for a request whose agent
  authenticated, and :data:`UNAUTHENTICATED_VALUE_BYTES` (256) for one whose did not,
  whose prompt is also kept by hash only: an unauthenticated request cannot make a record
  larger than :data:`UNAUTHENTICATED_RECORD_BYTES` whatever it sends;
* argument names longer than :data:`MAX_KEY_CHARS` are recorded as ``sha256:<hex>``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import orjson

__all__ = [
    "MAX_KEY_CHARS",
    "UNAUTHENTICATED_RECORD_BYTES",
    "UNAUTHENTICATED_VALUE_BYTES",
    "bound_key",
    "bound_value",
]

#: Free-form values of an unauthenticated request are recorded in full up to this size.
UNAUTHENTICATED_VALUE_BYTES: Final = 256
#: What a record of an unauthenticated request can grow to at most (tested).
UNAUTHENTICATED_RECORD_BYTES: Final = 32 * 1024
#: Longer argument names are recorded by digest.
MAX_KEY_CHARS: Final = 128


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bound_value(value: Any, limit: int) -> Any:
    """``value`` if its JSON is at most ``limit`` bytes, else its digest and size."""
    try:
        encoded = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON (cannot come from the strict reader): keep a marker
        return {"omitted": True, "sha256": None, "size": None}
    if len(encoded) <= limit:
        return value
    return {"omitted": True, "sha256": _digest(encoded), "size": len(encoded)}


def bound_key(key: str) -> str:
    """An argument name, or ``sha256:<hex>`` of it when it is longer than MAX_KEY_CHARS."""
    if len(key) <= MAX_KEY_CHARS:
        return key
    return "sha256:" + _digest(key.encode("utf-8", "surrogatepass"))
