#!/usr/bin/env python3
"""Benchmark: the MCP gateway's added latency per tools/call over a direct call to the upstream.

One run, loopback only, bounded in time; everything real: `pdpctl serve` (embedded OPA,
SQLite store, durable audit trail), the example MCP server (examples/mcp_server.py, which
verifies every credential against the PDP's JWKS), `pdpctl mcp-gateway`, and the official
MCP Python client.

  direct   the client calls the upstream itself with a credential minted once beforehand
           (the upstream still verifies it on every call);
  gateway  the client calls the gateway with its JWT-SVID; per call the gateway asks the
           PDP (one decision: OPA, credential minted, audit record made durable, task
           history updated), forwards with the minted credential, reports the outcome.

Calls are sequential (closed loop, one in flight), after a warm-up. Percentiles are of the
per-call wall time seen by the client. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import free_port, stop, wait_http, wait_port  # noqa: E402
from pdp.devtrust import mint_svid  # noqa: E402

AGENT = "spiffe://acme.example/agents/mcp-assistant"
TOOL = "hr.list_employees"
HEADERS = {
    "X-PDP-Tenant": "acme",
    "X-PDP-Task-Id": "BENCH-1",
    "X-PDP-Task-Purpose": "answer hr questions",
    "X-PDP-Session": "bench-session",
}


def mint_credential(pdp: str, token: str) -> str:
    """The credential the PDP mints for exactly this call (what the gateway forwards)."""
    body = {
        "agent": {"token": token},
        "tenant": "acme",
        "task": {"id": "BENCH-DIRECT", "purpose": "answer hr questions"},
        "action": {"type": "tool.call", "name": TOOL, "operation": "read", "arguments": {}},
        "destination": {"type": "tool", "name": "hr-files"},
        "data": {"sensitivity": "internal"},
    }
    req = urllib.request.Request(
        pdp + "/v1/decisions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        answer = json.loads(resp.read())
    if not answer.get("allow"):
        raise RuntimeError(f"the PDP did not allow the benchmark call: {answer}")
    return str(answer["credential"]["token"])


async def timed_calls(url: str, headers: dict[str, str], warmup: int, n: int) -> list[float]:
    async with httpx2.AsyncClient(headers=headers, timeout=10) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            for _ in range(warmup):
                await client.call_tool(TOOL, {})
            times = []
            for _ in range(n):
                started = time.perf_counter()
                result = await client.call_tool(TOOL, {})
                times.append((time.perf_counter() - started) * 1000)
                if result.is_error:
                    raise RuntimeError(f"the call failed: {result}")
            return times


async def timed_decisions(pdp: str, token: str, warmup: int, n: int) -> list[float]:
    """The PDP's share: the decision the gateway asks for, alone (same task, so the task
    history is read, serialized and written as in the gateway run)."""
    import aiohttp

    body = {
        "agent": {"token": token},
        "tenant": "acme",
        "task": {"id": "BENCH-PDP", "purpose": "answer hr questions", "session": "bench-pdp"},
        "action": {"type": "tool.call", "name": TOOL, "operation": "read", "arguments": {}},
        "destination": {"type": "tool", "name": "hr-files"},
        "data": {"sensitivity": "internal"},
    }
    times = []
    async with aiohttp.ClientSession() as http:
        for i in range(warmup + n):
            started = time.perf_counter()
            async with http.post(pdp + "/v1/decisions", json=body) as resp:
                answer = await resp.json()
            if i >= warmup:
                times.append((time.perf_counter() - started) * 1000)
            if not answer.get("allow"):
                raise RuntimeError(f"not allowed: {answer}")
    return times


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDP_")}
    # A shared machine stalls OPA now and then; the default 100 ms deadline would turn such a
    # stall into a refused call (fail closed) rather than a slow one, and this measures time.
    env["PDP_OPA_TIMEOUT_MS"] = "2000"
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-mcp-") as tmp:
        state = Path(tmp) / "state"
        pdp_port, up_port, gw_port = free_port(), free_port(), free_port()
        pdp = f"http://127.0.0.1:{pdp_port}"
        log = open(Path(tmp) / "procs.log", "wb")  # noqa: SIM115
        try:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "pdpctl", "serve", "--port", str(pdp_port),
                 "--state-dir", str(state)],
                cwd=ROOT, env=env, stdout=log, stderr=log,
            ))  # fmt: skip
            wait_http(pdp + "/readyz", 60, procs[-1])
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "examples.mcp_server", "--name", "hr-files",
                 "--port", str(up_port), "--pdp", pdp],
                cwd=ROOT, env=env, stdout=log, stderr=log,
            ))  # fmt: skip
            wait_port(up_port, procs[-1])
            upstream = f"http://127.0.0.1:{up_port}/mcp"
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "pdpctl", "mcp-gateway", "--pdp", pdp,
                 "--upstream", f"hr-files={upstream}", "--listen", f"127.0.0.1:{gw_port}",
                 "--state-dir", str(state)],
                cwd=ROOT, env=env, stdout=log, stderr=log,
            ))  # fmt: skip
            wait_port(gw_port, procs[-1])
            svid = mint_svid(state, AGENT, ttl_seconds=3600)
            credential = mint_credential(pdp, svid)
            direct = asyncio.run(
                timed_calls(
                    upstream, {"Authorization": f"Bearer {credential}"}, args.warmup, args.calls
                )
            )
            via = asyncio.run(
                timed_calls(
                    f"http://127.0.0.1:{gw_port}/mcp",
                    {**HEADERS, "Authorization": f"Bearer {svid}"},
                    args.warmup,
                    args.calls,
                )
            )
            decisions = asyncio.run(timed_decisions(pdp, svid, args.warmup, args.calls))
        finally:
            stop(procs)
            log.close()
    figures: dict[str, Any] = {
        "calls": args.calls,
        "direct_ms": {
            "p50": pct(direct, 50),
            "p99": pct(direct, 99),
            "mean": statistics.mean(direct),
        },
        "gateway_ms": {"p50": pct(via, 50), "p99": pct(via, 99), "mean": statistics.mean(via)},
    }
    figures["pdp_decision_ms"] = {
        "p50": pct(decisions, 50),
        "p99": pct(decisions, 99),
        "mean": statistics.mean(decisions),
    }
    figures["added_ms"] = {
        "p50": figures["gateway_ms"]["p50"] - figures["direct_ms"]["p50"],
        "p99": figures["gateway_ms"]["p99"] - figures["direct_ms"]["p99"],
    }
    figures["ratio_p50"] = figures["gateway_ms"]["p50"] / figures["direct_ms"]["p50"]
    for name in ("direct_ms", "gateway_ms", "added_ms", "pdp_decision_ms"):
        row = figures[name]
        print(f"{name:<11} p50 {row['p50']:7.2f}  p99 {row['p99']:7.2f}")
    print(json.dumps({k: v for k, v in figures.items()}, sort_keys=True))


if __name__ == "__main__":
    main()
