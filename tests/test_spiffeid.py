"""SPIFFE IDs (pdp.identity.spiffeid): every refusal names what is wrong, exactly, and the
limits sit where the SPIFFE-ID spec puts them. Pure functions."""

from __future__ import annotations

import pytest

from pdp.identity.spiffeid import (
    MAX_SPIFFE_ID_LENGTH,
    check_trust_domain,
    clip,
    parse_spiffe_id,
    shorten,
)

HINT = "lowercase letters, digits, '.', '-' and '_'"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (7, "a SPIFFE ID must be a string, not int"),
        ("", "SPIFFE ID is empty"),
        ("spiffe://acme.example/é", "SPIFFE ID must be ASCII"),
        ("https://acme.example/a", "'https://acme.example/a' is not a SPIFFE ID: the scheme must "
         "be 'spiffe://'"),
        ("spiffe://acme.example/a?x=1", "a query is not allowed in a SPIFFE ID"),
        ("spiffe://acme.example/a#f", "a fragment is not allowed in a SPIFFE ID"),
        ("spiffe:///a", "trust domain is missing"),
        ("spiffe://u@acme.example/a", "userinfo is not allowed in a SPIFFE ID"),
        ("spiffe://acme.example:8443/a", "a port is not allowed in a SPIFFE ID trust domain"),
        ("spiffe://acme$/a", f"trust domain 'acme$' may contain only {HINT}"),
        ("spiffe://Acme.example/a", f"trust domain 'Acme.example' may contain only {HINT} "
         "(it must be lowercase)"),
        ("spiffe://acme.example/a/", "SPIFFE ID path has a trailing '/'"),
        ("spiffe://acme.example/a//b", "SPIFFE ID path has an empty segment ('//')"),
        ("spiffe://acme.example/a/../b", "SPIFFE ID path segment '..' is not allowed"),
        ("spiffe://acme.example/./b", "SPIFFE ID path segment '.' is not allowed"),
        ("spiffe://acme.example/a%20b", "SPIFFE ID path segment 'a%20b' may contain only "
         "letters, digits, '.', '-' and '_'"),
    ],
)  # fmt: skip
def test_an_invalid_spiffe_id_is_refused_saying_why(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_spiffe_id(value)  # type: ignore[arg-type]

    assert str(info.value) == message


def test_a_valid_spiffe_id_splits_into_domain_and_path() -> None:
    assert parse_spiffe_id("spiffe://acme.example/agents/Bot-1_x.y") == (
        "acme.example",
        ("agents", "Bot-1_x.y"),
    )
    assert parse_spiffe_id("spiffe://acme.example") == ("acme.example", ())


def test_the_id_length_limit_is_inclusive() -> None:
    prefix = "spiffe://acme.example/"
    longest = prefix + "a" * (MAX_SPIFFE_ID_LENGTH - len(prefix))

    assert parse_spiffe_id(longest)[1] == ("a" * (MAX_SPIFFE_ID_LENGTH - len(prefix)),)
    with pytest.raises(ValueError) as info:
        parse_spiffe_id(longest + "a")
    assert str(info.value) == "SPIFFE ID is longer than 2048 bytes"


def test_the_trust_domain_length_limit_is_inclusive() -> None:
    check_trust_domain("a" * 255)
    with pytest.raises(ValueError) as info:
        check_trust_domain("a" * 256)
    assert str(info.value) == "trust domain is longer than 255 characters"


def test_shorten_keeps_text_up_to_the_limit_and_cuts_with_an_ellipsis() -> None:
    assert shorten("a" * 160) == "a" * 160
    assert shorten("a" * 161) == "a" * 157 + "..."
    assert shorten("abcdef", 5) == "ab..."
    assert shorten("abcde", 5) == "abcde"


def test_clip_is_a_bounded_repr() -> None:
    assert clip("x") == "'x'"
    assert clip("a" * 100) == "'" + "a" * 76 + "..."
    assert len(clip("a" * 100)) == 80
    assert clip("a" * 78) == "'" + "a" * 78 + "'"
