"""pdp.credentials.minting: the claims, lifetime and record of one minted credential.

A fast unit test (a fake key ring holding one real EC signing key; no store, no server):
every credential minted here is verified with the target library's own
:func:`~pdp.credential_token.verify_credential`, so what is asserted is what a target sees.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pdp.credential_token import CREDENTIAL_TYP, verify_credential
from pdp.credentials.minting import IssuedCredential, Minter
from pdp.identity import Identity
from pdp.keys import KeyRing, SigningKey

NOW = 1_800_000_000
KID = "kid-current"
AGENT = "spiffe://acme.example/agents/support-bot"
IDENTITY = Identity(
    authenticated=True,
    spiffe_id=AGENT,
    trust_domain="acme.example",
    path=("agents", "support-bot"),
)
REQUEST: dict[str, Any] = {
    "tenant": "acme",
    "action": {"type": "tool.call", "name": "jira.search_issues", "operation": "read"},
    "destination": {"type": "tool", "name": "jira", "url": "https://jira.internal/rest"},
}
DEFAULT_TTL = 60
MAX_TTL = 300

_PRIVATE = ec.generate_private_key(ec.SECP256R1())


class FakeKeyRing:
    """The two members Minter uses: the current key, and the latest exp it signed."""

    def __init__(self) -> None:
        self.current = SigningKey(KID, "ES256", _PRIVATE, CREDENTIAL_TYP)
        self.noted: list[float] = []

    def note_exp(self, exp: float) -> None:
        self.noted.append(exp)

    def lookup(self, kid: str) -> tuple[str, ec.EllipticCurvePublicKey] | None:
        return ("ES256", _PRIVATE.public_key()) if kid == KID else None


@pytest.fixture
def ring() -> FakeKeyRing:
    return FakeKeyRing()


def minter(ring: FakeKeyRing, now: float = NOW) -> Minter:
    return Minter(
        keyring=cast(KeyRing, ring),
        issuer="agent-pdp",
        default_ttl_s=DEFAULT_TTL,
        max_ttl_s=MAX_TTL,
        clock=lambda: now,
    )


def verified(ring: FakeKeyRing, issued: IssuedCredential) -> dict[str, Any]:
    """The claims as a target verifies them (signature, typ, issuer, audience, scope)."""
    return verify_credential(
        issued.token,
        ring.lookup,
        issuer="agent-pdp",
        audience=issued.audience,
        scope=issued.scope,
        now=NOW,
    )


def header(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    return cast(dict[str, Any], json.loads(base64.urlsafe_b64decode(segment + "==")))


def test_a_credential_carries_exactly_the_claims_of_the_allowed_action(
    ring: FakeKeyRing,
) -> None:
    issued = minter(ring).mint("dec-1", REQUEST, IDENTITY, None)

    claims = verified(ring, issued)

    assert claims == {
        "iss": "agent-pdp",
        "sub": AGENT,
        "aud": "jira",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + DEFAULT_TTL,
        "jti": issued.jti,
        "scope": "tool.call:jira.search_issues:read",
        "tenant": "acme",
        "txn": "dec-1",
        "req_wl": AGENT,
        "tctx": {
            "decision_id": "dec-1",
            "action": {"type": "tool.call", "name": "jira.search_issues", "operation": "read"},
            "destination": {"type": "tool", "name": "jira"},
            "sensitivity": "restricted",
        },
    }
    assert header(issued.token) == {"alg": "ES256", "kid": KID, "typ": CREDENTIAL_TYP}
    assert issued == IssuedCredential(
        issued.token, issued.jti, "jira", claims["scope"], NOW + DEFAULT_TTL, DEFAULT_TTL, KID
    )
    assert ring.noted == [NOW + DEFAULT_TTL]


def test_the_issue_time_is_the_clock_rounded_down(ring: FakeKeyRing) -> None:
    claims = verified(ring, minter(ring, now=NOW + 0.9).mint("d", REQUEST, IDENTITY, None))

    assert (claims["iat"], claims["nbf"], claims["exp"]) == (NOW, NOW, NOW + DEFAULT_TTL)


@pytest.mark.parametrize(
    ("credential_obligation", "ttl"),
    [
        pytest.param({"ttl_seconds": 120}, 120, id="the policy's ttl"),
        pytest.param({"ttl_seconds": MAX_TTL}, MAX_TTL, id="the policy's ttl at the cap"),
        pytest.param({"ttl_seconds": MAX_TTL + 1}, MAX_TTL, id="capped at the maximum"),
        pytest.param({"ttl_seconds": 1}, 1, id="one second"),
        pytest.param({"ttl_seconds": -5}, 1, id="a negative ttl becomes one second"),
        pytest.param({"ttl_seconds": 0}, DEFAULT_TTL, id="ttl 0 means the default"),
        pytest.param({"ttl_seconds": 2.7}, 2, id="a fractional ttl is truncated"),
        pytest.param({}, DEFAULT_TTL, id="no ttl: the default"),
        pytest.param(None, DEFAULT_TTL, id="no credential obligation: the default"),
    ],
)
def test_the_lifetime_is_the_policys_ttl_within_one_second_and_the_cap(
    ring: FakeKeyRing, credential_obligation: dict[str, Any] | None, ttl: int
) -> None:
    obligations = {"credential": credential_obligation}

    issued = minter(ring).mint("d", REQUEST, IDENTITY, obligations)

    assert (issued.expires_in, issued.exp, verified(ring, issued)["exp"]) == (
        ttl,
        NOW + ttl,
        NOW + ttl,
    )
    assert ring.noted == [NOW + ttl]


def test_the_policy_can_name_the_audience(ring: FakeKeyRing) -> None:
    obligations = {"credential": {"audience": "jira-prod"}}

    issued = minter(ring).mint("d", REQUEST, IDENTITY, obligations)

    assert (issued.audience, verified(ring, issued)["aud"]) == ("jira-prod", "jira-prod")


def test_the_transaction_is_the_task_and_the_sensitivity_the_requests_label(
    ring: FakeKeyRing,
) -> None:
    request = {**REQUEST, "task": {"id": "T-42"}, "data": {"sensitivity": "internal"}}

    claims = verified(ring, minter(ring).mint("d", request, IDENTITY, None))

    assert (claims["txn"], claims["tctx"]["sensitivity"]) == ("T-42", "internal")


@pytest.mark.parametrize(
    "request_part",
    [{"task": {}}, {"task": None}, {"data": {}}, {"data": None}, {"agent": None}],
    ids=["empty-task", "null-task", "empty-data", "null-data", "null-agent"],
)
def test_absent_task_and_data_fall_back_to_the_decision_and_the_most_restrictive_label(
    ring: FakeKeyRing, request_part: dict[str, Any]
) -> None:
    claims = verified(ring, minter(ring).mint("dec-9", {**REQUEST, **request_part}, IDENTITY, {}))

    assert (claims["txn"], claims["tctx"]["sensitivity"]) == ("dec-9", "restricted")
    assert "act" not in claims


@pytest.mark.parametrize(
    ("on_behalf_of", "act"),
    [
        ({"subject": "user:alice"}, {"sub": "user:alice"}),
        ({"subject": "user:alice", "tenant": "acme"}, {"sub": "user:alice", "tenant": "acme"}),
    ],
    ids=["subject", "subject-and-tenant"],
)
def test_the_user_the_agent_acts_for_is_the_act_claim(
    ring: FakeKeyRing, on_behalf_of: dict[str, Any], act: dict[str, Any]
) -> None:
    request = {**REQUEST, "agent": {"on_behalf_of": on_behalf_of}}

    claims = verified(ring, minter(ring).mint("d", request, IDENTITY, None))

    assert (claims["act"], claims["sub"]) == (act, AGENT)


def test_an_empty_delegation_adds_no_act_claim(ring: FakeKeyRing) -> None:
    request = {**REQUEST, "agent": {"on_behalf_of": {}}}

    assert "act" not in verified(ring, minter(ring).mint("d", request, IDENTITY, None))


@pytest.mark.parametrize(
    ("recheck", "claimed"),
    [(True, True), (False, False), ("yes", False), (1, False), (None, False)],
    ids=["true", "false", "a-string", "one", "absent"],
)
def test_only_a_true_recheck_obligation_makes_the_target_recheck(
    ring: FakeKeyRing, recheck: Any, claimed: bool
) -> None:
    obligations = {"recheck_at_target": recheck}

    claims = verified(ring, minter(ring).mint("d", REQUEST, IDENTITY, obligations))

    assert claims.get("recheck_at_target", False) is claimed
    assert ("recheck_at_target" in claims) is claimed


def test_the_approval_the_allow_used_is_carried_only_when_there_is_one(ring: FakeKeyRing) -> None:
    with_approval = minter(ring).mint("d", REQUEST, IDENTITY, None, approval_id="ap-7")
    without = minter(ring).mint("d", REQUEST, IDENTITY, None)

    assert verified(ring, with_approval)["approval_id"] == "ap-7"
    assert "approval_id" not in verified(ring, without)


def test_every_credential_gets_its_own_128_bit_jti(ring: FakeKeyRing) -> None:
    jtis = {minter(ring).mint("d", REQUEST, IDENTITY, None).jti for _ in range(20)}

    assert len(jtis) == 20
    # token_urlsafe(16): 16 random bytes, 22 base64url characters.
    assert {len(base64.urlsafe_b64decode(jti + "==")) for jti in jtis} == {16}


def test_the_response_carries_the_token_once_and_the_record_never(ring: FakeKeyRing) -> None:
    issued = minter(ring).mint("d", REQUEST, IDENTITY, {"credential": {"ttl_seconds": 90}})

    assert issued.response() == {
        "token": issued.token,
        "token_type": "Bearer",
        "expires_in": 90,
        "audience": "jira",
        "scope": "tool.call:jira.search_issues:read",
        "jti": issued.jti,
    }
    assert issued.record() == {
        "jti": issued.jti,
        "aud": "jira",
        "scope": "tool.call:jira.search_issues:read",
        "exp": NOW + 90,
    }
    assert issued.token not in json.dumps(issued.record())


def test_an_issued_credential_cannot_be_altered_after_signing(ring: FakeKeyRing) -> None:
    # The response and the record are read from it after minting: they must describe the
    # token that was signed.
    issued = minter(ring).mint("d", REQUEST, IDENTITY, None)

    with pytest.raises(dataclasses.FrozenInstanceError):
        issued.scope = "tool.call:jira.delete_project:delete"  # type: ignore[misc]


def test_without_a_clock_the_credential_is_issued_at_the_wall_clock(ring: FakeKeyRing) -> None:
    before = int(time.time())
    issued = Minter(
        keyring=cast(KeyRing, ring), issuer="agent-pdp", default_ttl_s=60, max_ttl_s=300
    ).mint("d", REQUEST, IDENTITY, None)
    after = int(time.time())

    assert before <= issued.exp - 60 <= after
