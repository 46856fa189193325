"""canonical_url keeps its readings: the same answer on a hit, a refusal never kept."""

from __future__ import annotations

import pytest

from pdp.urls import CACHE_SIZE, URLError, canonical_url


def test_a_repeated_url_gets_the_same_reading() -> None:
    first = canonical_url("https://JIRA.internal.acme./rest")
    again = canonical_url("https://JIRA.internal.acme./rest")

    assert again == first
    assert (first.host, first.port, first.url) == (
        "jira.internal.acme",
        443,
        "https://jira.internal.acme/rest",
    )


def test_a_refused_url_is_refused_every_time() -> None:
    for _ in range(3):
        with pytest.raises(URLError, match="userinfo"):
            canonical_url("https://attacker.example@jira.internal.acme/")


def test_the_cache_is_bounded() -> None:
    canonical_url.cache_clear()
    for i in range(CACHE_SIZE + 10):
        canonical_url(f"https://host-{i}.example/")

    assert canonical_url.cache_info().currsize == CACHE_SIZE
