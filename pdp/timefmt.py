"""Timestamps as every record and input spells them."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(unix_ns: int) -> str:
    """UTC RFC 3339 timestamp with microseconds, e.g. 2026-11-25T18:00:00.000001Z."""
    dt = datetime.fromtimestamp(unix_ns / 1e9, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
