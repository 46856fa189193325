"""Timestamps as every record and input spells them."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(unix_ns: int) -> str:
    """UTC RFC 3339 timestamp with microseconds, e.g. 2026-11-25T18:00:00.000001Z."""
    dt = datetime.fromtimestamp(unix_ns / 1e9, tz=UTC)
    # strftime("%Y-%m-%dT%H:%M:%S.%fZ") spelled out: the same text, a third cheaper (it is
    # on every decision, twice); tests/test_timefmt.py holds the two equal.
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T"
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{dt.microsecond:06d}Z"
    )
