"""The decision cache: policy-declared TTLs honoured on a real OPA, a hit still mints and
records, every invalidation and every never-cache rule (pdp/decision_cache.py)."""

from __future__ import annotations

import asyncio
import copy
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from prometheus_client import CollectorRegistry

from pdp.app import create_app
from pdp.bundle import BuiltBundle, build_bundle
from pdp.decision_cache import DecisionCache, check_bundles, event, uncacheable
from pdp.identity import SVIDVerifier, TrustBundles
from pdp.opa import OPAResult
from pdp.schema import load_schema
from pdp.state import CREDENTIALS, DECISION_CACHE, DECISIONS, OPA

from .conftest import EXAMPLES, POLICIES, load_example, remote_settings
from .http_helpers import metric
from .opa_process import OPAProcess

Client = TestClient[Any, Any]
ALLOW = next(p for p in EXAMPLES if p.name == "allow-support-bot-jira-search.json")
ADMIN = "cache-test-admin-credential-0123"


class ListRecorder:
    """Keeps every decision record (the audit trail is tested with the real writer below)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def record(self, record: dict[str, Any]) -> None:
        self.records.append(record)


def allow_request(mint: Callable[..., str], **changes: Any) -> dict[str, Any]:
    example = load_example(ALLOW)
    request: dict[str, Any] = copy.deepcopy(example["request"])
    request["agent"]["token"] = mint(example["spiffe_id"])
    # No task id or session: a call of a task is decided on the task's history
    # (pdp.sessions), which changes with every allowed call, so it is never cached.
    request["task"] = {"purpose": request["task"]["purpose"]}
    request.update(changes)
    return request


async def decide(client: Client, request: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/v1/decisions", json=request)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def metrics(client: Client) -> str:
    return await (await client.get("/metrics")).text()


@pytest.fixture
def recorder() -> ListRecorder:
    return ListRecorder()


@pytest.fixture
def start(
    aiohttp_client: Any, dev_state: Path, shared_opa: OPAProcess, recorder: ListRecorder
) -> Callable[..., Any]:
    async def _start(opa_url: str | None = None, **overrides: Any) -> Client:
        overrides.setdefault("audit_enabled", False)
        overrides.setdefault("opa_timeout_ms", 5000)
        overrides.setdefault("admin_token", ADMIN)
        settings = remote_settings(dev_state, opa_url or shared_opa.url, **overrides)
        client: Client = await aiohttp_client(create_app(settings, recorder=recorder))
        return client

    return _start


# --------------------------------------------------------------------------- hits


async def test_a_repeated_low_risk_read_is_answered_from_the_cache(
    start: Callable[..., Any], mint: Callable[..., str], recorder: ListRecorder
) -> None:
    client = await start()
    request = allow_request(mint)
    first = await decide(client, request)
    second = await decide(client, {**request, "request_id": "req-repeat"})

    assert first["allow"] is second["allow"] is True
    assert second["request_id"] == "req-repeat"
    assert first["decision_id"] != second["decision_id"]
    assert second["policy"] == first["policy"]
    # A hit still mints its own credential.
    assert first["credential"]["jti"] != second["credential"]["jti"]
    claims = jwt.decode(second["credential"]["token"], options={"verify_signature": False})
    assert claims["tctx"]["decision_id"] == second["decision_id"]
    # ... and writes its own record, marked as a hit of the first decision.
    miss, hit = recorder.records
    assert miss["cache"] == {"hit": False, "decision_id": None, "ttl_seconds": 30}
    assert hit["cache"] == {"hit": True, "decision_id": first["decision_id"], "ttl_seconds": 30}
    assert hit["decision_id"] == second["decision_id"]
    assert hit["credential"]["jti"] == second["credential"]["jti"]
    assert hit["policy"]["opa_decision_id"] is None
    assert hit["input"]["request"]["id"] == "req-repeat"

    text = await metrics(client)
    assert metric(text, "pdp_decision_cache_hits_total") == 1
    assert metric(text, "pdp_decision_cache_misses_total") == 1
    # OPA was asked once.
    assert metric(text, "pdp_opa_request_duration_seconds_count") == 1


async def test_a_request_that_differs_in_anything_but_id_and_time_is_a_miss(
    start: Callable[..., Any], mint: Callable[..., str]
) -> None:
    client = await start()
    request = allow_request(mint)
    await decide(client, request)
    changed = copy.deepcopy(request)
    changed["action"]["arguments"]["maxResults"] = 21
    await decide(client, changed)
    text = await metrics(client)
    assert metric(text, "pdp_decision_cache_hits_total") == 0
    assert metric(text, "pdp_decision_cache_misses_total") == 2


async def test_a_hit_is_recorded_in_the_audit_trail_in_the_record_schema(
    start: Callable[..., Any], mint: Callable[..., str], tmp_path: Path
) -> None:
    from pdp.audit.segment import iter_records

    client = await start(audit_enabled=True, audit_dir=tmp_path / "audit")
    request = allow_request(mint)
    await decide(client, request)
    second = await decide(client, request)
    await client.close()
    records = [r for r in iter_records(tmp_path / "audit") if r["type"] == "decision"]
    validator = Draft202012Validator(load_schema("audit-record"))
    for record in records:
        validator.validate(record)
    assert records[-1]["decision_id"] == second["decision_id"]
    assert records[-1]["cache"]["hit"] is True


async def test_the_cache_can_be_turned_off(
    start: Callable[..., Any], mint: Callable[..., str]
) -> None:
    client = await start(decision_cache_size=0)
    request = allow_request(mint)
    await decide(client, request)
    await decide(client, request)
    text = await metrics(client)
    assert metric(text, "pdp_opa_request_duration_seconds_count") == 2
    assert metric(text, "pdp_decision_cache_hits_total") == 0


# --------------------------------------------------------------------------- never cached


@pytest.mark.parametrize(
    ("example", "stored"),
    [
        ("deny-no-token.json", 0),  # authn.* deny
        ("deny-finance-analyst-vault-secret-approval-required.json", 0),  # approval involved
        ("allow-support-bot-internal-llm-summary.json", 0),  # the library declares no TTL
        # A low-risk read the library makes cacheable, but of a task: the first call (no
        # history yet) is stored, and being allowed it changes the task's history, which
        # every later call is decided on (input.session): none of them is a hit.
        ("allow-support-bot-jira-search.json", 1),
    ],
)
async def test_decisions_the_cache_must_not_keep_always_go_to_opa(
    start: Callable[..., Any], mint: Callable[..., str], example: str, stored: int
) -> None:
    client = await start()
    doc = load_example(next(p for p in EXAMPLES if p.name == example))
    request = copy.deepcopy(doc["request"])
    if doc["spiffe_id"]:
        request.setdefault("agent", {})["token"] = mint(doc["spiffe_id"])
    for _ in range(3):
        await decide(client, request)
    text = await metrics(client)
    assert metric(text, "pdp_decision_cache_hits_total") == 0
    assert metric(text, "pdp_decision_cache_entries") == stored
    assert metric(text, "pdp_opa_request_duration_seconds_count") == 3


def _result(decision: dict[str, Any] | None, revision: str = "r1") -> OPAResult:
    return OPAResult(decision, revision, 0.001)


AUTHENTICATED_INPUT: dict[str, Any] = {
    "identity": {"authenticated": True, "spiffe_id": "spiffe://acme.example/agents/a"},
    "action": {"type": "tool.call"},
    "now": {"unix_ns": 1},
    "request": {"id": "r"},
}
CACHEABLE: dict[str, Any] = {
    "allow": True,
    "reasons": [],
    "obligations": {"credential": {"ttl_seconds": 60}, "approval": None},
    "cache": {"ttl_seconds": 30},
}


@pytest.mark.parametrize(
    ("why", "input_patch", "request_patch", "decision_patch"),
    [
        ("unauthenticated", {"identity": {"authenticated": False}}, {}, {}),
        ("approval", {}, {"approval_id": "ap-1"}, {}),
        ("approval", {}, {}, {"obligations": {"approval": {"required": True}}}),
        ("approval", {}, {}, {"reasons": [{"code": "approval_required", "message": "m"}]}),
        (
            "approval",
            {},
            {},
            {"reasons": [{"code": "x", "message": "m", "rule": "pdp.rules.approvals"}]},
        ),
        (
            "session",
            {"session": {"available": True, "task": {"calls": 3}, "session": None}},
            {},
            {},
        ),
        (
            "session",
            {"session": {"available": True, "task": None, "session": {"calls": 1}}},
            {},
            {},
        ),
        ("session", {"session": {"available": False, "task": None, "session": None}}, {}, {}),
        (
            "session",
            {},
            {},
            {"reasons": [{"code": "x", "message": "m", "rule": "pdp.rules.session"}]},
        ),
        ("authn", {}, {}, {"reasons": [{"code": "authn.expired", "message": "m"}]}),
    ],
)
def test_never_cache_rules_hold_whatever_ttl_the_policy_declares(
    why: str,
    input_patch: dict[str, Any],
    request_patch: dict[str, Any],
    decision_patch: dict[str, Any],
) -> None:
    input_doc = {**AUTHENTICATED_INPUT, **input_patch}
    decision = {**CACHEABLE, **decision_patch}
    assert uncacheable(input_doc, request_patch, decision) == why
    cache = _cache()
    key = cache.key(input_doc)
    assert cache.put(key, cache.generation, input_doc, request_patch, _result(decision), "d1") == 0
    assert len(cache) == 0


def _cache(clock: Callable[[], float] | None = None, **kw: Any) -> DecisionCache:
    kw.setdefault("max_entries", 10)
    kw.setdefault("max_ttl_s", 60)
    cache = DecisionCache(registry=CollectorRegistry(), clock=clock or (lambda: 0.0), **kw)
    cache.bundle_activated("r1", "gen-1")
    return cache


def _put(
    cache: DecisionCache,
    input_doc: dict[str, Any],
    request: dict[str, Any] | None = None,
    decision: dict[str, Any] | None = None,
    revision: str = "r1",
) -> int:
    key = cache.key(input_doc)
    return cache.put(
        key,
        cache.generation,
        input_doc,
        request or {},
        _result(decision or CACHEABLE, revision),
        "d1",
    )


def test_errors_and_zero_ttls_are_never_cached() -> None:
    cache = _cache()
    assert (
        _put(cache, AUTHENTICATED_INPUT, decision={**CACHEABLE, "cache": {"ttl_seconds": 0}}) == 0
    )
    key = cache.key(AUTHENTICATED_INPUT)
    error = OPAResult(None, "r1", 0.001, "policy.undefined", "undefined")
    assert cache.put(key, cache.generation, AUTHENTICATED_INPUT, {}, error, "d1") == 0
    assert len(cache) == 0
    assert _put(cache, AUTHENTICATED_INPUT) == 30


def test_the_policys_ttl_is_capped_and_entries_expire() -> None:
    now = [100.0]
    cache = _cache(lambda: now[0], max_ttl_s=10)
    assert _put(cache, AUTHENTICATED_INPUT) == 10
    key = cache.key(AUTHENTICATED_INPUT)
    now[0] = 109.9
    assert cache.get(key) is not None
    now[0] = 110.0
    assert cache.get(key) is None
    assert cache.metrics.evictions.labels("expired")._value.get() == 1


def test_the_key_leaves_out_only_the_request_id_and_time() -> None:
    cache = _cache()
    base = cache.key(AUTHENTICATED_INPUT)
    assert cache.key({**AUTHENTICATED_INPUT, "now": {"unix_ns": 2}, "request": {"id": "x"}}) == base
    assert cache.key({**AUTHENTICATED_INPUT, "action": {"type": "data.read"}}) != base
    assert cache.key(AUTHENTICATED_INPUT, "gen-2") != base


def test_the_lru_bound_evicts_the_least_recently_used() -> None:
    cache = _cache(max_entries=2)
    docs = [{**AUTHENTICATED_INPUT, "context": {"n": i}} for i in range(3)]
    _put(cache, docs[0])
    _put(cache, docs[1])
    assert cache.get(cache.key(docs[0])) is not None  # 0 is now the most recent
    _put(cache, docs[2])
    assert cache.get(cache.key(docs[1])) is None
    assert cache.get(cache.key(docs[0])) is not None
    assert cache.metrics.evictions.labels("capacity")._value.get() == 1


def test_a_decision_from_another_revision_is_not_stored_and_asks_for_a_bundle_check() -> None:
    cache = _cache()
    assert _put(cache, AUTHENTICATED_INPUT, revision="r2") == 0
    assert cache.check_bundle.is_set()
    # and one decided under a generation that changed while it was in flight
    key = cache.key(AUTHENTICATED_INPUT)
    cache.bundle_activated("r1", "gen-2")
    assert cache.put(key, "gen-1", AUTHENTICATED_INPUT, {}, _result(CACHEABLE), "d1") == 0


def test_a_policy_that_fails_the_safety_check_gets_no_entries() -> None:
    cache = _cache()
    cache.policy_safe = False
    assert _put(cache, AUTHENTICATED_INPUT) == 0


# --------------------------------------------------------------------------- invalidation


def _two_agents_two_tasks() -> tuple[DecisionCache, list[dict[str, Any]]]:
    cache = _cache()
    docs = []
    for agent in ("a", "b"):
        for task in ("T-1", "T-2"):
            doc = {
                **AUTHENTICATED_INPUT,
                "identity": {"authenticated": True, "spiffe_id": f"spiffe://acme.example/{agent}"},
                "task": {"id": task},
            }
            _put(cache, doc, {"task": {"id": task, "session": f"s-{task}"}})
            docs.append(doc)
    assert len(cache) == 4
    return cache, docs


@pytest.mark.parametrize(
    ("message", "left", "reason"),
    [
        (event("agent", "spiffe://acme.example/a"), 2, "agent"),
        ("agents", 0, "agent"),  # a lifecycle change from another replica: whose is not said
        (event("session", "T-1"), 2, "session"),
        (event("session", "s-T-2"), 2, "session"),
        (event("approval", "spiffe://acme.example/b"), 2, "approval"),
        (event("trust_bundle"), 0, "trust_bundle"),
        (event("all"), 0, "all"),
        ("keys", 4, None),  # not the cache's business
        ("cache:unknown-scope:x", 0, "all"),  # unknown: drop everything (fail safe)
    ],
)
def test_store_events_drop_what_the_change_may_affect(
    message: str, left: int, reason: str | None
) -> None:
    cache, _ = _two_agents_two_tasks()
    cache.on_event(message)
    assert len(cache) == left
    if reason is not None:
        assert cache.metrics.evictions.labels(reason)._value.get() == 4 - left


def test_a_bundle_activation_drops_everything() -> None:
    cache, docs = _two_agents_two_tasks()
    cache.bundle_activated("r2", "gen-2")
    assert len(cache) == 0
    assert cache.metrics.evictions.labels("bundle")._value.get() == 4
    assert cache.get(cache.key(docs[0])) is None


async def test_disabling_and_enabling_an_agent_drops_its_entries(
    start: Callable[..., Any], mint: Callable[..., str], tmp_path: Path
) -> None:
    # a store of this test's own: the session's state dir is shared by other tests
    client = await start(store_url=f"sqlite://{tmp_path / 'store.sqlite3'}")
    request = allow_request(mint)
    await decide(client, request)
    await decide(client, request)  # a hit
    bot = load_example(ALLOW)["spiffe_id"]
    auth = {"Authorization": f"Bearer {ADMIN}"}
    resp = await client.post(
        "/v1/agents/disable", json={"spiffe_id": bot, "reason": "test"}, headers=auth
    )
    assert resp.status == 200, await resp.text()
    text = await metrics(client)
    assert metric(text, "pdp_decision_cache_evictions_total", reason="agent") == 1
    denied = await decide(client, request)
    assert denied["allow"] is False
    assert "credential" not in denied

    resp = await client.post(
        "/v1/agents/enable", json={"spiffe_id": bot, "reason": "test"}, headers=auth
    )
    assert resp.status == 200
    again = await decide(client, request)
    assert again["allow"] is True and "credential" in again
    text = await metrics(client)
    assert metric(text, "pdp_decision_cache_hits_total") == 1  # only the one before the disable


async def test_new_trust_bundles_drop_every_entry(
    start: Callable[..., Any], mint: Callable[..., str]
) -> None:
    client = await start()
    request = allow_request(mint)
    await decide(client, request)
    cache = client.app[DECISION_CACHE]
    assert cache is not None and len(cache) == 1
    client.app[DECISIONS].set_verifier(SVIDVerifier(TrustBundles.from_documents({}), "agent-pdp"))
    assert len(cache) == 0
    text = await metrics(client)
    assert metric(text, "pdp_decision_cache_evictions_total", reason="trust_bundle") == 1


async def test_announced_changes_reach_this_replicas_cache_at_once(
    start: Callable[..., Any], mint: Callable[..., str]
) -> None:
    client = await start()
    request = allow_request(mint)
    await decide(client, request)
    cache, credentials = client.app[DECISION_CACHE], client.app[CREDENTIALS]
    assert cache is not None
    # (Calls that name a task are never cached, pdp.sessions: "all" stands in for a scope.)
    await credentials.announce(event("all"))
    assert len(cache) == 0
    await decide(client, request)
    await credentials.announce(event("approval", load_example(ALLOW)["spiffe_id"]))
    assert len(cache) == 0


# --------------------------------------------------------------------------- bundle activation


class BundleServer:
    """A bundle service on loopback (a thread): OPA polls it, tests swap what it serves."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                body = server.payload
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def bundle_server(policy_bundle: BuiltBundle) -> Iterator[BundleServer]:
    server = BundleServer(policy_bundle.path.read_bytes())
    yield server
    server.close()


async def test_a_bundle_activation_drops_the_entries_of_the_old_bundle(
    start: Callable[..., Any],
    mint: Callable[..., str],
    opa_bin: str,
    policy_bundle: BuiltBundle,
    bundle_server: BundleServer,
    tmp_path: Path,
) -> None:
    config = tmp_path / "opa.yaml"
    config.write_text(
        f"services:\n  b:\n    url: {bundle_server.url}\n"
        "bundles:\n  pdp:\n    service: b\n    resource: bundle.tar.gz\n"
        "    polling:\n      min_delay_seconds: 1\n      max_delay_seconds: 1\n"
    )
    opa = OPAProcess(opa_bin, tmp_path / "opa.sock", "--config-file", str(config)).start()
    try:
        client = await start(opa.url, decision_cache_bundle_check_ms=50)
        request = allow_request(mint)
        first = await decide(client, request)
        await decide(client, request)
        assert first["policy"]["revision"] == policy_bundle.revision
        cache = client.app[DECISION_CACHE]
        assert cache is not None and len(cache) == 1

        new = build_bundle(opa_bin, POLICIES, tmp_path / "b2.tar.gz", revision="rev-2")
        bundle_server.payload = new.path.read_bytes()
        for _ in range(200):  # OPA polls every second; the PDP checks every 50 ms
            if cache.revision == "rev-2":
                break
            await asyncio.sleep(0.05)
        assert cache.revision == "rev-2"
        assert len(cache) == 0
        after = await decide(client, request)
        assert after["policy"]["revision"] == "rev-2"
        text = await metrics(client)
        assert metric(text, "pdp_decision_cache_evictions_total", reason="bundle") == 1
        assert metric(text, "pdp_decision_cache_hits_total") == 1
    finally:
        opa.stop()


async def test_when_opa_cannot_say_which_bundle_is_active_nothing_is_served_from_the_cache(
    start: Callable[..., Any], mint: Callable[..., str], own_opa: OPAProcess
) -> None:
    client = await start(own_opa.url, decision_cache_bundle_check_ms=20)
    request = allow_request(mint)
    await decide(client, request)
    cache = client.app[DECISION_CACHE]
    assert cache is not None and len(cache) == 1
    own_opa.stop()
    for _ in range(100):
        if not cache.serving:
            break
        await asyncio.sleep(0.02)
    assert not cache.serving and len(cache) == 0
    resp = await client.post("/v1/decisions", json=request)
    assert resp.status == 503


def _edited_policies(tmp_path: Path) -> Path:
    """A copy of the shipped policies whose inventory no longer entitles support-bot to
    read jira (its first entitlement removed)."""
    import json
    import shutil

    copy_dir = tmp_path / "edited-policies"
    shutil.copytree(POLICIES, copy_dir)
    inventory = copy_dir / "data" / "inventory" / "data.json"
    doc = json.loads(inventory.read_text())
    bot = doc["agents"][load_example(ALLOW)["spiffe_id"]]
    bot["entitlements"] = [e for e in bot["entitlements"] if "jira" not in e["destinations"]]
    inventory.write_text(json.dumps(doc))
    return copy_dir


async def _serve_swapped_bundle(
    start: Callable[..., Any],
    mint: Callable[..., str],
    opa_bin: str,
    tmp_path: Path,
    first: bytes,
    second: bytes,
) -> tuple[list[dict[str, Any]], DecisionCache]:
    """Serve ``first`` to a real OPA, decide the allow example twice, swap in ``second``,
    wait until OPA has activated it and the cache has checked the bundles, decide again:
    the three answers and the cache."""
    server = BundleServer(first)
    config = tmp_path / "opa.yaml"
    config.write_text(
        f"services:\n  b:\n    url: {server.url}\n"
        "bundles:\n  pdp:\n    service: b\n    resource: bundle.tar.gz\n"
        "    polling:\n      min_delay_seconds: 1\n      max_delay_seconds: 1\n"
    )
    opa = OPAProcess(opa_bin, tmp_path / "opa.sock", "--config-file", str(config)).start()
    try:
        client = await start(opa.url)
        engine = client.app[OPA]
        request = allow_request(mint)
        answers = [await decide(client, request), await decide(client, request)]
        cache = client.app[DECISION_CACHE]
        assert cache is not None
        server.payload = second
        for _ in range(300):  # OPA polls every second
            if _activated(await engine.data("system/bundles", timeout_s=2), second):
                break
            await asyncio.sleep(0.05)
        await check_bundles(cache, engine)  # what the bundle watch does next
        answers.append(await decide(client, request))
        return answers, cache
    finally:
        opa.stop()
        server.close()


def _activated(bundles: Any, payload: bytes) -> bool:
    """Whether OPA's active bundle is the one in ``payload`` (its manifest)."""
    import io
    import json
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.lstrip("/") == ".manifest")
        fileobj = tar.extractfile(member)
        assert fileobj is not None
        manifest = json.loads(fileobj.read())
    return isinstance(bundles, dict) and any(
        (b or {}).get("manifest") == manifest for b in bundles.values()
    )


async def test_a_bundle_with_the_same_revision_but_other_facts_drops_every_entry(
    start: Callable[..., Any], mint: Callable[..., str], opa_bin: str, tmp_path: Path
) -> None:
    # The same revision string, the inventory edited: the entries made under the old facts
    # must not be served (the manifest's content digest tells the two bundles apart).
    old = build_bundle(opa_bin, POLICIES, tmp_path / "old.tar.gz", revision="same")
    new = build_bundle(
        opa_bin, _edited_policies(tmp_path), tmp_path / "new.tar.gz", revision="same"
    )
    answers, cache = await _serve_swapped_bundle(
        start, mint, opa_bin, tmp_path, old.path.read_bytes(), new.path.read_bytes()
    )
    assert [a["allow"] for a in answers[:2]] == [True, True]
    assert answers[2]["allow"] is False
    assert answers[2]["policy"]["revision"] == "same"
    assert "credential" not in answers[2]
    assert cache.metrics.evictions.labels("bundle")._value.get() == 1


async def test_a_bundle_whose_revision_alone_names_its_contents_gets_no_entries(
    start: Callable[..., Any], mint: Callable[..., str], opa_bin: str, tmp_path: Path
) -> None:
    # Built by plain `opa build` (no content digest in its manifest) and served with no
    # etag: nothing could tell a rebuilt bundle with the same revision apart, so nothing
    # is cached under it.
    import subprocess

    plain = tmp_path / "plain.tar.gz"
    built = build_bundle(opa_bin, POLICIES, tmp_path / "stamped.tar.gz", revision="same")
    stage = tmp_path / "stage"
    stage.mkdir()
    subprocess.run(["tar", "-xzf", str(built.path), "-C", str(stage)], check=True)
    (stage / ".manifest").unlink()
    subprocess.run(
        [opa_bin, "build", "pdp", "data.json", "--revision", "same", "-o", str(plain)],
        cwd=stage,
        check=True,
        capture_output=True,
    )
    payload = plain.read_bytes()
    answers, cache = await _serve_swapped_bundle(start, mint, opa_bin, tmp_path, payload, payload)
    assert [a["allow"] for a in answers] == [True, True, True]
    assert len(cache) == 0
    assert not cache.policy_safe
    assert any("content digest" in p for p in cache.policy_problems)
    assert cache.metrics.hits._value.get() == 0


def test_a_bundle_is_identified_by_its_content_digest_or_its_etag() -> None:
    from pdp.cache_safety import unidentified

    digest = {"manifest": {"revision": "r", "metadata": {"content_digest": "sha256:ab"}}}
    assert unidentified({"a": digest, "b": {"manifest": {"revision": "r"}, "etag": "e1"}}) == []
    for bare in (
        {"manifest": {"revision": "r"}, "etag": ""},
        {"manifest": {"revision": "r", "metadata": {"content_digest": ""}}},
        {"manifest": {"revision": "r", "metadata": "sha256:ab"}},
        None,
    ):
        problems = unidentified({"a": digest, "b": bare})
        assert len(problems) == 1 and problems[0].endswith(": b")


async def test_a_trust_bundle_rotation_seen_by_the_watcher_drops_every_entry(
    start: Callable[..., Any], mint: Callable[..., str], dev_state: Path, tmp_path: Path
) -> None:
    # The path a rotation takes in a running PDP: the watched file changes, the watcher
    # reloads it, and the decision cache follows (pdp.app wires it to BundleWatcher).
    import json

    from pdp.trustwatch import BUNDLE_WATCHER

    bundle = tmp_path / "acme.json"
    jwks = json.loads((dev_state / "dev-trust" / "acme.example" / "bundle.json").read_text())
    bundle.write_text(json.dumps(jwks))
    client = await start(
        dev_trust_domains=(),
        trust_bundles={"acme.example": bundle},
        trust_bundle_refresh_s=0,  # no poller: the test runs the watcher's check itself
    )
    request = allow_request(mint)
    await decide(client, request)
    await decide(client, request)
    cache = client.app[DECISION_CACHE]
    assert cache is not None and len(cache) == 1

    bundle.write_text(json.dumps(jwks, indent=2))  # the same keys, rewritten: a new bundle
    assert client.app[BUNDLE_WATCHER].check() == {"acme.example"}

    assert len(cache) == 0
    after = await decide(client, request)
    assert after["allow"] is True
    text = await metrics(client)
    assert metric(text, "pdp_decision_cache_evictions_total", reason="trust_bundle") == 1
    assert metric(text, "pdp_decision_cache_hits_total") == 1


@pytest.mark.parametrize(
    "member",
    ["spiffe_id", "trust_domain", "path", "expires_at", "jti", "authenticated", "error"],
)
def test_tokens_whose_verified_identities_differ_in_any_member_have_other_keys(
    member: str,
) -> None:
    # Everything the verified token contributes to the input (identity.to_input) is in the
    # key: two tokens the policy could tell apart never share an entry.
    from pdp.identity import Identity

    identity = Identity(
        True, "spiffe://acme.example/agents/a", "acme.example", ("agents", "a"), 1_900_000_000,
        "jti-1", "kid-1",
    ).to_input()  # fmt: skip
    assert member in identity
    other = {**identity, member: {"changed": member}}
    cache = _cache()
    base = {**AUTHENTICATED_INPUT, "identity": identity}
    assert cache.key({**base, "identity": other}) != cache.key(base)
