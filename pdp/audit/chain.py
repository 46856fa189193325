"""The hash chain: canonical JSON, record hashes, the genesis value.

Every line of the trail is one record, written as its canonical JSON. A record's ``hash``
is the SHA-256 (lower-case hex) of the canonical JSON of the record *without* its ``hash``
member; that JSON includes ``seq`` and ``prev`` (the ``hash`` of the record before it, or
:data:`GENESIS` for the first record of a trail), so each record commits to its position
and to everything before it.

Canonical JSON is what ``orjson.dumps(record, option=orjson.OPT_SORT_KEYS)`` produces:
object keys sorted by code point at every level, no insignificant whitespace, UTF-8 with
non-ASCII characters unescaped, integers as integers, floats in shortest round-trip form.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

#: ``prev`` of the first record of a trail.
GENESIS = "0" * 64


def canonical(doc: Any) -> bytes:
    """The canonical JSON of ``doc`` (sorted keys, no spaces, UTF-8)."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``record`` minus its ``hash`` member."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def seal(record: Mapping[str, Any], seq: int, prev: str) -> tuple[bytes, str]:
    """Give ``record`` its place in the chain; return its line (with newline) and hash."""
    body = {**record, "seq": seq, "prev": prev}
    body.pop("hash", None)
    digest = hashlib.sha256(canonical(body)).hexdigest()
    body["hash"] = digest
    return canonical(body) + b"\n", digest
