"""The credential and admin API end to end: the app on the session's real OPA.

Each test has its own state dir (own signing key, own SQLite store) and trusts the
session's dev trust bundles, so tokens minted with ``mint`` verify.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from pdp.target import verify_credential
from tests.conftest import EXAMPLES, load_example
from tests.credential_helpers import (  # noqa: F401  (the *_fixture names are fixtures)
    ADMIN,
    ALLOW_EXAMPLE,
    INTROSPECTOR,
    SUPPORT_BOT,
    Client,
    Factory,
    admin,
    decide,
    introspect,
    make_pdp_fixture,
    pdp_fixture,
)


async def jwks(client: Client) -> dict[str, Any]:
    resp = await client.get("/.well-known/jwks.json")
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return {k["kid"]: k for k in doc["keys"]}


def lookup_in(keys: dict[str, Any]) -> Callable[[str], Any]:
    def lookup(kid: str) -> Any:
        return ("ES256", jwt.PyJWK(keys[kid]).key) if kid in keys else None

    return lookup


# --------------------------------------------------------------------------- minting


async def test_an_allow_carries_a_credential_that_verifies_with_the_jwks(
    pdp: Client, mint: Callable[..., str]
) -> None:
    body = await decide(pdp, mint, ALLOW_EXAMPLE)

    credential = body["credential"]
    claims = verify_credential(
        credential["token"],
        lookup_in(await jwks(pdp)),
        issuer="agent-pdp",
        audience="jira",
        scope="tool.call:jira.search_issues:read",
    )
    assert (claims["sub"], claims["tctx"]["decision_id"], claims["jti"]) == (
        SUPPORT_BOT,
        body["decision_id"],
        credential["jti"],
    )
    assert credential["expires_in"] == body["obligations"]["credential"]["ttl_seconds"]


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if p.name.startswith("deny-")], ids=lambda p: p.stem
)
async def test_a_deny_never_carries_a_credential(
    pdp: Client, mint: Callable[..., str], path: Path
) -> None:
    example = load_example(path)
    request = dict(example["request"])
    if example["spiffe_id"] is not None:
        request["agent"] = {**request.get("agent", {}), "token": mint(example["spiffe_id"])}

    body = await (await pdp.post("/v1/decisions", json=request)).json()

    assert body["allow"] is False
    assert "credential" not in body


async def test_the_credential_is_recorded_by_jti_and_never_logged(
    pdp: Client, mint: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    body = await decide(pdp, mint, ALLOW_EXAMPLE)
    token = body["credential"]["token"]
    await introspect(pdp, token)
    await pdp.post("/v1/credentials/revoke", json={"token": token}, headers=admin())

    records = [r.getMessage() for r in caplog.records if r.name == "pdp.decisions"]
    assert len(records) == 1 and body["credential"]["jti"] in records[0]
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in everything
    assert token.split(".")[2] not in everything
    assert ADMIN not in everything


# --------------------------------------------------------------------------- admin auth

ADMIN_CALLS = [
    ("POST", "/v1/credentials/introspect", {"token": "x"}),
    ("POST", "/v1/credentials/revoke", {"token": "x"}),
    ("GET", "/v1/agents", None),
    ("POST", "/v1/agents/disable", {"spiffe_id": SUPPORT_BOT, "reason": "r"}),
    ("POST", "/v1/agents/enable", {"spiffe_id": SUPPORT_BOT}),
    ("GET", "/v1/keys", None),
    ("POST", "/v1/keys/rotate", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS, ids=[c[1] for c in ADMIN_CALLS])
@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthenticated"),
        ({"Authorization": "Basic YWRtaW46YWRtaW4="}, 401, "unauthenticated"),
        ({"Authorization": "Bearer "}, 401, "unauthenticated"),
        (admin("wrong-credential-0123456789"), 403, "forbidden"),
        (admin(ADMIN[:-1]), 403, "forbidden"),
    ],
    ids=["anonymous", "basic", "empty-bearer", "wrong", "prefix"],
)
async def test_admin_endpoints_refuse_anonymous_and_wrong_credentials(
    pdp: Client,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    resp = await pdp.request(method, path, json=body, headers=headers)

    assert resp.status == status
    assert (await resp.json())["error"]["code"] == code


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [c for c in ADMIN_CALLS if c[1] != "/v1/credentials/introspect"],
    ids=[c[1] for c in ADMIN_CALLS if c[1] != "/v1/credentials/introspect"],
)
async def test_the_introspection_credential_opens_nothing_but_introspection(
    pdp: Client, method: str, path: str, body: Any
) -> None:
    resp = await pdp.request(method, path, json=body, headers=admin(INTROSPECTOR))

    assert resp.status == 403


async def test_jwks_is_public_and_holds_only_public_keys(pdp: Client) -> None:
    keys = await jwks(pdp)

    assert len(keys) == 1
    [key] = keys.values()
    assert set(key) == {"kty", "crv", "x", "y", "kid", "use", "alg"}


# --------------------------------------------------------------------------- introspection


async def test_introspection_accepts_form_and_json_bodies(
    pdp: Client, mint: Callable[..., str]
) -> None:
    token = (await decide(pdp, mint, ALLOW_EXAMPLE))["credential"]["token"]

    form = await introspect(pdp, token, INTROSPECTOR)
    resp = await pdp.post("/v1/credentials/introspect", json={"token": token}, headers=admin())

    assert form == await resp.json()
    assert {k: form[k] for k in ("active", "sub", "aud", "scope", "tenant", "token_type")} == {
        "active": True,
        "sub": SUPPORT_BOT,
        "aud": "jira",
        "scope": "tool.call:jira.search_issues:read",
        "tenant": "acme",
        "token_type": "Bearer",
    }


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": {}}, 400, "invalid_request"),
        ({"data": {"token_type_hint": "access_token"}}, 400, "invalid_request"),
        ({"data": "token=x", "headers": {"Content-Type": "text/plain"}}, 415, None),
        ({"data": b"{", "headers": {"Content-Type": "application/json"}}, 400, "malformed_json"),
    ],
    ids=["json-without-token", "form-without-token", "text", "bad-json"],
)
async def test_introspection_of_a_malformed_request_is_refused(
    pdp: Client, kwargs: dict[str, Any], status: int, code: str | None
) -> None:
    headers = {**admin(), **kwargs.pop("headers", {})}

    resp = await pdp.post("/v1/credentials/introspect", headers=headers, **kwargs)

    assert resp.status == status
    assert (await resp.json())["allow"] is False
    if code:
        assert (await resp.json())["error"]["code"] == code


async def test_revoke_makes_the_credential_inactive_and_answers_200_for_unknown_tokens(
    pdp: Client, mint: Callable[..., str]
) -> None:
    token = (await decide(pdp, mint, ALLOW_EXAMPLE))["credential"]["token"]

    resp = await pdp.post("/v1/credentials/revoke", data={"token": token}, headers=admin())
    unknown = await pdp.post("/v1/credentials/revoke", json={"token": "nope"}, headers=admin())

    assert (resp.status, unknown.status) == (200, 200)
    assert await introspect(pdp, token) == {"active": False}


# --------------------------------------------------------------------------- agents


async def test_a_disabled_agent_is_denied_and_its_credentials_go_inactive_across_a_restart(
    make_pdp: Factory, mint: Callable[..., str]
) -> None:
    pdp = await make_pdp()
    before = (await decide(pdp, mint, ALLOW_EXAMPLE))["credential"]["token"]

    change = {"spiffe_id": SUPPORT_BOT, "reason": "offboarded"}
    resp = await pdp.post("/v1/agents/disable", json=change, headers=admin())
    assert (resp.status, await resp.json()) == (
        200,
        {"spiffe_id": SUPPORT_BOT, "status": "disabled", "reason": "offboarded"},
    )
    denied = await decide(pdp, mint, ALLOW_EXAMPLE)
    assert (denied["allow"], [r["code"] for r in denied["reasons"]]) == (False, ["agent_disabled"])
    assert denied["reasons"][0]["rule"] == "pdp.rules.lifecycle"  # the policy saw the status
    assert "credential" not in denied
    assert await introspect(pdp, before) == {"active": False}
    await pdp.close()

    restarted = await make_pdp()  # same state dir: same store, same key
    again = await decide(restarted, mint, ALLOW_EXAMPLE)
    assert [r["code"] for r in again["reasons"]] == ["agent_disabled"]
    assert await introspect(restarted, before) == {"active": False}

    # Credentials carry whole-second iat; those of the disable's second stay dead.
    await asyncio.sleep(1.01 - time.time() % 1)
    await restarted.post("/v1/agents/enable", json={"spiffe_id": SUPPORT_BOT}, headers=admin())
    allowed = await decide(restarted, mint, ALLOW_EXAMPLE)
    assert allowed["allow"] is True
    assert (await introspect(restarted, allowed["credential"]["token"]))["active"] is True
    assert await introspect(restarted, before) == {"active": False}


async def test_agents_list_shows_activity_status_and_outstanding_credentials(
    pdp: Client, mint: Callable[..., str]
) -> None:
    for _ in range(2):
        await decide(pdp, mint, ALLOW_EXAMPLE)
    deny = load_example(next(p for p in EXAMPLES if p.name == "deny-tenant-mismatch.json"))
    await decide(pdp, mint, deny)
    await pdp.post(
        "/v1/agents/disable",
        json={"spiffe_id": "spiffe://acme.example/agents/finance-analyst", "reason": "audit"},
        headers=admin(),
    )

    resp = await pdp.get("/v1/agents", headers=admin())
    agents = {a["spiffe_id"]: a for a in (await resp.json())["agents"]}

    bot = agents[SUPPORT_BOT]
    assert bot["first_seen"] <= bot["last_seen"]
    assert {k: bot[k] for k in bot if k not in {"first_seen", "last_seen"}} == {
        "spiffe_id": SUPPORT_BOT,
        "status": "active",
        "reason": None,
        "status_changed_at": None,
        "decisions_allowed": 2,
        "decisions_denied": 0 if deny["spiffe_id"] != SUPPORT_BOT else 1,
        "tools_used": ["jira.search_issues"],
        "tool_counts": {"jira.search_issues": 2},
        "credentials_outstanding": 2,
    }
    analyst = agents["spiffe://acme.example/agents/finance-analyst"]
    assert (analyst["status"], analyst["reason"], analyst["first_seen"]) == (
        "disabled",
        "audit",
        None,
    )


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/agents/disable", {"spiffe_id": SUPPORT_BOT}, "/reason"),
        ("/v1/agents/disable", {"spiffe_id": "spiffe://acme.example", "reason": "x"}, "/spiffe_id"),
        ("/v1/agents/enable", {"spiffe_id": "https://acme.example/bot"}, "/spiffe_id"),
        ("/v1/agents/enable", {"spiffe_id": SUPPORT_BOT, "why": "x"}, "/why"),
        ("/v1/agents/disable", {"spiffe_id": SUPPORT_BOT, "reason": "x" * 513}, "/reason"),
    ],
    ids=["no-reason", "trust-domain-only", "not-spiffe", "unknown-field", "long-reason"],
)
async def test_a_bad_agent_change_is_refused_with_the_field(
    pdp: Client, path: str, body: dict[str, Any], field: str
) -> None:
    resp = await pdp.post(path, json=body, headers=admin())

    assert resp.status == 400
    assert [f["path"] for f in (await resp.json())["error"]["fields"]] == [field]


# --------------------------------------------------------------------------- keys


async def test_rotation_in_a_running_service_keeps_in_flight_credentials_valid(
    pdp: Client, mint: Callable[..., str]
) -> None:
    in_flight = (await decide(pdp, mint, ALLOW_EXAMPLE))["credential"]["token"]
    old_kid = jwt.get_unverified_header(in_flight)["kid"]

    resp = await pdp.post("/v1/keys/rotate", json={}, headers=admin())
    rotated = await resp.json()
    fresh = (await decide(pdp, mint, ALLOW_EXAMPLE))["credential"]["token"]
    keys = await jwks(pdp)
    listing = await (await pdp.get("/v1/keys", headers=admin())).json()

    assert (rotated["previous"], rotated["generation"]) == (old_kid, 1)
    assert jwt.get_unverified_header(fresh)["kid"] == rotated["current"] != old_kid
    assert set(keys) == {old_kid, rotated["current"]}
    for token in (in_flight, fresh):
        verify_credential(token, lookup_in(keys), issuer="agent-pdp", audience="jira", scope=None)
        assert (await introspect(pdp, token))["active"] is True
    assert listing["current"] == rotated["current"]
    assert {k["kid"]: k["state"] for k in listing["keys"]} == {
        old_kid: "retired",
        rotated["current"]: "current",
    }
