"""The HTTP API end to end: the app on a real OPA with the repository's bundle.

Every test goes through the real surface (aiohttp test client over loopback) and, where a
decision is made, through the real OPA evaluating the real policies.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization

from pdp.bundle import BuiltBundle
from tests.conftest import EXAMPLES, ClientFactory, load_example
from tests.http_helpers import decide, is_uuid, metric
from tests.identity_helpers import (
    KeyPair,
    claims,
    ec_key,
    forge,
    forge_hs256,
    replace_payload,
    sign,
)
from tests.opa_process import OPAProcess

Client = TestClient[Any, Any]

#: OPA deadline for these tests. The default (100 ms) is what tests/test_failclosed.py
#: exercises; here a loaded CI machine must not turn a decision into a 503.
OPA_TIMEOUT_MS = 5000

SUPPORT_BOT = "spiffe://acme.example/agents/support-bot"
FINANCE_ANALYST = "spiffe://acme.example/agents/finance-analyst"

#: A schema-valid request with no token; bad-input cases are one change away from it.
BASE_REQUEST: dict[str, Any] = {
    "request_id": "req-api-1",
    "agent": {"on_behalf_of": {"subject": "user:alice@acme.example", "tenant": "acme"}},
    "tenant": "acme",
    "task": {"id": "T-42", "purpose": "triage support tickets", "session": "s-9"},
    "action": {"type": "tool.call", "name": "jira.search_issues", "operation": "read"},
    "destination": {
        "type": "tool",
        "name": "jira",
        "url": "https://jira.internal.acme/rest/api/2/search",
        "environment": "prod",
    },
    "data": {"sensitivity": "internal", "categories": ["customer-tickets"]},
    "prompt": {"text": "find open tickets", "risk_signals": []},
    "context": {"gateway": "gw-1"},
}

_DELETE = object()


def changed(pointer: str, value: Any = _DELETE) -> dict[str, Any]:
    """BASE_REQUEST with the member at ``pointer`` (/a/b) set to ``value``, or removed."""
    doc = copy.deepcopy(BASE_REQUEST)
    *parents, leaf = pointer.strip("/").split("/")
    target = doc
    for name in parents:
        target = target[name]
    if value is _DELETE:
        del target[leaf]
    else:
        target[leaf] = value
    return doc


def with_token(request: dict[str, Any], token: str | None) -> dict[str, Any]:
    """A copy of ``request`` whose agent presents ``token`` (None: no token)."""
    doc = copy.deepcopy(request)
    doc.setdefault("agent", {}).pop("token", None)
    if token is not None:
        doc["agent"]["token"] = token
    return doc


async def get_metrics(client: Client) -> str:
    resp = await client.get("/metrics")
    assert resp.status == 200
    return await resp.text()


def codes(body: dict[str, Any]) -> list[str]:
    return [reason["code"] for reason in body["reasons"]]


def example_where(predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first example matching ``predicate`` (the corpus must have one)."""
    for path in EXAMPLES:
        example = load_example(path)
        if predicate(example):
            return example
    raise AssertionError("no example in examples/requests/ matches what this test needs")


def allow_example() -> dict[str, Any]:
    return example_where(lambda e: e["expect"]["allow"] is True)


def policy_deny_example() -> dict[str, Any]:
    """A deny for a policy reason (not authentication)."""
    return example_where(lambda e: e["expect"]["allow"] is False and e["spiffe_id"] is not None)


@pytest.fixture
async def client(make_client: ClientFactory, shared_opa: OPAProcess) -> Client:
    """The app on the session's real OPA (conftest's ``client``, with a generous deadline)."""
    return await make_client(shared_opa.url, opa_timeout_ms=OPA_TIMEOUT_MS)


# --------------------------------------------------------------------------- examples


def test_example_corpus_is_not_empty() -> None:
    assert len(EXAMPLES) >= 8, "examples/requests/ must hold the shared decision cases"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
async def test_example_gets_its_expected_decision(
    client: Client, mint: Callable[..., str], path: Path
) -> None:
    example = load_example(path)
    token = mint(example["spiffe_id"]) if example["spiffe_id"] is not None else None

    status, body = await decide(client, with_token(example["request"], token))

    assert status == 200
    assert (body["allow"], codes(body)) == (
        example["expect"]["allow"],
        example["expect"]["reasons"],
    ), example["description"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
async def test_example_answer_carries_id_revision_and_obligations(
    client: Client, mint: Callable[..., str], policy_bundle: BuiltBundle, path: Path
) -> None:
    example = load_example(path)
    token = mint(example["spiffe_id"]) if example["spiffe_id"] is not None else None

    _, body = await decide(client, with_token(example["request"], token))

    assert is_uuid(body["decision_id"])
    assert body["policy"] == {"revision": policy_bundle.revision}
    assert body.get("request_id") == example["request"].get("request_id")
    if body["allow"]:
        ttl = body["obligations"]["credential"]["ttl_seconds"]
        assert isinstance(ttl, int) and ttl >= 1
        # An allow carries the credential for exactly this action (docs/credentials.md).
        action = example["request"]["action"]
        scope = f"{action['type']}:{action.get('name', '')}:{action.get('operation', '')}"
        credential = body["credential"]
        assert {k: v for k, v in credential.items() if k not in {"token", "jti"}} == {
            "token_type": "Bearer",
            "expires_in": min(ttl, 300),
            "audience": example["request"]["destination"]["name"],
            "scope": scope,
        }
    else:
        assert body["obligations"] == {}
        assert "credential" not in body


async def test_request_without_request_id_gets_none_back(
    client: Client, mint: Callable[..., str]
) -> None:
    example = allow_example()
    request = with_token(example["request"], mint(example["spiffe_id"]))
    request.pop("request_id", None)

    _, body = await decide(client, request)

    assert "request_id" not in body


async def test_each_decision_gets_a_new_decision_id(client: Client) -> None:
    ids = {(await decide(client, BASE_REQUEST))[1]["decision_id"] for _ in range(3)}

    assert len(ids) == 3


# --------------------------------------------------------------------------- bad input


@dataclass(frozen=True)
class BadInput:
    """A request the API must refuse before any decision, and the exact answer."""

    id: str
    data: bytes
    status: int
    body: dict[str, Any]
    content_type: str = "application/json"


def schema_error(*fields: tuple[str, str]) -> dict[str, Any]:
    return {
        "allow": False,
        "error": {
            "code": "invalid_request",
            "message": "request does not match the schema",
            "fields": [{"path": path, "message": message} for path, message in fields],
        },
    }


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


LIMIT = 256 * 1024
ACTION_TYPES = (
    "tool.call, model.invoke, data.read, data.write, data.export, secret.read, http.request"
)
NOT_AN_OBJECT = {
    "allow": False,
    "error": {"code": "malformed_json", "message": "body must be a JSON object"},
}
BIG_BODY = b'{"context": {"pad": "' + b"a" * LIMIT + b'"}}'

BAD_INPUTS = [
    BadInput(
        "unknown top-level field",
        dumps(changed("/bogus", 1)),
        400,
        schema_error(("/bogus", "is not a known field")),
    ),
    BadInput(
        "missing tenant",
        dumps(changed("/tenant")),
        400,
        schema_error(("/tenant", "is required")),
    ),
    BadInput(
        "missing action and destination",
        dumps({k: v for k, v in BASE_REQUEST.items() if k not in ("action", "destination")}),
        400,
        schema_error(("/action", "is required"), ("/destination", "is required")),
    ),
    BadInput(
        "unknown action type",
        dumps(changed("/action/type", "tool.smash")),
        400,
        schema_error(("/action/type", f"must be one of: {ACTION_TYPES}")),
    ),
    BadInput(
        "tenant of the wrong type",
        dumps(changed("/tenant", 42)),
        400,
        schema_error(("/tenant", "must be of type string")),
    ),
    BadInput(
        "token of the wrong type",
        dumps(changed("/agent/token", ["a", "b"])),
        400,
        schema_error(("/agent/token", "must be of type string")),
    ),
    BadInput(
        "purpose too long",
        dumps(changed("/task/purpose", "p" * 513)),
        400,
        schema_error(("/task/purpose", "must be at most 512 characters")),
    ),
    BadInput(
        "too many categories",
        dumps(changed("/data/categories", [f"c{i}" for i in range(33)])),
        400,
        schema_error(("/data/categories", "must have at most 32 items")),
    ),
    BadInput(
        "duplicate risk signals",
        dumps(changed("/prompt/risk_signals", ["jailbreak", "jailbreak"])),
        400,
        schema_error(("/prompt/risk_signals", "must not contain duplicates")),
    ),
    BadInput(
        "unknown nested field",
        dumps(changed("/action/foo", "bar")),
        400,
        schema_error(("/action/foo", "is not a known field")),
    ),
    BadInput(
        "empty purpose",
        dumps(changed("/task/purpose", "")),
        400,
        schema_error(("/task/purpose", "must not be empty")),
    ),
    BadInput(
        "empty token",
        dumps(changed("/agent/token", "")),
        400,
        schema_error(("/agent/token", "must not be empty")),
    ),
    BadInput(
        "destination url without a scheme",
        dumps(changed("/destination/url", "jira.internal.acme/rest")),
        400,
        schema_error(("/destination/url", "has characters or a form that is not allowed here")),
    ),
    BadInput(
        "destination url with port 99999",
        dumps(changed("/destination/url", "https://jira.internal.acme:99999/rest")),
        400,
        schema_error(("/destination/url", "port is not a valid number (0-65535)")),
    ),
    BadInput(
        "identity set by the body",
        dumps(changed("/identity", {"authenticated": True, "spiffe_id": SUPPORT_BOT})),
        400,
        schema_error(("/identity", "is not a known field")),
    ),
    BadInput(
        "body is a JSON array",
        dumps([BASE_REQUEST]),
        400,
        NOT_AN_OBJECT,
    ),
    BadInput(
        "body is a JSON string",
        dumps("hello"),
        400,
        NOT_AN_OBJECT,
    ),
    BadInput(
        "content type text/plain",
        dumps(BASE_REQUEST),
        415,
        {
            "allow": False,
            "error": {
                "code": "unsupported_media_type",
                "message": "Content-Type must be application/json",
            },
        },
        content_type="text/plain",
    ),
    BadInput(
        "body over 256 KiB",
        BIG_BODY,
        413,
        {
            "allow": False,
            "error": {"code": "body_too_large", "message": f"body is larger than {LIMIT} bytes"},
        },
    ),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.id for c in BAD_INPUTS])
async def test_bad_input_is_refused_with_an_exact_error_body(
    client: Client, case: BadInput
) -> None:
    resp = await client.post(
        "/v1/decisions", data=case.data, headers={"Content-Type": case.content_type}
    )

    assert (resp.status, await resp.json()) == (case.status, case.body)


async def test_invalid_json_is_refused_as_malformed(client: Client) -> None:
    resp = await client.post(
        "/v1/decisions", data=b'{"tenant": "acme",', headers={"Content-Type": "application/json"}
    )
    body = await resp.json()

    assert resp.status == 400
    assert body["allow"] is False
    assert body["error"]["code"] == "malformed_json"
    assert body["error"]["message"].startswith("body is not valid JSON")


async def test_chunked_body_over_the_limit_is_refused(client: Client) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"context": {"pad": "'
        for _ in range(LIMIT // 8192 + 1):
            yield b"a" * 8192
        yield b'"}}'

    resp = await client.post(
        "/v1/decisions", data=chunks(), headers={"Content-Type": "application/json"}
    )

    assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
    assert (resp.status, await resp.json()) == (
        413,
        {
            "allow": False,
            "error": {"code": "body_too_large", "message": f"body is larger than {LIMIT} bytes"},
        },
    )


async def test_configured_body_limit_is_enforced(
    make_client: ClientFactory, shared_opa: OPAProcess
) -> None:
    small = await make_client(shared_opa.url, max_body_bytes=1024)
    request = changed("/context", {"pad": "x" * 1024})

    resp = await small.post("/v1/decisions", json=request)

    assert (resp.status, await resp.json()) == (
        413,
        {
            "allow": False,
            "error": {"code": "body_too_large", "message": "body is larger than 1024 bytes"},
        },
    )


async def test_refused_requests_never_reach_the_policy_engine(client: Client) -> None:
    for case in BAD_INPUTS:
        resp = await client.post(
            "/v1/decisions", data=case.data, headers={"Content-Type": case.content_type}
        )
        assert resp.status == case.status, case.id

    text = await get_metrics(client)
    assert metric(text, "pdp_decisions_total") == 0
    assert metric(text, "pdp_opa_request_duration_seconds_count") == 0
    assert metric(text, "pdp_authn_failures_total") == 0
    assert metric(text, "pdp_invalid_requests_total") == len(BAD_INPUTS)


async def test_error_body_does_not_echo_an_oversized_token(client: Client) -> None:
    token = "eyJ" + "Q" * 20000
    resp = await client.post("/v1/decisions", json=changed("/agent/token", token))
    text = await resp.text()

    assert resp.status == 400
    assert json.loads(text)["error"]["fields"] == [
        {"path": "/agent/token", "message": "must be at most 16384 characters"}
    ]
    assert "Q" * 100 not in text


async def test_error_body_does_not_echo_a_rejected_value(client: Client) -> None:
    secret = "sk-live-do-not-echo-me"
    resp = await client.post("/v1/decisions", json=changed("/action/type", secret))

    assert resp.status == 400
    assert secret not in await resp.text()


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class Signers:
    """What an attacker or a test can sign with: the dev keys, a foreign key, a minter."""

    acme: KeyPair
    globex: KeyPair
    mint: Callable[..., str]

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid claims for support-bot, now; ``name=None`` drops a claim."""
        now = int(time.time())
        return claims(**{"sub": SUPPORT_BOT, "iat": now, "exp": now + 300, **overrides})


def dev_key(state: Path, domain: str) -> KeyPair:
    directory = state / "dev-trust" / domain
    key = serialization.load_pem_private_key((directory / "key.pem").read_bytes(), None)
    kid = json.loads((directory / "bundle.json").read_text())["keys"][0]["kid"]
    return KeyPair(key, kid)


@pytest.fixture
def signers(dev_state: Path, mint: Callable[..., str]) -> Signers:
    return Signers(dev_key(dev_state, "acme.example"), dev_key(dev_state, "globex.example"), mint)


def _header(s: Signers, alg: str) -> dict[str, Any]:
    return {"alg": alg, "typ": "JWT", "kid": s.acme.kid}


def _strip_signature(token: str) -> str:
    return token.rsplit(".", 1)[0] + "."


def _tamper(s: Signers) -> str:
    token = s.mint(SUPPORT_BOT)
    payload = jwt.decode(token, options={"verify_signature": False})
    return replace_payload(token, {**payload, "sub": FINANCE_ANALYST})


TokenFactory = Callable[[Signers], str | None]

IDENTITY_ATTACKS: list[tuple[str, TokenFactory, str]] = [
    ("no token", lambda s: None, "authn.token_missing"),
    ("garbage", lambda s: "this-is-not-a-jwt", "authn.malformed"),
    ("alg none", lambda s: forge(_header(s, "none"), s.claims()), "authn.alg_not_allowed"),
    (
        "hs256 signed with the public key pem",
        lambda s: forge_hs256(_header(s, "HS256"), s.claims(), s.acme.public_pem()),
        "authn.alg_not_allowed",
    ),
    ("tampered payload", _tamper, "authn.invalid_signature"),
    (
        "stripped signature",
        lambda s: _strip_signature(s.mint(SUPPORT_BOT)),
        "authn.invalid_signature",
    ),
    (
        "unknown kid",
        lambda s: sign(ec_key("no-such-kid"), s.claims()),
        "authn.unknown_kid",
    ),
    (
        "key of another configured trust domain",
        lambda s: sign(s.globex, s.claims()),
        "authn.unknown_kid",
    ),
    (
        "foreign trust domain",
        lambda s: sign(ec_key("evil"), s.claims(sub="spiffe://evil.example/agents/support-bot")),
        "authn.untrusted_domain",
    ),
    ("missing aud", lambda s: sign(s.acme, s.claims(aud=None)), "authn.missing_claim"),
    ("wrong aud", lambda s: s.mint(SUPPORT_BOT, audience="not-the-pdp"), "authn.audience_mismatch"),
    ("missing exp", lambda s: sign(s.acme, s.claims(exp=None)), "authn.missing_claim"),
    (
        "expired",
        lambda s: s.mint(SUPPORT_BOT, clock=lambda: time.time() - 3600),
        "authn.expired",
    ),
    (
        "nbf in the future",
        lambda s: sign(s.acme, s.claims(nbf=int(time.time()) + 3600)),
        "authn.not_yet_valid",
    ),
    (
        "sub that is not a spiffe id",
        lambda s: sign(s.acme, s.claims(sub="user:alice@acme.example")),
        "authn.invalid_spiffe_id",
    ),
]


@pytest.mark.parametrize(
    ("make_token", "code"),
    [(factory, code) for _, factory, code in IDENTITY_ATTACKS],
    ids=[name for name, _, _ in IDENTITY_ATTACKS],
)
async def test_identity_attack_is_a_deny_with_its_authn_code(
    client: Client, signers: Signers, make_token: TokenFactory, code: str
) -> None:
    status, body = await decide(client, with_token(BASE_REQUEST, make_token(signers)))

    assert (status, body["allow"], body["reasons"][0]["code"]) == (200, False, code)


async def test_valid_token_for_the_base_request_is_allowed(
    client: Client, signers: Signers
) -> None:
    # The identity attacks above differ from this only in the token.
    token = sign(signers.acme, signers.claims())

    _, body = await decide(client, with_token(BASE_REQUEST, token))

    assert (body["allow"], codes(body)) == (True, [])


async def test_agent_of_one_tenant_is_denied_in_another(
    client: Client, mint: Callable[..., str]
) -> None:
    request = changed("/tenant", "globex")
    del request["agent"]["on_behalf_of"]["tenant"]

    _, body = await decide(client, with_token(request, mint(SUPPORT_BOT)))

    assert body["allow"] is False
    assert "tenant_mismatch" in codes(body)


# --------------------------------------------------------------------------- operations


async def test_healthz_answers_ok(client: Client) -> None:
    resp = await client.get("/healthz")

    assert (resp.status, await resp.json()) == (200, {"status": "ok"})


async def test_readyz_answers_ready_with_the_bundle_revision(
    client: Client, policy_bundle: BuiltBundle
) -> None:
    resp = await client.get("/readyz")

    assert (resp.status, await resp.json()) == (
        200,
        {"ready": True, "detail": "ok", "policy": {"revision": policy_bundle.revision}},
    )


async def test_metrics_count_exactly_the_decisions_made(
    client: Client, mint: Callable[..., str]
) -> None:
    allow, deny = allow_example(), policy_deny_example()
    for _ in range(3):
        await decide(client, with_token(allow["request"], mint(allow["spiffe_id"])))
    for _ in range(2):
        await decide(client, with_token(deny["request"], mint(deny["spiffe_id"])))
    await decide(client, with_token(BASE_REQUEST, None))

    text = await get_metrics(client)

    assert {
        "allow": metric(text, "pdp_decisions_total", outcome="allow"),
        "deny": metric(text, "pdp_decisions_total", outcome="deny"),
        "error": metric(text, "pdp_decisions_total", outcome="error"),
        "authn": metric(text, "pdp_authn_failures_total", code="authn.token_missing"),
        "all authn": metric(text, "pdp_authn_failures_total"),
        "timed": metric(text, "pdp_decision_duration_seconds_count"),
        "opa": metric(text, "pdp_opa_request_duration_seconds_count"),
    } == {"allow": 3, "deny": 3, "error": 0, "authn": 1, "all authn": 1, "timed": 6, "opa": 6}


async def test_unknown_route_is_a_json_404_with_allow_false(client: Client) -> None:
    resp = await client.get("/v1/nothing-here")

    assert (resp.status, await resp.json()) == (
        404,
        {"allow": False, "error": {"code": "not_found", "message": "Not Found"}},
    )


async def test_get_on_decisions_is_a_json_405_with_allow_false(client: Client) -> None:
    resp = await client.get("/v1/decisions")

    assert (resp.status, await resp.json()) == (
        405,
        {"allow": False, "error": {"code": "method_not_allowed", "message": "Method Not Allowed"}},
    )


# --------------------------------------------------------------------------- secrets


async def test_decision_log_names_token_and_prompt_without_revealing_them(
    client: Client, mint: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    example = allow_example()
    token = mint(example["spiffe_id"])
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    prompt = "Summarise the Q1 numbers; internal only, codeword PELICAN-7731."
    request = with_token(example["request"], token)
    request["prompt"] = {"text": prompt}

    _, body = await decide(client, request)

    assert body["allow"] is True
    [record] = [r.getMessage() for r in caplog.records if r.name == "pdp.decisions"]
    assert body["decision_id"] in record
    assert jti in record
    assert json.loads(record)["prompt"]["hmac_sha256"] in record  # keyed, not guessable
    assert hashlib.sha256(prompt.encode()).hexdigest() not in record
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in everything
    assert token.split(".")[2] not in everything
    assert "PELICAN-7731" not in everything
