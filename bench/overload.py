#!/usr/bin/env python3
"""Overload: the PDP at twice its saturation rate (issue 8, sample 10).

1. saturation: wrk (closed loop, 32 connections) finds the throughput S of a PDP without
   the bound, on the allow example;
2. overload: an open-loop generator sends 2*S requests/s for the same duration;
   reported: p50/p99 latency of the *admitted* decisions (200), the share shed (503
   overloaded, answered at once with Retry-After) and the latency of those 503s;
3. the same overload against a PDP whose in-flight bound is effectively off
   (--max-in-flight 100000), to show what the bound buys.

Loopback only, one machine: client and server share the CPU, so the figures are a lower
bound on a real host and are reported with the machine's load. The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import free_port, stop, wait_http  # noqa: E402
from bench.run import WRK_LUA, pct, run_wrk, start_pdp  # noqa: E402
from pdp.devtrust import mint_svid  # noqa: E402

EXAMPLE = ROOT / "examples" / "requests" / "allow-support-bot-jira-search.json"


async def open_loop(url: str, body: bytes, rate: float, duration: float) -> list[tuple[int, float]]:
    """Send ``rate`` requests/s for ``duration`` s on a schedule; (status, seconds) each."""
    results: list[tuple[int, float]] = []
    connector = aiohttp.TCPConnector(limit=2048)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            t0 = time.perf_counter()
            try:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as resp:
                    await resp.read()
                    results.append((resp.status, time.perf_counter() - t0))
            except (aiohttp.ClientError, TimeoutError):
                results.append((0, time.perf_counter() - t0))

        await asyncio.gather(*(one() for _ in range(32)))  # warm the pool
        results.clear()
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for i in range(int(rate * duration)):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return results


def summary(results: list[tuple[int, float]]) -> dict[str, Any]:
    admitted = [t for s, t in results if s == 200]
    shed = [t for s, t in results if s == 503]
    other = len(results) - len(admitted) - len(shed)
    return {
        "sent": len(results),
        "admitted": len(admitted),
        "shed_share": round(len(shed) / max(1, len(results)), 3),
        "other_failures": other,
        "admitted_p50_ms": round(pct(admitted, 50), 1) if admitted else None,
        "admitted_p99_ms": round(pct(admitted, 99), 1) if admitted else None,
        "shed_p99_ms": round(pct(shed, 99), 1) if shed else None,
    }


def run_pdp(
    args: argparse.Namespace, max_in_flight: int, work: Path, saturation: float | None
) -> dict[str, Any]:
    """Overload one PDP at ``factor`` x ``saturation`` (measured here when None)."""
    port = free_port()
    state = work / f"state-{max_in_flight}"
    env = {"PDP_MAX_IN_FLIGHT": str(max_in_flight), "PDP_MAX_CONNECTIONS": "4096"}
    proc = start_pdp(port, state, env, work / f"pdp-{max_in_flight}.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/readyz", 60)
        example = json.loads(EXAMPLE.read_text())
        request = example["request"]
        request["agent"] = {
            **request.get("agent", {}),
            "token": mint_svid(state, example["spiffe_id"], ttl_seconds=3600),
        }
        body = json.dumps(request).encode()
        body_file = work / "body.json"
        body_file.write_bytes(body)
        lua = work / "post.lua"
        lua.write_text(WRK_LUA)
        if saturation is None:
            saturation, _ = run_wrk(url + "/v1/decisions", body_file, args.duration, 32, lua)
        rate = saturation * args.factor
        results = asyncio.run(open_loop(url + "/v1/decisions", body, rate, args.duration))
        return {
            "max_in_flight": max_in_flight,
            "saturation_rps": round(saturation),
            "offered_rps": round(rate),
            **summary(results),
        }
    finally:
        stop([proc], grace_s=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per phase")
    ap.add_argument("--factor", type=float, default=2.0, help="offered rate / saturation")
    ap.add_argument("--max-in-flight", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pdp-overload-") as tmp:
        work = Path(tmp)
        # saturation measured once, without the bound (a bounded PDP sheds wrk's excess)
        unbounded = run_pdp(args, 100_000, work, None)
        bounded = run_pdp(args, args.max_in_flight, work, unbounded["saturation_rps"])
    out = {
        "load_avg_1m": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "bounded": bounded,
        "unbounded": unbounded,
    }
    for name in ("bounded", "unbounded"):
        print(f"{name}: {out[name]}", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
