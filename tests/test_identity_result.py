"""pdp.identity.result: the Identity value itself (its defaults, immutability, the OPA input it
becomes and the failure constructor), without verifying any token (tests/test_identity.py does
that end to end)."""

from __future__ import annotations

import dataclasses

import pytest

from pdp.identity import Identity

BOT = "spiffe://acme.example/agents/support-bot"


def test_an_identity_defaults_to_nothing_known() -> None:
    identity = Identity(authenticated=True)
    assert (
        identity.spiffe_id,
        identity.trust_domain,
        identity.path,
        identity.expires_at,
        identity.jti,
        identity.kid,
        identity.error_code,
        identity.error_message,
    ) == (None, None, (), None, None, None, None, None)


def test_an_authenticated_identity_without_details_gives_nulls_and_an_empty_path() -> None:
    assert Identity(authenticated=True).to_input() == {
        "authenticated": True,
        "spiffe_id": None,
        "trust_domain": None,
        "path": [],
        "expires_at": None,
        "jti": None,
        "error": None,
    }


def test_the_input_path_is_a_fresh_list_and_the_kid_is_not_in_the_input() -> None:
    identity = Identity(
        authenticated=True,
        spiffe_id=BOT,
        trust_domain="acme.example",
        path=("agents", "support-bot"),
        expires_at=1_800_000_300,
        jti="j-1",
        kid="k-1",
    )
    document = identity.to_input()
    assert document["path"] == ["agents", "support-bot"]
    assert isinstance(document["path"], list)
    assert "kid" not in document
    document["path"].append("x")
    assert identity.path == ("agents", "support-bot")


def test_a_failed_identity_gives_nulls_whatever_it_carries() -> None:
    failed = Identity(
        authenticated=False,
        spiffe_id=BOT,
        trust_domain="acme.example",
        path=("agents", "support-bot"),
        expires_at=1_800_000_300,
        jti="j-1",
        error_code="authn.expired",
        error_message="token has expired",
    )
    assert failed.to_input() == {
        "authenticated": False,
        "spiffe_id": None,
        "trust_domain": None,
        "path": None,
        "expires_at": None,
        "jti": None,
        "error": {"code": "authn.expired", "message": "token has expired"},
    }


def test_a_failed_identity_with_only_a_code_gets_the_fallback_message_and_vice_versa() -> None:
    only_code = Identity(authenticated=False, error_code="authn.expired").to_input()
    assert only_code["error"] == {"code": "authn.expired", "message": "not authenticated"}
    only_message = Identity(authenticated=False, error_message="no token").to_input()
    assert only_message["error"] == {"code": "authn.unauthenticated", "message": "no token"}


def test_an_identity_is_frozen_and_slotted() -> None:
    identity = Identity(authenticated=True, spiffe_id=BOT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity.spiffe_id = "spiffe://evil.example/x"  # type: ignore[misc]
    assert not hasattr(identity, "__dict__")
    assert Identity(authenticated=True, spiffe_id=BOT) == identity


def test_failure_builds_an_unauthenticated_identity_with_its_code_and_message() -> None:
    failed = Identity.failure("authn.expired", "token has expired")
    assert failed == Identity(
        authenticated=False, error_code="authn.expired", error_message="token has expired"
    )
    assert failed.to_input()["error"] == {
        "code": "authn.expired",
        "message": "token has expired",
    }


@pytest.mark.parametrize("code", ["expired", "authn", "xauthn.expired", "AUTHN.expired", ""])
def test_failure_refuses_a_code_outside_authn_and_names_it(code: str) -> None:
    with pytest.raises(ValueError) as caught:
        Identity.failure(code, "token has expired")
    assert str(caught.value) == f"identity error codes start with 'authn.', got {code!r}"
