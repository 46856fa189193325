"""rfc3339: the text strftime gives, for any instant from 1970 to 2099."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from pdp.timefmt import rfc3339


def _strftime(unix_ns: int) -> str:
    return datetime.fromtimestamp(unix_ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(st.integers(min_value=0, max_value=4_102_444_799_999_999_999))
def test_rfc3339_is_strftimes_text(unix_ns: int) -> None:
    assert rfc3339(unix_ns) == _strftime(unix_ns)


def test_rfc3339_pads_every_field() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"
    assert rfc3339(1_796_052_388_000_001_000) == "2026-11-30T15:26:28.000001Z"
