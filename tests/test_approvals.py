"""Just-in-time approval end to end: the app on the session's real OPA, its own SQLite
store and audit trail; the approval store's atomic use on SQLite and on a real Redis."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest

from pdp.approvals import Approval, ApprovalConflict, Binding, Unbindable
from pdp.approvals.model import arguments_digest
from pdp.approvals.store import ApprovalStore, open_approval_store
from pdp.state import CREDENTIALS, DECISIONS
from tests.audit_helpers import records
from tests.conftest import EXAMPLES, load_example
from tests.credential_helpers import (  # noqa: F401  (the *_fixture names are fixtures)
    ADMIN,
    ALLOW_EXAMPLE,
    SUPPORT_BOT,
    Client,
    Factory,
    admin,
    make_pdp_fixture,
)
from tests.redis_process import redis_server, redis_url  # noqa: F401  (fixtures)

APPROVER = "approver-credential-for-tests-89"
FINANCE = "spiffe://acme.example/agents/finance-analyst"
VAULT = load_example(
    next(
        p for p in EXAMPLES if p.name == "deny-finance-analyst-vault-secret-approval-required.json"
    )
)


@pytest.fixture
async def pdp(make_pdp: Factory) -> Client:
    return await make_pdp(approver_token=APPROVER)


def request_for(example: dict[str, Any], token: str, **changes: Any) -> dict[str, Any]:
    req: dict[str, Any] = copy.deepcopy(example["request"])
    req["agent"] = {**req.get("agent", {}), "token": token}
    req.update(changes)
    return req


async def decide(client: Client, req: dict[str, Any]) -> Any:
    resp = await client.post("/v1/decisions", json=req)
    assert resp.status == 200
    return await resp.json()


async def act(
    client: Client, approval_id: str, verb: str, token: str = APPROVER, **body: Any
) -> Any:
    resp = await client.post(f"/v1/approvals/{approval_id}/{verb}", json=body, headers=admin(token))
    return resp.status, await resp.json()


def codes(body: dict[str, Any]) -> list[str]:
    return [r["code"] for r in body["reasons"]]


async def pending(client: Client, mint: Callable[..., str]) -> tuple[dict[str, Any], str]:
    """A vault secret read that needs approval: (the request, its pending approval id)."""
    req = request_for(VAULT, mint(FINANCE))
    body = await decide(client, req)
    return req, body["approval"]["id"]


# ------------------------------------------------------------------------ requestable denial


async def test_a_call_that_needs_approval_is_denied_with_a_pending_approval_and_no_credential(
    pdp: Client, mint: Callable[..., str]
) -> None:
    body = await decide(pdp, request_for(VAULT, mint(FINANCE)))

    assert (body["allow"], codes(body)) == (False, ["approval_required"])
    assert set(body["approval"]) == {"id", "status", "expires_at"}
    assert body["approval"]["status"] == "pending"
    assert body["approval"]["expires_at"].endswith("Z")
    assert "credential" not in body and body["obligations"] == {}


async def test_the_same_call_asked_again_finds_the_same_pending_approval(
    pdp: Client, mint: Callable[..., str]
) -> None:
    first = await decide(pdp, request_for(VAULT, mint(FINANCE)))
    second = await decide(pdp, request_for(VAULT, mint(FINANCE)))
    other = await decide(
        pdp,
        request_for(
            VAULT,
            mint(FINANCE),
            action={**VAULT["request"]["action"], "arguments": {"version": 2}},
        ),
    )

    assert first["approval"]["id"] == second["approval"]["id"]
    assert other["approval"]["id"] != first["approval"]["id"]


async def test_a_call_denied_for_another_reason_too_opens_no_approval(
    pdp: Client, mint: Callable[..., str]
) -> None:
    req = request_for(VAULT, mint(FINANCE))
    del req["task"]

    body = await decide(pdp, req)

    assert codes(body) == ["approval_required", "purpose_required"]
    assert "approval" not in body


# ------------------------------------------------------------------------ approvers


async def test_approvers_list_pending_approvals_with_the_call_they_cover(
    pdp: Client, mint: Callable[..., str]
) -> None:
    _, approval_id = await pending(pdp, mint)

    for token in (APPROVER, ADMIN):
        resp = await pdp.get("/v1/approvals?status=pending", headers=admin(token))
        assert resp.status == 200
        (listed,) = (await resp.json())["approvals"]
        assert listed["id"] == approval_id
        assert (listed["agent"], listed["tenant"], listed["destination"]) == (
            FINANCE,
            "acme",
            "vault",
        )
        assert listed["action"] == {
            "type": "secret.read",
            "name": "payroll.db_readonly_credential",
            "operation": "read",
        }
        assert listed["grant"] == {"ttl_seconds": 900, "uses": 1}


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), (admin("not-the-approver-token-xx"), 403)],
)
async def test_approvals_need_the_admin_or_approver_credential(
    pdp: Client, headers: dict[str, str], status: int
) -> None:
    assert (await pdp.get("/v1/approvals", headers=headers)).status == status
    assert (await pdp.post("/v1/approvals/apr_x/grant", json={}, headers=headers)).status == status


async def test_a_bad_status_filter_is_400(pdp: Client) -> None:
    resp = await pdp.get("/v1/approvals?status=maybe", headers=admin())
    assert resp.status == 400
    assert (await resp.json())["allow"] is False


async def test_deciding_an_unknown_approval_is_404_and_a_decided_one_409(
    pdp: Client, mint: Callable[..., str]
) -> None:
    _, approval_id = await pending(pdp, mint)

    assert (await act(pdp, "apr_nothing", "grant"))[0] == 404
    assert (await act(pdp, approval_id, "deny", note="no"))[0] == 200
    status, body = await act(pdp, approval_id, "grant")
    assert (status, body["error"]["code"]) == (409, "approval_not_pending")


# ------------------------------------------------------------------------ the granted call


async def test_a_granted_approval_lets_the_same_call_through_once_with_its_id_in_the_credential(
    pdp: Client, mint: Callable[..., str]
) -> None:
    req, approval_id = await pending(pdp, mint)
    status, granted = await act(pdp, approval_id, "grant", approver="carol@acme.example", note="ok")
    assert status == 200
    assert (granted["status"], granted["decided_by"], granted["approver"], granted["note"]) == (
        "granted",
        "approver",
        "carol@acme.example",
        "ok",
    )

    body = await decide(pdp, {**req, "approval_id": approval_id})

    assert (body["allow"], body["reasons"]) == (True, [])
    claims = jwt.decode(body["credential"]["token"], options={"verify_signature": False})
    assert claims["approval_id"] == approval_id
    resp = await pdp.post(
        "/v1/credentials/introspect", data={"token": body["credential"]["token"]}, headers=admin()
    )
    assert (await resp.json())["approval_id"] == approval_id
    # Single use: the same grant does not let the call through again.
    again = await decide(pdp, {**req, "approval_id": approval_id})
    assert (again["allow"], codes(again), "credential" in again) == (
        False,
        ["approval_required", "approval_used"],
        False,
    )


@pytest.mark.parametrize(
    ("change", "who"),
    [
        ({"action": {"arguments": {"path": "secret/data/payroll/admin"}}}, FINANCE),
        ({"action": {"name": "payroll.db_admin_credential"}}, FINANCE),
        ({"tenant": "globex"}, FINANCE),
        ({}, "spiffe://acme.example/agents/support-bot"),
    ],
    ids=["other arguments", "other action", "other tenant", "other agent"],
)
async def test_a_grant_applies_to_no_other_call(
    pdp: Client, mint: Callable[..., str], change: dict[str, Any], who: str
) -> None:
    req, approval_id = await pending(pdp, mint)
    await act(pdp, approval_id, "grant")
    other = copy.deepcopy(req)
    for key, value in change.items():
        other[key] = {**other[key], **value} if isinstance(value, dict) else value
    other["agent"]["token"] = mint(who)

    body = await decide(pdp, {**other, "approval_id": approval_id})

    assert body["allow"] is False and "approval_mismatch" in codes(body)
    # The grant is still there for the call it covers.
    assert (await decide(pdp, {**req, "approval_id": approval_id}))["allow"] is True


ROOT_KEY = "https://vault.acme.internal/v1/secret/data/root/ceo-master-key"


@pytest.mark.parametrize(
    "change",
    [
        {"destination": {"url": ROOT_KEY + "?x=1"}},
        {"destination": {"url": ROOT_KEY}},
        {"destination": {"url": VAULT["request"]["destination"]["url"] + "?version=1"}},
        {
            "destination": {
                "url": "https://vault.acme.internal:8443/v1/secret/data/payroll/db-readonly"
            }
        },
        {"destination": {"environment": "staging"}},
        {"destination": {"type": "external"}},
        {"agent": {"on_behalf_of": {"subject": "user:ceo@acme.example", "tenant": "acme"}}},
        {"agent": {"on_behalf_of": {"subject": "user:bob@acme.example", "tenant": "globex"}}},
        {"task": {"id": "FIN-PAY-9999"}},
        {"task": {"purpose": "exfiltration"}},
        {"task": {"session": "sess-other"}},
        {"data": {"sensitivity": "confidential"}},
        {"data": {"categories": ["credentials", "pii"]}},
    ],
    ids=[
        "root key url with query",
        "other path",
        "other query",
        "other port",
        "other environment",
        "other destination type",
        "other user",
        "other user tenant",
        "other task id",
        "other purpose",
        "other session",
        "other sensitivity",
        "other categories",
    ],
)
async def test_a_grant_is_bound_to_the_destination_user_task_and_data_too(
    pdp: Client, mint: Callable[..., str], change: dict[str, Any]
) -> None:
    req, approval_id = await pending(pdp, mint)
    await act(pdp, approval_id, "grant")
    other = copy.deepcopy(req)
    for key, value in change.items():
        other[key] = {**other[key], **value}

    body = await decide(pdp, {**other, "approval_id": approval_id})

    assert (body["allow"], "credential" in body) == (False, False)
    assert "approval_mismatch" in codes(body)
    assert (await decide(pdp, {**req, "approval_id": approval_id}))["allow"] is True


async def test_the_same_url_spelled_differently_is_the_same_call(
    pdp: Client, mint: Callable[..., str]
) -> None:
    req, approval_id = await pending(pdp, mint)
    await act(pdp, approval_id, "grant")
    same = copy.deepcopy(req)
    same["destination"]["url"] = (
        "HTTPS://Vault.ACME.internal:443/v1/secret/data/payroll/db-readonly"
    )

    assert (await decide(pdp, {**same, "approval_id": approval_id}))["allow"] is True


async def test_a_pending_approval_is_not_handed_out_for_another_url_or_user(
    pdp: Client, mint: Callable[..., str]
) -> None:
    req, approval_id = await pending(pdp, mint)
    other_url = request_for(VAULT, mint(FINANCE))
    other_url["destination"]["url"] = ROOT_KEY + "?x=1"
    other_user = request_for(VAULT, mint(FINANCE))
    other_user["agent"]["on_behalf_of"] = {"subject": "user:ceo@acme.example", "tenant": "acme"}

    first = await decide(pdp, other_url)
    second = await decide(pdp, other_user)

    ids = {approval_id, first["approval"]["id"], second["approval"]["id"]}
    assert len(ids) == 3
    resp = await pdp.get("/v1/approvals?status=pending", headers=admin())
    listed = {a["id"]: a for a in (await resp.json())["approvals"]}
    shown = listed[first["approval"]["id"]]["binding"]
    assert shown["destination"]["url"] == (
        "https://vault.acme.internal:443/v1/secret/data/root/ceo-master-key?x=1"
    )
    assert listed[second["approval"]["id"]]["binding"]["on_behalf_of"]["subject"] == (
        "user:ceo@acme.example"
    )


@pytest.mark.parametrize(
    ("granted", "sent"),
    [
        ("100000000000000000000001", "100000000000000000000999"),
        ("9007199254740993", "9007199254740992"),
        ("1e400", "-1e400"),
    ],
    ids=["beyond 64 bits", "beyond 2**53 within 64 bits", "overflow to infinity"],
)
async def test_numbers_parsing_rounds_bind_no_approval(
    pdp: Client, mint: Callable[..., str], granted: str, sent: str
) -> None:
    """Two calls whose arguments parse to the same float must not share a grant: such a
    call opens no approval and an approval_id on it is a mismatch (or the reader refuses
    the number with 400)."""

    async def raw(args: str, approval_id: str | None = None) -> tuple[int, Any]:
        req = request_for(VAULT, mint(FINANCE))
        if approval_id is not None:
            req["approval_id"] = approval_id
        req["action"]["arguments"] = {"n": "__N__"}
        body = json.dumps(req).replace('"__N__"', args)
        resp = await pdp.post(
            "/v1/decisions", data=body, headers={"Content-Type": "application/json"}
        )
        return resp.status, await resp.json()

    status, first = await raw(granted)
    if status == 400:
        return  # a strict reader refuses the number outright: nothing to bind
    assert status == 200
    if "approval" in first:  # parsed exactly: its approval is bound to exactly this number
        approval_id = first["approval"]["id"]
    else:  # parsed lossily: no approval is opened, nor can any be carried over
        _, approval_id = await pending(pdp, mint)
    await act(pdp, approval_id, "grant")
    status, body = await raw(sent, approval_id)
    assert status == 200
    assert (body["allow"], "approval_mismatch" in codes(body)) == (False, True)


async def test_approval_listing_shows_every_bound_fact(
    pdp: Client, mint: Callable[..., str]
) -> None:
    _, approval_id = await pending(pdp, mint)

    resp = await pdp.get("/v1/approvals?status=pending", headers=admin())
    (listed,) = (await resp.json())["approvals"]

    assert listed["binding"] == {
        "agent": FINANCE,
        "tenant": "acme",
        "action": {
            "type": "secret.read",
            "name": "payroll.db_readonly_credential",
            "operation": "read",
            "arguments_digest": listed["arguments_digest"],
        },
        "destination": {
            "type": "service",
            "name": "vault",
            "url": "https://vault.acme.internal:443/v1/secret/data/payroll/db-readonly",
            "environment": "prod",
        },
        "on_behalf_of": {"subject": "user:bob@acme.example", "tenant": "acme"},
        "task": {"id": "FIN-PAY-0412", "purpose": "payroll reconciliation", "session": "sess-91c2"},
        "data": {"sensitivity": "restricted", "categories": ["credentials"]},
        "context_digest": arguments_digest({}),
    }


def test_big_integers_have_distinct_digests_and_rounded_ones_none() -> None:
    assert arguments_digest({"n": 10**23 + 1}) != arguments_digest({"n": 10**23 + 999})
    for bad in ({"n": 1e23}, {"a": [float("nan")]}, {"x": {"y": float("-inf")}}):
        with pytest.raises(Unbindable):
            arguments_digest(bad)
    assert arguments_digest({"n": 0.5}) == arguments_digest({"n": 0.5})


def test_an_approval_stored_under_an_older_binding_matches_no_call() -> None:
    old = {k: v for k, v in asdict(BINDING).items() if k in OLD_FIELDS}
    loaded = Approval.loads(orjson.dumps({**asdict(fresh()), "binding": old}))
    assert loaded.binding.version == 1 and loaded.binding != BINDING
    assert loaded.refusal(BINDING, T0) == "approval_mismatch"


async def test_a_pending_or_denied_approval_does_not_let_the_call_through(
    pdp: Client, mint: Callable[..., str]
) -> None:
    req, approval_id = await pending(pdp, mint)

    early = await decide(pdp, {**req, "approval_id": approval_id})
    await act(pdp, approval_id, "deny", approver="dave", note="not today")
    denied = await decide(pdp, {**req, "approval_id": approval_id})

    assert codes(early) == ["approval_pending", "approval_required"]
    assert codes(denied) == ["approval_denied", "approval_required"]


async def test_an_unknown_approval_id_denies_even_a_call_that_needs_none(
    pdp: Client, mint: Callable[..., str]
) -> None:
    req = request_for(ALLOW_EXAMPLE, mint(SUPPORT_BOT), approval_id="apr_made_up")

    body = await decide(pdp, req)

    assert (body["allow"], codes(body)) == (False, ["approval_unknown"])


async def test_an_expired_grant_does_not_let_the_call_through(
    pdp: Client, mint: Callable[..., str]
) -> None:
    req, approval_id = await pending(pdp, mint)
    await act(pdp, approval_id, "grant")
    service = pdp.app[DECISIONS].approvals
    assert service is not None
    real = service.clock
    service.clock = lambda: real() + 901  # the policy's grant lasts 900 s

    body = await decide(pdp, {**req, "approval_id": approval_id})

    assert codes(body) == ["approval_expired", "approval_required"]


async def test_every_step_is_in_the_audit_trail(
    pdp: Client, mint: Callable[..., str], tmp_path: Path
) -> None:
    req, approval_id = await pending(pdp, mint)
    await act(pdp, approval_id, "grant", approver="carol", note="payroll run")
    allowed = await decide(pdp, {**req, "approval_id": approval_id})
    await pdp.close()

    trail = records(tmp_path / "state" / "audit")
    steps = [
        (r["event"], r["decided_by"], r["approver"], r["note"], r["uses_left"])
        for r in trail
        if r["type"] == "approval" and r["approval_id"] == approval_id
    ]
    assert steps == [
        ("requested", None, None, None, 1),
        ("granted", "approver", "carol", "payroll run", 1),
        ("used", "approver", "carol", "payroll run", 0),
    ]
    (used,) = [
        r for r in trail if r["type"] == "decision" and r["decision_id"] == allowed["decision_id"]
    ]
    assert used["input"]["approval"]["id"] == approval_id
    assert used["credential"]["jti"] == allowed["credential"]["jti"]


# ------------------------------------------------------------------------ lifecycle race


async def test_a_decision_that_straddles_a_disable_is_denied_and_recorded_as_such(
    pdp: Client, mint: Callable[..., str], tmp_path: Path
) -> None:
    app = pdp.app
    opa = app[DECISIONS].opa
    real = opa.evaluate

    async def evaluate_then_disable(doc: dict[str, Any]) -> Any:
        result = await real(doc)
        await app[CREDENTIALS].agents.set_status(SUPPORT_BOT, "disabled", "compromised")
        return result

    opa.evaluate = evaluate_then_disable
    body = await decide(pdp, request_for(ALLOW_EXAMPLE, mint(SUPPORT_BOT)))
    await pdp.close()

    assert (body["allow"], codes(body), "credential" in body) == (False, ["agent_disabled"], False)
    assert "while its decision was being made" in body["reasons"][0]["message"]
    (record,) = [r for r in records(tmp_path / "state" / "audit") if r["type"] == "decision"]
    assert record["decision"]["allow"] is False
    assert record["input"]["agent"]["status"] == "disabled"
    assert record["credential"] is None


# ------------------------------------------------------------------------ the store, atomic


@pytest.fixture(params=["sqlite", "redis"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[list[ApprovalStore]]:
    """Two approval stores on the same backing store (two replicas)."""
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path / 'pdp.sqlite3'}"
    else:
        url = request.getfixturevalue("redis_url")
    pair = [await open_approval_store(url), await open_approval_store(url)]
    yield pair
    for s in pair:
        await s.close()


BINDING = Binding(FINANCE, "acme", "secret.read", "payroll.x", "read", "vault", "0" * 64)
OLD_FIELDS = {
    "agent",
    "tenant",
    "action_type",
    "action_name",
    "operation",
    "destination",
    "arguments_digest",
}


T0 = float(int(time.time()))  # Redis keeps approvals until a real time


def fresh(uses: int = 1, now: float = T0) -> Approval:
    return Approval(
        id=f"apr_{uses}_{now}",
        status="pending",
        binding=BINDING,
        reason="r",
        decision_id="d",
        created_at=now,
        expires_at=now + 3600,
        grant_ttl_s=900,
        uses=uses,
        uses_left=uses,
    )


async def test_replicas_together_use_a_grant_no_more_often_than_it_allows(
    stores: list[ApprovalStore],
) -> None:
    a, b = stores
    approval = await a.open_pending(fresh(uses=2), T0)
    await b.decide(approval.id, lambda x: x.granted("approver", "carol", None, T0 + 1), T0 + 1)

    async def use(store: ApprovalStore) -> bool:
        try:
            await store.use(approval.id, BINDING, T0 + 2)
        except ApprovalConflict as exc:
            assert exc.status == "approval_used"
            return False
        return True

    results = await asyncio.gather(*(use(s) for s in (a, b) * 5))

    assert sum(results) == 2
    final = await a.get(approval.id)
    assert final is not None and final.uses_left == 0 and final.effective(T0 + 2) == "used"


async def test_a_pending_approval_is_decided_once_and_only_while_pending(
    stores: list[ApprovalStore],
) -> None:
    a, b = stores
    approval = await a.open_pending(fresh(), T0)
    again = await b.open_pending(fresh(now=T0 + 10), T0 + 10)  # the same call, still pending

    await b.decide(approval.id, lambda x: x.denied("admin", None, "no", T0 + 11), T0 + 11)
    with pytest.raises(ApprovalConflict) as conflict:
        await a.decide(approval.id, lambda x: x.granted("admin", None, None, T0 + 12), T0 + 12)

    assert again.id == approval.id
    assert conflict.value.status == "denied"
    with pytest.raises(ApprovalConflict):
        await a.use(approval.id, BINDING, T0 + 13)
