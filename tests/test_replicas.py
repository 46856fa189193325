"""Two `pdpctl serve` processes sharing one real redis-server: what one replica learns
(a revocation, a disable, a key rotation) the other acts on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pdp.devtrust import mint_svid
from tests import process_helpers
from tests.conftest import POLICIES, ROOT, free_port, http_get, load_example, wait_until
from tests.http_helpers import metric
from tests.redis_process import redis_server, redis_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.redis

ADMIN = "replica-admin-credential-0123456"
EXAMPLE = load_example(ROOT / "examples" / "requests" / "allow-support-bot-jira-search.json")
BOT = EXAMPLE["spiffe_id"]


class Replica:
    """One `pdpctl serve` with its own state dir and embedded OPA, on the shared store."""

    def __init__(self, state: Path, store_url: str) -> None:
        self.state = state
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PDP_")}
        env.update(
            PDP_STORE_URL=store_url,
            PDP_ADMIN_TOKEN=ADMIN,
            PDP_STORE_REFRESH_S="0.5",
            PDP_DEV_TRUST_DOMAINS="acme.example",
        )
        self.log = state.parent / f"{state.name}.log"
        cmd = [
            sys.executable, "-m", "pdpctl", "--policies", str(POLICIES), "serve",
            "--port", self.url.rsplit(":", 1)[1], "--state-dir", str(state),
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                return http_get(self.url + "/readyz", timeout=1.0)[0] == 200
            except OSError:
                return False

        assert wait_until(ready, timeout), self.log.read_text()[-2000:]

    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
        req = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                raise AssertionError(f"{path}: HTTP {exc.code} {exc.read()!r}") from None

    def decide(self) -> Any:
        request = dict(EXAMPLE["request"])
        token = mint_svid(self.state, BOT)
        request["agent"] = {**request.get("agent", {}), "token": token}
        return self.call("/v1/decisions", request)

    def active(self, token: str) -> bool:
        return bool(self.call("/v1/credentials/introspect", {"token": token})["active"])

    def stop(self) -> None:
        process_helpers.stop(self.proc, timeout=15)


@pytest.fixture
def replicas(tmp_path: Path, redis_url: str) -> Iterator[tuple[Replica, Replica]]:  # noqa: F811
    a = Replica(tmp_path / "a", redis_url)
    b = Replica(tmp_path / "b", redis_url)
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_what_one_replica_learns_the_other_acts_on(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    minted_on_a = a.decide()["credential"]["token"]
    minted_on_b = b.decide()["credential"]["token"]

    # Each replica verifies the other's credentials (one JWKS across replicas).
    assert b.active(minted_on_a) and a.active(minted_on_b)

    # A revoke on one is seen by the other at once (introspection reads the store).
    b.call("/v1/credentials/revoke", {"token": minted_on_a})
    assert not a.active(minted_on_a)
    assert a.active(minted_on_b)

    # A disable on one: the other's credentials are inactive at once, and its decisions
    # deny within the staleness bound (pub/sub; PDP_STORE_REFRESH_S as the backstop).
    a.call("/v1/agents/disable", {"spiffe_id": BOT, "reason": "replica test"})
    assert not a.active(minted_on_b) and not b.active(minted_on_b)
    started = time.monotonic()
    assert wait_until(lambda: b.decide()["allow"] is False, timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert [r["code"] for r in b.decide()["reasons"]] == ["agent_disabled"]

    # Both replicas report the same agent table.
    agents_a, agents_b = a.call("/v1/agents")["agents"], b.call("/v1/agents")["agents"]
    [bot] = [x for x in agents_b if x["spiffe_id"] == BOT]
    assert (bot["status"], bot["decisions_allowed"]) == ("disabled", 2)
    assert {x["spiffe_id"] for x in agents_a} == {x["spiffe_id"] for x in agents_b}


def test_a_rotation_asked_on_one_replica_rotates_both(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    b_before = b.call("/v1/keys")["current"]
    in_flight = b.decide()["credential"]["token"]

    a.call("/v1/keys/rotate", {})

    assert wait_until(lambda: b.call("/v1/keys")["current"] != b_before, timeout=2.0)
    jwks = {k["kid"] for k in http_get(a.url + "/.well-known/jwks.json")[1]["keys"]}
    assert len(jwks) == 4  # two replicas x (current + retired, still needed)
    assert a.active(in_flight)


def test_the_replicas_share_task_and_session_histories(
    replicas: tuple[Replica, Replica],
) -> None:
    """A confidential read allowed by one replica taints the task on the other: egress
    decided there is a toxic flow (pdp.sessions on the shared redis-server)."""
    a, b = replicas
    task = {"id": "T-replicas", "purpose": "triage support tickets", "session": "s-replicas"}
    read = {
        "tenant": "acme",
        "task": task,
        "action": {"type": "data.read", "name": "crm.customers.get", "operation": "read"},
        "destination": {
            "type": "database",
            "name": "crm-db",
            "url": "postgres://crm-db.prod.acme.internal/crm",
        },
        "data": {"sensitivity": "confidential"},
    }
    egress = {
        "tenant": "acme",
        "task": task,
        "action": {"type": "tool.call", "name": "github.search_code", "operation": "read"},
        "destination": {"type": "tool", "name": "github", "url": "https://api.github.com/x"},
        "data": {"sensitivity": "public"},
    }

    def decide(replica: Replica, body: dict[str, Any]) -> Any:
        token = mint_svid(replica.state, BOT)
        return replica.call("/v1/decisions", {**body, "agent": {"token": token}})

    first = decide(b, egress)
    assert first["allow"] is True, first  # before the read: nothing taints it
    assert decide(a, read)["allow"] is True
    denied = decide(b, egress)
    assert [r["code"] for r in denied["reasons"]] == ["session_toxic_flow"]
    # The other task of the session is tainted too; another session's task is not.
    other = {**egress, "task": {**task, "id": "T-other"}}
    assert decide(b, other)["allow"] is False
    clean = {**egress, "task": {**task, "id": "T-clean", "session": "s-clean"}}
    assert decide(a, clean)["allow"] is True


def _cache_metric(replica: Replica, sample: str, **labels: str) -> float:
    with urllib.request.urlopen(replica.url + "/metrics", timeout=5) as resp:
        return metric(resp.read().decode(), sample, **labels)


def test_cache_invalidations_reach_the_other_replica_over_the_store(
    replicas: tuple[Replica, Replica],
    redis_url: str,  # noqa: F811
) -> None:
    a, b = replicas
    request = dict(EXAMPLE["request"])
    request["agent"] = {**request.get("agent", {}), "token": mint_svid(b.state, BOT)}
    # No task id or session: a call decided on a task's history is never cached.
    request["task"] = {"purpose": request["task"]["purpose"]}
    b.call("/v1/decisions", request)
    assert b.call("/v1/decisions", request)["allow"] is True
    assert _cache_metric(b, "pdp_decision_cache_hits_total") == 1

    # Another replica announces a change of session histories on the channel.
    client = redis.Redis.from_url(redis_url)
    try:
        client.publish("pdp:events", "cache:session")
    finally:
        client.close()
    assert wait_until(
        lambda: _cache_metric(b, "pdp_decision_cache_evictions_total", reason="session") == 1,
        timeout=2.0,
    )
    b.call("/v1/decisions", request)  # a miss: stored again
    assert _cache_metric(b, "pdp_decision_cache_hits_total") == 1

    # A disable on replica a drops replica b's entries too.
    a.call("/v1/agents/disable", {"spiffe_id": BOT, "reason": "replica cache test"})
    assert wait_until(
        lambda: _cache_metric(b, "pdp_decision_cache_evictions_total", reason="agent") >= 1,
        timeout=2.0,
    )
    assert b.call("/v1/decisions", request)["allow"] is False
