"""pdp.target, the target library's own logic against a stand-in PDP: the JWKS cache (age,
rate limit, concurrent callers, bad answers, unusable keys), introspection (what is sent,
what counts as active, failing closed), the Bearer header parser and the middleware's
RFC 6750 answers.

The stand-in PDP is a small aiohttp app serving a JWKS and an introspection endpoint whose
answers each test sets, so error paths a real PDP never produces on demand can be tested;
tests/test_target.py runs the same library against the real PDP. Credentials are signed
with the PDP's own signer (:class:`pdp.keys.SigningKey`). No conftest fixtures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from multidict import CIMultiDict

from pdp import credential_token
from pdp.jws import b64url
from pdp.keys import SigningKey
from pdp.target import (
    CLAIMS,
    CREDENTIAL_TYP,
    CredentialError,
    CredentialVerifier,
    JWKSCache,
    bearer_token,
    credential_middleware,
)

AGENT = "spiffe://acme.example/agents/support-bot"
READ = "tool.call:jira.search_issues:read"
WRITE = "tool.call:jira.create_issue:write"
INTROSPECTOR = "introspection-secret"


def new_key(kid: str) -> tuple[SigningKey, dict[str, Any]]:
    """A PDP signing key and its public JWK as the PDP publishes it."""
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return SigningKey(kid, "ES256", private, CREDENTIAL_TYP), {
        **jwk,
        "kid": kid,
        "use": "sig",
        "alg": "ES256",
    }


SIGNER, JWK = new_key("pdp-1")
NEXT_SIGNER, NEXT_JWK = new_key("pdp-2")


def credential(signer: SigningKey = SIGNER, **changes: Any) -> str:
    """A credential for READ at jira, valid now; ``name=None`` drops a claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "agent-pdp",
        "sub": AGENT,
        "aud": "jira",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": "jti-1",
        "scope": READ,
        **changes,
    }
    return signer.sign(orjson.dumps({k: v for k, v in claims.items() if v is not None}))


@dataclass
class FakePDP:
    """What the stand-in PDP answers, and what it was asked."""

    jwks: Any = field(default_factory=lambda: {"keys": [JWK]})
    jwks_status: int = 200
    jwks_raw: bytes | None = None
    jwks_delay_s: float = 0.0
    introspection: Any = field(default_factory=lambda: {"active": True})
    introspection_status: int = 200
    jwks_fetches: int = 0
    introspected: list[tuple[str | None, str]] = field(default_factory=list)

    def app(self) -> web.Application:
        async def jwks(request: web.Request) -> web.Response:
            self.jwks_fetches += 1
            if self.jwks_delay_s:
                await asyncio.sleep(self.jwks_delay_s)
            body = self.jwks_raw if self.jwks_raw is not None else orjson.dumps(self.jwks)
            return web.Response(body=body, status=self.jwks_status)

        async def introspect(request: web.Request) -> web.Response:
            form = await request.post()
            self.introspected.append((request.headers.get("Authorization"), str(form["token"])))
            answer = self.introspection
            body = answer if isinstance(answer, bytes) else orjson.dumps(answer)
            return web.Response(body=body, status=self.introspection_status)

        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", jwks)
        app.router.add_post("/v1/credentials/introspect", introspect)
        return app


@dataclass
class Stand:
    pdp: FakePDP
    url: str


@pytest.fixture
async def stand() -> AsyncIterator[Stand]:
    pdp = FakePDP()
    server = TestServer(pdp.app())
    await server.start_server()
    try:
        yield Stand(pdp, str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()


@pytest.fixture
async def verifier(stand: Stand) -> AsyncIterator[CredentialVerifier]:
    v = CredentialVerifier(
        pdp_url=stand.url + "/", audience="jira", introspection_token=INTROSPECTOR
    )
    yield v
    await v.close()


async def refused(verifier: CredentialVerifier, token: str, scope: str | None = READ) -> str:
    with pytest.raises(CredentialError) as info:
        await verifier.verify(token, scope)
    return info.value.code


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- offline


async def test_a_credential_verifies_against_the_jwks_fetched_once(
    stand: Stand, verifier: CredentialVerifier
) -> None:
    token = credential()

    first = await verifier.verify(token, READ)
    second = await verifier.verify(token, READ)

    assert first == second and (first["sub"], first["scope"]) == (AGENT, READ)
    assert (stand.pdp.jwks_fetches, verifier.jwks.fetches) == (1, 1)
    assert stand.pdp.introspected == []


async def test_the_default_issuer_is_agent_pdp(verifier: CredentialVerifier) -> None:
    assert verifier.issuer == "agent-pdp"
    assert await refused(verifier, credential(iss="someone-else")) == "wrong_issuer"


async def test_a_credential_for_another_service_is_refused(verifier: CredentialVerifier) -> None:
    assert verifier.audience == "jira"
    assert await refused(verifier, credential(aud="github")) == "wrong_audience"


async def test_the_default_leeway_is_30_seconds(
    verifier: CredentialVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = credential()
    exp = (await verifier.verify(token, READ))["exp"]

    def at(now: float) -> None:
        monkeypatch.setattr(credential_token, "time", SimpleNamespace(time=lambda: now))

    at(exp + 29.9)
    assert (await verifier.verify(token, READ))["exp"] == exp
    at(exp + 30)
    assert await refused(verifier, token) == "expired"


def with_header(token: str, header: dict[str, Any]) -> str:
    """``token`` with its header replaced (signature no longer valid, not reached)."""
    return ".".join([b64url(orjson.dumps(header)).decode(), *token.split(".")[1:]])


@pytest.mark.parametrize("kid", [{}, {"kid": ""}, {"kid": 7}], ids=["none", "empty", "number"])
async def test_a_credential_without_a_kid_causes_no_jwks_fetch(
    stand: Stand, verifier: CredentialVerifier, kid: dict[str, Any]
) -> None:
    token = with_header(credential(), {"alg": "ES256", "typ": CREDENTIAL_TYP, **kid})

    assert await refused(verifier, token) == "unknown_kid"
    assert stand.pdp.jwks_fetches == 0


# --------------------------------------------------------------------------- JWKS cache


async def test_the_jwks_is_fetched_again_when_300_seconds_old(
    stand: Stand, verifier: CredentialVerifier
) -> None:
    clock = Clock()
    verifier.jwks.clock = clock
    token = credential()
    await verifier.verify(token, READ)

    clock.now += 299.9
    await verifier.verify(token, READ)
    assert stand.pdp.jwks_fetches == 1
    clock.now += 0.1
    await verifier.verify(token, READ)
    assert stand.pdp.jwks_fetches == 2


async def test_an_unknown_kid_refetches_at_most_once_a_second(
    stand: Stand, verifier: CredentialVerifier
) -> None:
    clock = Clock()
    verifier.jwks.clock = clock
    await verifier.verify(credential(), READ)  # fetch 1
    stand.pdp.jwks = {"keys": [JWK, NEXT_JWK]}  # the PDP rotated
    rotated = credential(NEXT_SIGNER)

    clock.now += 0.99
    assert await refused(verifier, rotated) == "unknown_kid"
    assert stand.pdp.jwks_fetches == 1
    clock.now += 0.01
    assert (await verifier.verify(rotated, READ))["sub"] == AGENT
    assert (stand.pdp.jwks_fetches, verifier.jwks.fetches) == (2, 2)


async def test_concurrent_callers_wait_for_one_fetch(stand: Stand) -> None:
    session = aiohttp.ClientSession()
    try:
        cache = JWKSCache(stand.url + "/.well-known/jwks.json", session, min_refresh_interval_s=0)
        stand.pdp.jwks_delay_s = 0.05

        await asyncio.gather(cache.ensure("pdp-1"), cache.ensure("pdp-1"), cache.ensure("pdp-1"))

        assert stand.pdp.jwks_fetches == 1
        assert cache.lookup("pdp-1") is not None
    finally:
        await session.close()


async def test_a_jwks_cache_on_its_own_refetches_at_most_once_a_second(stand: Stand) -> None:
    clock = Clock()
    session = aiohttp.ClientSession()
    try:
        cache = JWKSCache(stand.url + "/.well-known/jwks.json", session, clock=clock)
        await cache.ensure("pdp-1")
        clock.now += 0.99
        await cache.ensure("unknown")
        assert stand.pdp.jwks_fetches == 1
        clock.now += 0.01
        await cache.ensure("unknown")
        assert (stand.pdp.jwks_fetches, cache.fetches) == (2, 2)
    finally:
        await session.close()


async def test_a_failed_fetch_keeps_the_keys_and_counts_against_the_rate_limit(
    stand: Stand, verifier: CredentialVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    verifier.jwks.clock = clock
    token = credential()
    await verifier.verify(token, READ)
    stand.pdp.jwks_status = 500
    clock.now += 300

    with caplog.at_level(logging.WARNING, logger="pdp.target"):
        assert (await verifier.verify(token, READ))["sub"] == AGENT  # fetch 2 failed
        assert await refused(verifier, credential(NEXT_SIGNER)) == "unknown_kid"  # limited

    assert stand.pdp.jwks_fetches == 2
    assert [(r.name, r.levelno) for r in caplog.records] == [("pdp.target", logging.WARNING)]
    assert caplog.records[0].getMessage() == (
        f"cannot fetch the PDP JWKS from {stand.url}/.well-known/jwks.json: HTTP 500"
    )


@pytest.mark.parametrize("raw", [b"{not json", b""], ids=["not-json", "empty"])
async def test_an_unreadable_jwks_keeps_the_keys(
    stand: Stand, verifier: CredentialVerifier, raw: bytes
) -> None:
    clock = Clock()
    verifier.jwks.clock = clock
    token = credential()
    await verifier.verify(token, READ)
    stand.pdp.jwks_raw = raw
    clock.now += 300

    assert (await verifier.verify(token, READ))["sub"] == AGENT
    assert stand.pdp.jwks_fetches == 2


async def test_a_jwks_that_is_not_an_object_leaves_no_keys(
    stand: Stand, verifier: CredentialVerifier
) -> None:
    stand.pdp.jwks = [JWK]

    assert await refused(verifier, credential()) == "unknown_kid"


async def test_a_key_the_pdp_no_longer_publishes_is_forgotten(
    stand: Stand, verifier: CredentialVerifier
) -> None:
    clock = Clock()
    verifier.jwks.clock = clock
    old = credential()
    await verifier.verify(old, READ)
    stand.pdp.jwks = {"keys": [NEXT_JWK]}
    clock.now += 300

    assert (await verifier.verify(credential(NEXT_SIGNER), READ))["sub"] == AGENT
    assert await refused(verifier, old) == "unknown_kid"


def private_jwk(kid: str) -> dict[str, Any]:
    private = ec.generate_private_key(ec.SECP256R1())
    return {**ECAlgorithm.to_jwk(private, as_dict=True), "kid": kid, "alg": "ES256"}


async def test_only_usable_ec_keys_of_the_jwks_are_kept(
    stand: Stand, verifier: CredentialVerifier
) -> None:
    unusable = {
        "no-alg": {k: v for k, v in new_key("no-alg")[1].items() if k != "alg"},
        "rs256": {**new_key("rs256")[1], "alg": "RS256"},
        "broken": {**new_key("broken")[1], "x": "AAAA"},
        "private": private_jwk("private"),
    }
    stand.pdp.jwks = {
        "keys": ["not a key", {**JWK, "kid": 7}, *unusable.values(), NEXT_JWK],
    }

    await verifier.jwks.ensure("pdp-2")

    assert verifier.jwks.lookup("pdp-2") is not None
    assert sorted(verifier.jwks._keys) == ["pdp-2"]
    for kid in unusable:
        assert verifier.jwks.lookup(kid) is None


# --------------------------------------------------------------------------- recheck


async def test_a_recheck_credential_is_introspected_with_the_introspection_secret(
    stand: Stand, verifier: CredentialVerifier
) -> None:
    token = credential(recheck_at_target=True)

    claims = await verifier.verify(token, READ)

    assert claims["recheck_at_target"] is True
    assert stand.pdp.introspected == [(f"Bearer {INTROSPECTOR}", token)]


@pytest.mark.parametrize("recheck", [False, "true", 1], ids=["false", "a-string", "one"])
async def test_only_recheck_true_asks_the_pdp(
    stand: Stand, verifier: CredentialVerifier, recheck: Any
) -> None:
    await verifier.verify(credential(recheck_at_target=recheck), READ)

    assert stand.pdp.introspected == []


@pytest.mark.parametrize(
    "answer",
    [{"active": False}, {"active": "true"}, {}, [{"active": True}], None],
    ids=["inactive", "a-string", "no-answer", "a-list", "null"],
)
async def test_anything_but_active_true_is_inactive(
    stand: Stand, verifier: CredentialVerifier, answer: Any
) -> None:
    stand.pdp.introspection = answer

    with pytest.raises(CredentialError) as info:
        await verifier.verify(credential(recheck_at_target=True), READ)

    assert (info.value.code, info.value.message) == (
        "inactive",
        "the PDP says the credential is no longer active",
    )


async def test_an_introspection_error_fails_closed(
    stand: Stand, verifier: CredentialVerifier
) -> None:
    stand.pdp.introspection_status = 503

    with pytest.raises(CredentialError) as info:
        await verifier.verify(credential(recheck_at_target=True), READ)

    assert (info.value.code, info.value.message) == (
        "recheck_unavailable",
        "the PDP could not be asked (HTTP 503)",
    )


async def test_an_unreadable_introspection_answer_fails_closed(
    stand: Stand, verifier: CredentialVerifier
) -> None:
    stand.pdp.introspection = "not an object"
    stand.pdp.introspection_status = 200
    token = credential(recheck_at_target=True)

    assert await refused(verifier, token) == "inactive"  # valid JSON, not an object
    stand.pdp.introspection = b"{oops"
    assert await refused(verifier, token) == "recheck_unavailable"  # not JSON
    verifier.introspect_url = stand.url + "/nowhere"
    assert await refused(verifier, token) == "recheck_unavailable"  # 404


async def test_a_recheck_without_an_introspection_secret_fails_closed(stand: Stand) -> None:
    verifier = CredentialVerifier(pdp_url=stand.url, audience="jira")
    try:
        with pytest.raises(CredentialError) as info:
            await verifier.verify(credential(recheck_at_target=True), READ)
    finally:
        await verifier.close()

    assert (info.value.code, info.value.message) == (
        "recheck_unavailable",
        "the credential requires a recheck but no introspection token is configured",
    )
    assert stand.pdp.introspected == []


# --------------------------------------------------------------------------- sessions


async def test_the_verifier_closes_only_a_session_it_opened(stand: Stand) -> None:
    shared = aiohttp.ClientSession()
    borrowed = CredentialVerifier(pdp_url=stand.url, audience="jira", session=shared)
    owned = CredentialVerifier(pdp_url=stand.url, audience="jira")

    await borrowed.close()
    await owned.close()

    assert (shared.closed, owned.session.closed) == (False, True)
    assert borrowed.session is shared
    await shared.close()


# --------------------------------------------------------------------------- Bearer


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("Bearer   abc  ", "abc"),
        ("Bearer ", None),
        ("Bearer    ", None),
        ("Basic abc", None),
        ("Bearerabc", None),
        ("abc", None),
        (None, None),
    ],
)
def test_the_bearer_credential_is_read_from_the_authorization_header(
    header: str | None, token: str | None
) -> None:
    # aiohttp's headers are a multidict (a header may come more than once)
    request = SimpleNamespace(
        headers=CIMultiDict([] if header is None else [("Authorization", header)])
    )

    assert bearer_token(request) == token  # type: ignore[arg-type]


# --------------------------------------------------------------------------- middleware


def scope_for(request: web.Request) -> str | None:
    return {"/healthz": None, "/search": READ}.get(request.path, WRITE)


@pytest.fixture
async def target(
    verifier: CredentialVerifier, aiohttp_client: Callable[..., Any]
) -> TestClient[Any, Any]:
    async def handler(request: web.Request) -> web.Response:
        claims = request.get(CLAIMS)
        return web.json_response({"sub": None if claims is None else claims["sub"]})

    app = web.Application(middlewares=[credential_middleware(verifier, scope_for)])
    for path in ("/healthz", "/search", "/issue"):
        app.router.add_get(path, handler)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_open_route_needs_no_credential(target: TestClient[Any, Any]) -> None:
    response = await target.get("/healthz")

    assert (response.status, await response.json()) == (200, {"sub": None})


async def test_a_verified_credential_reaches_the_handler_with_its_claims(
    target: TestClient[Any, Any],
) -> None:
    response = await target.get("/search", headers=bearer(credential()))

    assert (response.status, await response.json()) == (200, {"sub": AGENT})


@pytest.mark.parametrize(
    ("headers", "reason", "message"),
    [
        ({}, "missing", "no Authorization: Bearer credential"),
        (bearer("junk"), "malformed", "credential is not a compact JWS"),
    ],
    ids=["missing", "malformed"],
)
async def test_a_missing_or_bad_credential_is_a_401_invalid_token(
    target: TestClient[Any, Any], headers: dict[str, str], reason: str, message: str
) -> None:
    response = await target.get("/search", headers=headers)

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer error="invalid_token", error_description="{reason}"'
    )
    assert await response.json() == {"error": "invalid_token", "reason": reason, "message": message}


async def test_a_credential_for_another_operation_is_a_403_naming_the_scope(
    target: TestClient[Any, Any],
) -> None:
    response = await target.get("/issue", headers=bearer(credential()))

    assert response.status == 403
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", error_description="insufficient_scope", '
        f'scope="{WRITE}"'
    )
    assert await response.json() == {
        "error": "insufficient_scope",
        "reason": "insufficient_scope",
        "message": f"credential does not cover {WRITE!r}",
    }
