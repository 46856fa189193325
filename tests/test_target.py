"""Layered enforcement at the target: the verification library, its JWKS cache and
introspection, its aiohttp middleware, and the example target service, against a real PDP
(the app on the session's OPA) over loopback."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from examples.target_service import create_app as create_target
from pdp.target import CredentialError, CredentialVerifier, verify_credential
from tests.credential_helpers import (  # noqa: F401  (the *_fixture names are fixtures)
    ADMIN,
    ALLOW_EXAMPLE,
    INTROSPECTOR,
    SUPPORT_BOT,
    Client,
    admin,
    decide,
    make_pdp_fixture,
    pdp_fixture,
)
from tests.identity_helpers import ec_key, sign

SCOPE = "tool.call:jira.search_issues:read"


def pdp_url(pdp: Client) -> str:
    return str(pdp.make_url("")).rstrip("/")


async def credential(pdp: Client, mint: Callable[..., str], **changes: Any) -> dict[str, Any]:
    example = {**ALLOW_EXAMPLE, "request": {**ALLOW_EXAMPLE["request"], **changes}}
    body = await decide(pdp, mint, example)
    assert body["allow"] is True, body
    found: dict[str, Any] = body["credential"]
    return found


def resign_payload(token: str, **claims: Any) -> str:
    """The same header and signature over changed claims (a tampered credential)."""
    header, payload, signature = token.split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=="))
    doc.update(claims)
    forged = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


@pytest.fixture
async def verifier(pdp: Client) -> Any:
    v = CredentialVerifier(pdp_url=pdp_url(pdp), audience="jira", introspection_token=INTROSPECTOR)
    yield v
    await v.close()


# --------------------------------------------------------------------------- verification


async def test_a_fresh_credential_passes_for_its_own_scope(
    pdp: Client, verifier: CredentialVerifier, mint: Callable[..., str]
) -> None:
    token = (await credential(pdp, mint))["token"]

    claims = await verifier.verify(token, SCOPE)

    assert (claims["sub"], claims["aud"], claims["scope"]) == (SUPPORT_BOT, "jira", SCOPE)
    assert verifier.jwks.fetches == 1


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (
            lambda t: resign_payload(t, scope="tool.call:jira.delete_project:delete"),
            "invalid_signature",
        ),
        (
            lambda t: resign_payload(t, sub="spiffe://acme.example/agents/other"),
            "invalid_signature",
        ),
        (lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"), "invalid_signature"),
        (lambda t: t.split(".")[0] + "." + t.split(".")[1] + ".", "malformed"),
        (lambda t: "not.a.jws!", "malformed"),
        (lambda t: sign(ec_key("k1")), "wrong_type"),  # an agent's JWT-SVID is not a credential
    ],
    ids=["scope-edited", "sub-edited", "signature-edited", "unsigned", "junk", "jwt-svid"],
)
async def test_a_tampered_or_foreign_credential_is_refused(
    pdp: Client,
    verifier: CredentialVerifier,
    mint: Callable[..., str],
    change: Callable[[str], str],
    code: str,
) -> None:
    token = change((await credential(pdp, mint))["token"])

    with pytest.raises(CredentialError) as info:
        await verifier.verify(token, SCOPE)

    assert info.value.code == code


async def test_an_expired_credential_is_refused_after_the_leeway(
    pdp: Client, verifier: CredentialVerifier, mint: Callable[..., str]
) -> None:
    token = (await credential(pdp, mint))["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    await verifier.verify(token, SCOPE)  # loads the JWKS

    def at(now: float) -> dict[str, Any]:
        return verify_credential(
            token, verifier.jwks.lookup, issuer="agent-pdp", audience="jira", scope=SCOPE,
            now=now, leeway_s=30,
        )  # fmt: skip

    at(claims["exp"] + 29)
    with pytest.raises(CredentialError) as info:
        at(claims["exp"] + 30)
    assert info.value.code == "expired"
    with pytest.raises(CredentialError) as early:
        at(claims["nbf"] - 31)
    assert early.value.code == "not_yet_valid"


@pytest.mark.parametrize(
    ("audience", "scope", "code"),
    [
        ("github", SCOPE, "wrong_audience"),
        ("jira", "tool.call:jira.search_issues:write", "insufficient_scope"),
        ("jira", "tool.call:jira.create_issue:read", "insufficient_scope"),
        ("jira", "tool.call:jira.search_issues", "insufficient_scope"),
    ],
    ids=["other-service", "other-operation", "other-tool", "prefix-of-scope"],
)
async def test_a_credential_for_another_service_or_operation_is_refused(
    pdp: Client, mint: Callable[..., str], audience: str, scope: str, code: str
) -> None:
    token = (await credential(pdp, mint))["token"]
    verifier = CredentialVerifier(pdp_url=pdp_url(pdp), audience=audience)
    try:
        with pytest.raises(CredentialError) as info:
            await verifier.verify(token, scope)
    finally:
        await verifier.close()

    assert info.value.code == code


async def test_an_unknown_kid_refetches_the_jwks_at_most_once_per_interval(
    pdp: Client, verifier: CredentialVerifier, mint: Callable[..., str]
) -> None:
    now = [1000.0]
    verifier.jwks.clock = lambda: now[0]
    verifier.jwks.min_refresh_interval_s = 1.0
    before = (await credential(pdp, mint))["token"]
    await verifier.verify(before, SCOPE)  # fetch 1
    await pdp.post("/v1/keys/rotate", json={}, headers=admin())
    after = (await credential(pdp, mint))["token"]
    stranger = sign(ec_key("junk-kid"), headers={"typ": "txn+jwt"})

    codes = []
    for token in (after, stranger, stranger):  # within the interval: no fetch
        with pytest.raises(CredentialError) as info:
            await verifier.verify(token, SCOPE)
        codes.append(info.value.code)
    now[0] += 1.0
    await verifier.verify(after, SCOPE)  # fetch 2 finds the new key
    for _ in range(3):
        with pytest.raises(CredentialError):
            await verifier.verify(stranger, SCOPE)  # junk kids cannot force fetches
    await verifier.verify(before, SCOPE)  # the retired key is still published

    assert codes == ["unknown_kid"] * 3
    assert verifier.jwks.fetches == 2


# --------------------------------------------------------------------------- recheck


async def recheck_credential(pdp: Client, mint: Callable[..., str]) -> str:
    """A credential whose decision obliged a recheck at the target (a prod write)."""
    token: str = (
        await credential(
            pdp,
            mint,
            action={"type": "tool.call", "name": "jira.create_issue", "operation": "write"},
            destination={**ALLOW_EXAMPLE["request"]["destination"], "environment": "prod"},
        )
    )["token"]
    assert jwt.decode(token, options={"verify_signature": False})["recheck_at_target"] is True
    return token


async def test_a_recheck_credential_is_introspected_and_refused_once_revoked(
    pdp: Client, verifier: CredentialVerifier, mint: Callable[..., str]
) -> None:
    token = await recheck_credential(pdp, mint)
    write = "tool.call:jira.create_issue:write"

    await verifier.verify(token, write)
    await pdp.post("/v1/credentials/revoke", json={"token": token}, headers=admin())
    with pytest.raises(CredentialError) as info:
        await verifier.verify(token, write)

    assert info.value.code == "inactive"


async def test_a_recheck_without_an_introspection_credential_fails_closed(
    pdp: Client, mint: Callable[..., str]
) -> None:
    token = await recheck_credential(pdp, mint)
    verifier = CredentialVerifier(pdp_url=pdp_url(pdp), audience="jira")
    try:
        with pytest.raises(CredentialError) as info:
            await verifier.verify(token, "tool.call:jira.create_issue:write")
    finally:
        await verifier.close()

    assert info.value.code == "recheck_unavailable"


# --------------------------------------------------------------------------- the example


@pytest.fixture
async def target(aiohttp_client: Any, pdp: Client) -> Client:
    verifier = CredentialVerifier(
        pdp_url=pdp_url(pdp), audience="jira", introspection_token=INTROSPECTOR
    )
    client: Client = await aiohttp_client(create_target(verifier))
    return client


async def test_the_example_target_rejects_calls_without_a_valid_credential(
    pdp: Client, target: Client, mint: Callable[..., str]
) -> None:
    token = (await credential(pdp, mint))["token"]

    def bearer(t: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {t}"}

    answers = {
        "no credential": await target.get("/rest/api/2/search"),
        "valid": await target.get("/rest/api/2/search", headers=bearer(token)),
        "tampered": await target.get(
            "/rest/api/2/search", headers=bearer(resign_payload(token, aud="jira"))
        ),
        "other operation": await target.post("/rest/api/2/issue", headers=bearer(token)),
        "unknown route": await target.get("/admin", headers=bearer(token)),
        "health": await target.get("/healthz"),
    }

    assert {name: r.status for name, r in answers.items()} == {
        "no credential": 401,
        "valid": 200,
        "tampered": 401,
        "other operation": 403,
        "unknown route": 403,
        "health": 200,
    }
    assert answers["no credential"].headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", error_description="missing"'
    )
    assert (
        answers["other operation"]
        .headers["WWW-Authenticate"]
        .startswith('Bearer error="insufficient_scope"')
    )
    assert (await answers["valid"].json())["for"] == SUPPORT_BOT


async def test_the_example_target_stops_a_disabled_agents_recheck_credential(
    pdp: Client, target: Client, mint: Callable[..., str]
) -> None:
    token = await recheck_credential(pdp, mint)
    headers = {"Authorization": f"Bearer {token}"}
    first = await target.post("/rest/api/2/issue", headers=headers)

    await pdp.post(
        "/v1/agents/disable", json={"spiffe_id": SUPPORT_BOT, "reason": "test"}, headers=admin()
    )
    second = await target.post("/rest/api/2/issue", headers=headers)

    assert (first.status, second.status) == (201, 401)
    assert (await second.json())["reason"] == "inactive"


async def test_jwks_fetch_failure_keeps_the_target_closed() -> None:
    verifier = CredentialVerifier(pdp_url="http://127.0.0.1:9", audience="jira")
    started = time.monotonic()
    try:
        with pytest.raises(CredentialError) as info:
            await verifier.verify(sign(ec_key("k"), headers={"typ": "txn+jwt"}), SCOPE)
    finally:
        await verifier.close()

    assert info.value.code == "unknown_kid"
    assert time.monotonic() - started < 5
