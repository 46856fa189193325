"""Just-in-time approval end to end: the app on the session's real OPA, its own SQLite
store and audit trail; the approval store's atomic use on SQLite and on a real Redis."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from pdp.approvals import Approval, ApprovalConflict, Binding
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
