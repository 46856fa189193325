"""Forwarding the trail to a collector: OPA's decision-log upload format, an outage delays
but loses nothing, and each record is delivered exactly once across restarts.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pdp.audit.chain import record_hash
from pdp.audit.forward import read_cursor
from pdp.audit.segment import iter_records, list_segments
from pdp.audit.verify import verify

from .conftest import EXAMPLES, ClientFactory, free_port, load_example
from .opa_process import OPAProcess

ALLOW = next(p for p in EXAMPLES if p.name == "allow-support-bot-jira-search.json")


class Collector:
    """A decision-log collector on loopback: records every event it acknowledges."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/logs"
        self.events: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.fail_next = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=500, text="collector overloaded")
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Content-Encoding"] == "gzip"
        # aiohttp inflates a gzip body as it reads it (and fails on one that is not gzip).
        body = json.loads(await request.read())
        assert isinstance(body, list)
        self.headers.append(dict(request.headers))
        # Decision events; the signed checkpoints that travel with them kept apart.
        self.events.extend(e for e in body if e["path"] == "pdp/decision")
        self.checkpoints.extend(e for e in body if e["path"] == "pdp/audit/checkpoint")
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/logs", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def ids(self) -> list[str]:
        return [e["decision_id"] for e in self.events]

    async def wait_for(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(self.events) >= n, f"collector got {len(self.events)} of {n} events"


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    c = Collector(free_port())
    yield c
    await c.stop()


@pytest.fixture
def start(
    make_client: ClientFactory, shared_opa: OPAProcess, tmp_path: Path, collector: Collector
) -> Callable[..., Any]:
    async def _start(**overrides: Any) -> Any:
        settings: dict[str, Any] = {
            "opa_timeout_ms": 5000,
            "audit_dir": tmp_path / "audit",
            "audit_forward_url": collector.url,
            "audit_forward_max_backoff_s": 0.2,
            "audit_segment_max_bytes": 4096,  # many segments: delivery crosses them
        }
        settings.update(overrides)
        return await make_client(shared_opa.url, **settings)

    return _start


async def decide_n(client: Any, mint: Callable[..., str], n: int) -> list[str]:
    example = load_example(ALLOW)
    ids = []
    for _ in range(n):
        request = copy.deepcopy(example["request"])
        request["agent"]["token"] = mint(example["spiffe_id"])
        resp = await client.post("/v1/decisions", json=request)
        assert resp.status == 200
        ids.append((await resp.json())["decision_id"])
    return ids


async def test_collector_down_then_up_gets_every_record_exactly_once(
    start: Callable[..., Any], collector: Collector, mint: Callable[..., str], tmp_path: Path
) -> None:
    client = await start()
    first = await decide_n(client, mint, 10)  # the collector is not listening yet
    await asyncio.sleep(0.5)
    assert collector.events == []
    seqs = {r["decision_id"]: r["seq"] for r in iter_records(tmp_path / "audit")
            if r["type"] == "decision"}  # fmt: skip
    assert read_cursor(tmp_path / "audit") < seqs[first[0]]  # nothing acknowledged yet

    await collector.start()
    await collector.wait_for(10)
    second = await decide_n(client, mint, 5)
    await collector.wait_for(15)
    await client.close()

    # A restart resumes after the acknowledged cursor: nothing is sent twice.
    client = await start()
    third = await decide_n(client, mint, 3)
    await collector.wait_for(18)
    await asyncio.sleep(0.3)
    await client.close()

    assert collector.ids() == first + second + third
    assert len(list_segments(tmp_path / "audit")) > 3


async def test_a_failing_collector_is_retried_without_loss_or_duplicates(
    start: Callable[..., Any], collector: Collector, mint: Callable[..., str]
) -> None:
    collector.fail_next = 3
    await collector.start()
    client = await start()

    ids = await decide_n(client, mint, 6)
    await collector.wait_for(6)
    await asyncio.sleep(0.3)

    assert collector.ids() == ids
    assert collector.fail_next == 0
    text = await (await client.get("/metrics")).text()
    assert "pdp_audit_forward_failures_total 3.0" in text
    assert "pdp_audit_forwarded_records_total 6.0" in text


async def test_events_have_opas_decision_log_shape_and_carry_the_chained_record(
    start: Callable[..., Any], collector: Collector, mint: Callable[..., str]
) -> None:
    await collector.start()
    client = await start(audit_forward_batch=2)

    ids = await decide_n(client, mint, 3)
    await collector.wait_for(3)

    event = collector.events[0]
    assert set(event) == {
        "decision_id", "timestamp", "path", "input", "result", "bundles", "labels", "metrics",
        "audit",
    }  # fmt: skip
    assert event["decision_id"] == ids[0]
    assert event["path"] == "pdp/decision"
    assert event["timestamp"] == event["input"]["now"]["rfc3339"]
    assert event["result"] == {"allow": True, "reasons": [], "obligations": event["result"]
                               ["obligations"]}  # fmt: skip
    assert event["bundles"] == {"pdp": {"revision": event["audit"]["policy"]["revision"]}}
    assert event["labels"]["app"] == "agent-pdp"
    assert event["metrics"]["timer_pdp_decision_ns"] == event["audit"]["latency_us"] * 1000
    record = {**event["audit"], "input": event["input"]}
    assert record["hash"] == record_hash(record)
    # Batches of at most 2 events, each named by the seqs it covers.
    keys = [h["Idempotency-Key"] for h in collector.headers]
    assert all(k.startswith("agent-pdp-") for k in keys) and len(set(keys)) == len(keys)
    assert max(len(b) for b in _batches(collector)) <= 2


def _batches(collector: Collector) -> list[list[str]]:
    out, i = [], 0
    for h in collector.headers:
        first, last = map(int, h["Idempotency-Key"].removeprefix("agent-pdp-").split("-"))
        n = sum(1 for e in collector.events[i:] if first <= e["audit"]["seq"] <= last)
        out.append(collector.ids()[i : i + n])
        i += n
    return out


async def test_retention_prunes_delivered_segments_while_forwarding_goes_on(
    start: Callable[..., Any], collector: Collector, mint: Callable[..., str], tmp_path: Path
) -> None:
    await collector.start()
    client = await start(audit_retention_max_bytes=16_000)

    ids = []
    for _ in range(4):
        ids += await decide_n(client, mint, 10)
        await collector.wait_for(len(ids))
    await client.close()

    assert collector.ids() == ids
    audit = tmp_path / "audit"
    assert list_segments(audit)[0].first_seq > 1  # delivered segments were pruned
    assert verify(audit).problem is None
