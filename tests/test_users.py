"""User assertions: verified like SVIDs, their claims reach policy as input.user, and a
delegation is marked verified only for the user they name."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pdp.normalize import normalize
from pdp.users import UserAssertionVerifier
from tests.audit_helpers import records
from tests.credential_helpers import (  # noqa: F401  (the *_fixture names are fixtures)
    ALLOW_EXAMPLE,
    SUPPORT_BOT,
    Client,
    Factory,
    make_pdp_fixture,
)
from tests.test_normalize import ALICE  # a verified identity

ISSUER = "https://idp.acme.example"
AUDIENCE = "agent-pdp"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def jwks() -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key()))
    return {"keys": [{**jwk, "kid": "idp-1", "alg": "ES256", "use": "sig"}]}


def assertion(key: Any = KEY, kid: str = "idp-1", alg: str = "ES256", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user:alice@acme.example", "iat": now,
            "exp": now + 300, "tenant": "acme", **claims}  # fmt: skip
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def verifier() -> UserAssertionVerifier:
    return UserAssertionVerifier(ISSUER, jwks(), AUDIENCE, leeway_s=0)


def test_a_valid_assertion_gives_its_claims(verifier: UserAssertionVerifier) -> None:
    user = verifier.verify(assertion(email="alice@acme.example"))

    assert user is not None
    assert (user["iss"], user["sub"], user["tenant"]) == (ISSUER, "user:alice@acme.example", "acme")
    assert user["claims"]["email"] == "alice@acme.example"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: assertion(key=OTHER_KEY), id="signed by another key"),
        pytest.param(lambda: assertion(kid="idp-2"), id="unknown kid"),
        pytest.param(lambda: assertion(iss="https://evil.example"), id="another issuer"),
        pytest.param(lambda: assertion(aud="someone-else"), id="another audience"),
        pytest.param(lambda: assertion(exp=int(time.time()) - 10), id="expired"),
        pytest.param(lambda: assertion(sub=None), id="no subject"),
        pytest.param(
            lambda: jwt.encode(
                {"iss": ISSUER, "aud": AUDIENCE, "sub": "u", "exp": 2**40},
                "a-shared-secret-of-forty-bytes-or-so-xx",
                algorithm="HS256",
                headers={"kid": "idp-1"},
            ),  # fmt: skip
            id="a shared-secret alg",
        ),
        pytest.param(lambda: "not.a.jwt", id="malformed"),
    ],
)
def test_an_assertion_that_does_not_verify_is_ignored(
    verifier: UserAssertionVerifier, token: Callable[[], str]
) -> None:
    assert verifier.verify(token()) is None


REQUEST = {
    "tenant": "acme",
    "agent": {"on_behalf_of": {"subject": "user:alice@acme.example", "tenant": "acme"}},
    "action": {"type": "tool.call", "name": "jira.search_issues", "operation": "read"},
    "destination": {"type": "tool", "name": "jira"},
}


@pytest.mark.parametrize(
    ("user", "verified"),
    [
        ({"iss": ISSUER, "sub": "user:alice@acme.example", "tenant": "acme", "claims": {}}, True),
        ({"iss": ISSUER, "sub": "user:alice@acme.example", "claims": {}}, True),
        ({"iss": ISSUER, "sub": "user:bob@acme.example", "claims": {}}, False),
        (
            {"iss": ISSUER, "sub": "user:alice@acme.example", "tenant": "globex", "claims": {}},
            False,
        ),
        (None, False),
    ],
    ids=["same user and tenant", "same user", "another user", "another tenant", "none"],
)
def test_a_delegation_is_verified_only_for_the_user_the_assertion_names(
    user: dict[str, Any] | None, verified: bool
) -> None:
    doc = normalize(REQUEST, ALICE, 0, user=user)

    assert doc["agent"]["on_behalf_of"]["verified"] is verified
    assert ("user" in doc) is (user is not None)


async def test_the_claims_reach_policy_and_the_record_end_to_end(
    make_pdp: Factory, mint: Callable[..., str], tmp_path: Path
) -> None:
    keys = tmp_path / "idp-jwks.json"
    keys.write_text(json.dumps(jwks()))
    pdp: Client = await make_pdp(user_assertion_issuer=ISSUER, user_assertion_jwks=keys)
    request = copy.deepcopy(ALLOW_EXAMPLE["request"])
    request["agent"] = {
        **request["agent"],
        "token": mint(SUPPORT_BOT),
        "user_assertion": assertion(),
    }

    resp = await pdp.post("/v1/decisions", json=request)
    body = await resp.json()
    await pdp.close()

    assert (resp.status, body["allow"]) == (200, True)
    (record,) = [r for r in records(tmp_path / "state" / "audit") if r["type"] == "decision"]
    assert record["input"]["user"]["sub"] == "user:alice@acme.example"
    assert record["input"]["agent"]["on_behalf_of"]["verified"] is True
