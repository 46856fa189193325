"""Task and session histories (pdp.sessions) and delegation chains (pdp.delegation): the
pure merge, both stores, and the decision API on a real OPA deciding with them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pdp.delegation import DelegationVerifier
from pdp.devtrust import mint_delegation
from pdp.identity import TrustBundles
from pdp.sessions import (
    MAX_RECENT,
    MAX_STEPS,
    SessionHistory,
    merge_call,
    session_keys,
    state_changing,
)
from pdp.store import Store, StoreError, open_store
from tests.conftest import ClientFactory
from tests.opa_process import OPAProcess
from tests.redis_process import redis_server, redis_url  # noqa: F401  (fixtures)

BOT = "spiffe://acme.example/agents/support-bot"
ORCHESTRATOR = "spiffe://acme.example/agents/orchestrator"
RESEARCH = "spiffe://globex.example/agents/research-bot"
NOW_NS = 1_800_000_000_000_000_000


def shape(**changes: Any) -> dict[str, Any]:
    doc = {
        "type": "tool.call",
        "name": "jira.search_issues",
        "operation": "read",
        "destination": "jira",
        "destination_type": "tool",
        "sensitivity_rank": 1,
        "state_changing": False,
    }
    doc.update(changes)
    return doc


# --------------------------------------------------------------------------- pure merge


def test_a_first_call_starts_a_history() -> None:
    doc = merge_call(None, "T-1", shape(), NOW_NS)
    assert doc["calls"] == 1
    assert doc["state_changing"] == 0
    assert doc["first_at_ns"] == doc["last_at_ns"] == NOW_NS
    assert (doc["max_sensitivity"], doc["max_sensitivity_rank"]) == ("internal", 1)
    assert doc["action_types"] == {"tool.call": 1}
    assert doc["tools"] == ["jira.search_issues"]
    assert doc["destinations"] == ["jira"]
    assert doc["recent"][0]["at_ns"] == NOW_NS
    assert doc["truncated"] is False


def test_the_highest_sensitivity_stays_and_state_changes_count() -> None:
    doc = merge_call(None, "T-1", shape(sensitivity_rank=3), NOW_NS)
    doc = merge_call(doc, "T-1", shape(state_changing=True, sensitivity_rank=0), NOW_NS + 1)
    assert (doc["max_sensitivity"], doc["max_sensitivity_rank"]) == ("restricted", 3)
    assert (doc["calls"], doc["state_changing"]) == (2, 1)
    assert doc["first_at_ns"] == NOW_NS
    assert doc["last_at_ns"] == NOW_NS + 1


def test_every_list_stays_bounded_and_truncation_is_said() -> None:
    doc = None
    for i in range(MAX_STEPS + 10):
        doc = merge_call(doc, "T-1", shape(name=f"tool.n{i}"), NOW_NS + i)
    assert doc is not None
    assert len(doc["steps"]) == MAX_STEPS
    assert len(doc["recent"]) == MAX_RECENT
    assert doc["recent"][-1]["name"] == f"tool.n{MAX_STEPS + 9}"
    assert doc["truncated"] is True
    assert doc["calls"] == MAX_STEPS + 10
    assert len(json.dumps(doc)) < 64 * 1024


def test_a_repeated_call_shape_is_kept_once() -> None:
    doc = merge_call(None, "T-1", shape(), NOW_NS)
    doc = merge_call(doc, "T-1", shape(), NOW_NS + 1)
    assert len(doc["steps"]) == 1
    assert len(doc["recent"]) == 2


def test_histories_are_keyed_by_tenant_and_id() -> None:
    request = {"tenant": "acme", "task": {"id": "T-1", "session": "s-1"}}
    assert session_keys(request) == {"task": "task/acme/T-1", "session": "session/acme/s-1"}
    assert session_keys({"tenant": "globex", "task": {"id": "T-1"}}) == {"task": "task/globex/T-1"}
    assert session_keys({"tenant": "acme"}) == {}


ACTIONS: list[dict[str, Any]] = [
    {"type": "tool.call", "operation": "read"},
    {"type": "tool.call", "operation": "write"},
    {"type": "tool.call", "operation": "execute"},
    {"type": "tool.call", "operation": None},
    {"type": "http.request", "operation": None},
    {"type": "http.request", "operation": "read"},
    {"type": "data.read", "operation": None},
    {"type": "data.write", "operation": "read"},
    {"type": "data.export", "operation": None},
    {"type": "secret.read", "operation": "delete"},
    {"type": "model.invoke", "operation": None},
]


def test_python_and_rego_agree_on_what_changes_state(opa_bin: str, tmp_path: Path) -> None:
    """The history counts state changes in Python; the budget rule judges the current call
    in Rego: both must apply one definition."""
    rego = Path(__file__).parent.parent / "policies" / "pdp" / "rules" / "session.rego"
    for action in ACTIONS:
        (tmp_path / "input.json").write_text(json.dumps({"action": action}))
        proc = subprocess.run(
            [opa_bin, "eval", "--format", "json", "-d", str(rego), "-d",
             str(rego.parent.parent / "lib"), "-d", str(rego.parent / "egress.rego"),
             "-d", str(rego.parent.parent / "facts"),
             "-i", str(tmp_path / "input.json"), "data.pdp.facts.state_changing"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        value = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
        assert value is state_changing(action), action


# --------------------------------------------------------------------------- stores


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'pdp.sqlite3'}"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await open_store(store_url)
    yield opened
    await opened.close()


def counting(key: str, doc: dict[str, Any] | None) -> dict[str, Any]:
    return {"n": (doc or {}).get("n", 0) + 1}


async def test_concurrent_updates_of_one_history_are_not_lost(store: Store, store_url: str) -> None:
    # Two connections on the same store, as two replicas would have.
    other = await open_store(store_url)
    try:
        await asyncio.gather(
            *(
                s.update_session_histories(["task/acme/T-1"], counting, ttl_s=60, now=1.0)
                for _ in range(25)
                for s in (store, other)
            )
        )
    finally:
        await other.close()
    found = await store.session_histories(["task/acme/T-1", "task/acme/none"], now=2.0)
    assert found == {"task/acme/T-1": {"n": 50}}


async def test_an_expired_history_is_gone(store: Store) -> None:
    now = time.time()
    await store.update_session_histories(["task/acme/T-1"], counting, ttl_s=0.2, now=now)
    assert await store.session_histories(["task/acme/T-1"], now=now) != {}
    await asyncio.sleep(0.4)
    assert await store.session_histories(["task/acme/T-1"], now=now + 0.4) == {}


class BrokenStore:
    """A store whose every call fails (unit test of our own fail-closed logic)."""

    kind = "redis"

    async def session_histories(self, keys: Any, now: float) -> dict[str, Any]:
        raise StoreError("Redis store: connection refused")

    async def update_session_histories(self, *args: Any, **kw: Any) -> None:
        raise StoreError("Redis store: connection refused")


async def test_an_unreadable_history_is_unavailable_not_empty() -> None:
    sessions = SessionHistory(BrokenStore(), ttl_s=60)  # type: ignore[arg-type]
    snap = await sessions.snapshot({"tenant": "acme", "task": {"id": "T-1"}}, NOW_NS)
    assert snap["available"] is False
    assert "connection refused" in snap["error"]
    untasked = await sessions.snapshot({"tenant": "acme"}, NOW_NS)
    assert untasked["available"] is True


# --------------------------------------------------------------------------- the API


def crm_read(token: str, task: str, session: str = "s-1") -> dict[str, Any]:
    return {
        "agent": {"token": token},
        "tenant": "acme",
        "task": {"id": task, "purpose": "triage support tickets", "session": session},
        "action": {"type": "data.read", "name": "crm.customers.get", "operation": "read"},
        "destination": {
            "type": "database",
            "name": "crm-db",
            "url": "postgres://crm-db.prod.acme.internal/crm",
        },
        "data": {"sensitivity": "confidential", "categories": ["pii"]},
    }


def github_search(token: str, task: str, session: str = "s-1") -> dict[str, Any]:
    return {
        "agent": {"token": token},
        "tenant": "acme",
        "task": {"id": task, "purpose": "triage support tickets", "session": session},
        "action": {"type": "tool.call", "name": "github.search_code", "operation": "read"},
        "destination": {"type": "tool", "name": "github", "url": "https://api.github.com/x"},
        "data": {"sensitivity": "public"},
    }


async def decide(client: TestClient[Any, Any], body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/v1/decisions", json=body)
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


def codes(answer: dict[str, Any]) -> list[str]:
    return [r["code"] for r in answer["reasons"]]


@pytest.fixture
async def client(
    make_client: ClientFactory, shared_opa: OPAProcess, tmp_path: Path
) -> TestClient[Any, Any]:
    return await make_client(shared_opa.url, opa_timeout_ms=5000, audit_dir=tmp_path / "audit")


async def test_egress_after_a_confidential_read_in_the_task_is_a_toxic_flow(
    client: TestClient[Any, Any], mint: Callable[..., str]
) -> None:
    token = mint(BOT)
    first = await decide(client, github_search(token, "T-clean", "s-a"))
    assert first["allow"] is True, first
    assert (await decide(client, crm_read(token, "T-1", "s-b")))["allow"] is True

    denied = await decide(client, github_search(token, "T-1", "s-c"))

    assert (denied["allow"], codes(denied)) == (False, ["session_toxic_flow"])
    assert "confidential data was touched earlier" in denied["reasons"][0]["message"]
    # Another task of the same agent has its own history.
    assert (await decide(client, github_search(token, "T-2", "s-d")))["allow"] is True


async def test_the_mcp_session_history_taints_other_tasks_of_the_session(
    client: TestClient[Any, Any], mint: Callable[..., str]
) -> None:
    token = mint(BOT)
    assert (await decide(client, crm_read(token, "T-1", "s-shared")))["allow"] is True
    denied = await decide(client, github_search(token, "T-9", "s-shared"))
    assert codes(denied) == ["session_toxic_flow"]


async def test_a_denied_call_leaves_no_history(
    client: TestClient[Any, Any], mint: Callable[..., str]
) -> None:
    token = mint(BOT)
    refused = crm_read(token, "T-1")
    refused["action"]["operation"] = "delete"  # not entitled: denied
    assert (await decide(client, refused))["allow"] is False
    assert (await decide(client, github_search(token, "T-1")))["allow"] is True


async def test_the_recorded_input_carries_the_history_it_was_decided_on(
    client: TestClient[Any, Any], mint: Callable[..., str], tmp_path: Path
) -> None:
    token = mint(BOT)
    first = await decide(client, crm_read(token, "T-1"))
    second = await decide(client, github_search(token, "T-1"))
    records = {}
    for path in sorted((tmp_path / "audit").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            records[rec.get("decision_id")] = rec
    before = records[first["decision_id"]]["input"]["session"]
    after = records[second["decision_id"]]["input"]["session"]
    assert before["available"] is True and before["origin"] == "sqlite"
    assert before["task"] is None
    assert after["task"]["calls"] == 1
    assert after["task"]["max_sensitivity"] == "confidential"
    assert after["task"]["steps"][0]["destination"] == "crm-db"
    assert after["task"]["age_s"] >= 0


# --------------------------------------------------------------------------- chains


def delegated(token: str, assertion: str) -> dict[str, Any]:
    body = github_search(token, "T-chain")
    body["agent"]["delegation"] = assertion
    return body


async def test_a_verified_chain_within_the_tenant_is_allowed_and_recorded(
    client: TestClient[Any, Any], mint: Callable[..., str], dev_state: Path
) -> None:
    assertion = mint_delegation(
        dev_state, "acme.example", "user:alice@acme.example", [BOT], tenant="acme"
    )
    answer = await decide(client, delegated(mint(BOT), assertion))
    assert answer["allow"] is True, answer


@pytest.mark.parametrize(
    ("issuer", "actors", "tenant", "code"),
    [
        ("acme.example", [BOT, RESEARCH], "acme", "delegation_cross_tenant"),
        ("acme.example", [BOT], "globex", "delegation_cross_tenant"),
        ("globex.example", [BOT], "acme", "delegation_cross_tenant"),
        ("acme.example", [ORCHESTRATOR, BOT], "acme", "delegation_actor_mismatch"),
        ("acme.example", [BOT, BOT, BOT, BOT], "acme", "delegation_too_deep"),
    ],
    ids=["foreign-actor", "foreign-user", "foreign-issuer", "not-the-caller", "too-deep"],
)
async def test_a_chain_the_library_refuses_is_denied_with_its_reason(
    client: TestClient[Any, Any],
    mint: Callable[..., str],
    dev_state: Path,
    issuer: str,
    actors: list[str],
    tenant: str,
    code: str,
) -> None:
    assertion = mint_delegation(dev_state, issuer, "user:alice", actors, tenant=tenant)
    answer = await decide(client, delegated(mint(BOT), assertion))
    assert answer["allow"] is False
    assert code in codes(answer)


async def test_a_tampered_assertion_is_delegation_invalid(
    client: TestClient[Any, Any], mint: Callable[..., str], dev_state: Path
) -> None:
    assertion = mint_delegation(dev_state, "acme.example", "user:alice", [BOT], tenant="acme")
    head, body, sig = assertion.split(".")
    forged = f"{head}.{body}.{sig[:-4]}AAAA"
    answer = await decide(client, delegated(mint(BOT), forged))
    assert codes(answer) == ["delegation_invalid"]


def test_the_chain_lists_actors_outermost_first(dev_state: Path) -> None:
    bundles = TrustBundles.from_files(
        {"acme.example": dev_state / "dev-trust" / "acme.example" / "bundle.json"}
    )
    verifier = DelegationVerifier(bundles, "agent-pdp")
    assertion = mint_delegation(dev_state, "acme.example", "user:alice", [BOT, ORCHESTRATOR])
    chain = verifier.chain(assertion)
    assert chain["verified"] is True
    assert [a["sub"] for a in chain["actors"]] == [BOT, ORCHESTRATOR]
    assert chain["depth"] == 2
    assert chain["actors"][0]["trust_domain"] == "acme.example"
    wrong_audience = mint_delegation(dev_state, "acme.example", "u", [BOT], audience="other")
    assert verifier.chain(wrong_audience)["error"]["code"] == "delegation.audience_mismatch"
    expired = mint_delegation(dev_state, "acme.example", "u", [BOT], clock=lambda: 1000.0)
    assert verifier.chain(expired)["error"]["code"] == "delegation.expired"
    assert verifier.chain("not-a-jwt")["error"]["code"] == "delegation.malformed"
