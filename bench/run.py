#!/usr/bin/env python3
"""Benchmark: raw OPA REST vs agent-pdp end to end, same machine, policy, bundle and inputs.

Phases, each bounded in time and on loopback only:
  1. throughput: wrk (closed loop, fixed connections) against raw OPA, then the PDP;
  2. latency at a moderate fixed rate: an open-loop Python generator (requests sent on a
     schedule, not when the previous answer arrives) against raw OPA, then the PDP.

Raw OPA gets exactly the input document the PDP would send it for the same request (the
PDP's own normaliser builds it), over TCP as a gateway calling OPA directly would.
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pdp.bundle import build_bundle  # noqa: E402
from pdp.devtrust import ensure_dev_trust, mint_svid  # noqa: E402
from pdp.identity import SVIDVerifier, TrustBundles  # noqa: E402
from pdp.normalize import normalize  # noqa: E402
from pdp.tools import find_opa  # noqa: E402

DEFAULT_EXAMPLE = ROOT / "examples" / "requests" / "allow-support-bot-jira-search.json"
WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def post(url: str, body: bytes) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
        return doc


def raw_opa_input(request: dict[str, Any], token: str, bundles: dict[str, Path]) -> bytes:
    """The body raw OPA gets: exactly the input the PDP builds for ``request``."""
    verifier = SVIDVerifier(TrustBundles.from_files(bundles), "agent-pdp")
    # the PDP passes the agent's lifecycle status; a freshly seen agent is active
    doc = normalize(request, verifier.verify(token), time.time_ns(), agent_status="active")
    return json.dumps({"input": doc}).encode()


def start_raw_opa(opa: str, bundle: Path, port: int) -> subprocess.Popen[bytes]:
    """Raw OPA on TCP with the same engine flags as the PDP's embedded OPA (pdp/sidecar.py)."""
    cmd = [
        opa, "run", "--server", "--addr", f"127.0.0.1:{port}", "--bundle", str(bundle),
        "--log-level", "error", "--skip-version-check", "--optimize-store-for-read-speed",
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_pdp(port: int, state: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`pdpctl serve` (embedded OPA) on ``port`` with extra ``env`` settings."""
    cmd = [sys.executable, "-m", "pdpctl", "serve", "--port", str(port), "--state-dir", str(state)]
    with log.open("wb") as err:
        return subprocess.Popen(
            cmd, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=err
        )


def run_wrk(
    url: str, body_file: Path, duration: int, connections: int, lua: Path
) -> tuple[float, int]:
    """Closed-loop load with wrk; return (successful requests/s, non-2xx answers).

    Non-2xx answers are counted, not fatal: a saturated PDP answers 503 (fail closed) to
    requests whose OPA evaluation queues past the deadline, and that is worth reporting.
    """
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", str(lua), url],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BENCH_BODY": str(body_file)},
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)s", out)
    if not m or not total:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    rps = float(m.group(1)) * (1 - errors / max(1, int(total.group(1))))
    return rps, errors


async def fixed_rate(url: str, body: bytes, rate: int, duration: float) -> list[float]:
    """Send ``rate`` requests/s for ``duration`` s on a schedule; return latencies (s)."""
    latencies: list[float] = []
    errors = 0
    first_error: list[str] = []
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
                    if errors == 1:
                        first_error.append(f"{resp.status} {(await resp.read())[:300]!r}")
            latencies.append(time.perf_counter() - t0)

        # warm the pool
        await asyncio.gather(*(one() for _ in range(32)))
        latencies.clear()
        loop = asyncio.get_running_loop()
        start = loop.time()
        total = int(rate * duration)
        tasks = []
        for i in range(total):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    if errors:
        raise RuntimeError(f"{errors} non-200 answers from {url}, first: {first_error}")
    return latencies


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[k] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per phase and target")
    ap.add_argument("--connections", type=int, default=8, help="wrk connections")
    ap.add_argument("--rate", type=int, default=300, help="requests/s in the latency phase")
    ap.add_argument("--example", type=Path, default=DEFAULT_EXAMPLE)
    ap.add_argument(
        "--audit",
        choices=["off", "batch", "always"],
        default="batch",
        help="audit trail: off (PDP_AUDIT_ENABLED=false) or on with this PDP_AUDIT_FSYNC",
    )
    ap.add_argument(
        "--shadow",
        action="store_true",
        help="also run shadow evaluation (PDP_SHADOW_BUNDLE = the same bundle): what the "
        "second OPA off the answer path costs the live decisions",
    )
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench needs wrk on PATH (apt-get install wrk)")

    opa = find_opa()
    work = Path(tempfile.mkdtemp(prefix="pdp-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        bundle = build_bundle(opa, ROOT / "policies", work / "bundle.tar.gz")
        state = work / "state"
        example = json.loads(args.example.read_text())
        spiffe_id = example["spiffe_id"]
        domain = spiffe_id.split("/")[2]
        bundles = ensure_dev_trust(state, [domain])
        token = mint_svid(state, spiffe_id, ttl_seconds=3600)
        request = {**example["request"]}
        request["agent"] = {**request.get("agent", {}), "token": token}
        pdp_body = json.dumps(request).encode()

        opa_body = raw_opa_input(request, token, bundles)

        opa_port, pdp_port = free_port(), free_port()
        procs.append(start_raw_opa(opa, bundle.path, opa_port))
        env = {"PDP_DEV_TRUST_DOMAINS": domain, "PDP_AUDIT_ENABLED": str(args.audit != "off")}
        if args.audit != "off":
            env["PDP_AUDIT_FSYNC"] = args.audit
        if args.shadow:
            env["PDP_SHADOW_BUNDLE"] = str(bundle.path)
        procs.append(start_pdp(pdp_port, state, env, work / "pdp.log"))
        raw_url = f"http://127.0.0.1:{opa_port}/v1/data/pdp/decision"
        pdp_url = f"http://127.0.0.1:{pdp_port}/v1/decisions"
        wait_http(f"http://127.0.0.1:{opa_port}/health?bundles")
        wait_http(f"http://127.0.0.1:{pdp_port}/readyz")

        raw_answer = post(raw_url, opa_body)["result"]
        pdp_answer = post(pdp_url, pdp_body)
        if raw_answer["allow"] != pdp_answer["allow"]:
            raise RuntimeError(f"raw OPA and PDP disagree: {raw_answer} vs {pdp_answer}")
        print(
            f"example {args.example.name}: allow={pdp_answer['allow']} "
            f"(raw OPA agrees); bundle revision {bundle.revision}; audit {args.audit}"
        )

        lua = work / "post.lua"
        lua.write_text(WRK_LUA)
        (work / "opa.json").write_bytes(opa_body)
        (work / "pdp.json").write_bytes(pdp_body)
        print(f"throughput: wrk -t1 -c{args.connections} -d{args.duration}s ...")
        raw_rps, raw_errors = run_wrk(
            raw_url, work / "opa.json", args.duration, args.connections, lua
        )
        pdp_rps, pdp_errors = run_wrk(
            pdp_url, work / "pdp.json", args.duration, args.connections, lua
        )
        print(f"  raw OPA {raw_rps:9.0f} req/s  non-2xx {raw_errors}")
        print(
            f"  PDP     {pdp_rps:9.0f} req/s  non-2xx {pdp_errors}  ratio {pdp_rps / raw_rps:.3f}"
        )

        print(f"latency at a fixed {args.rate} req/s for {args.duration}s ...")
        raw_lat = asyncio.run(fixed_rate(raw_url, opa_body, args.rate, args.duration))
        pdp_lat = asyncio.run(fixed_rate(pdp_url, pdp_body, args.rate, args.duration))
        for name, lat in (("raw OPA", raw_lat), ("PDP", pdp_lat)):
            print(
                f"  {name:8} p50 {pct(lat, 50):.3f} ms  p99 {pct(lat, 99):.3f} ms  "
                f"mean {statistics.mean(lat) * 1000:.3f} ms  n={len(lat)}"
            )
        result = {
            "raw_opa_rps": round(raw_rps, 1),
            "pdp_rps": round(pdp_rps, 1),
            "throughput_ratio": round(pdp_rps / raw_rps, 3),
            "raw_p50_ms": round(pct(raw_lat, 50), 3),
            "pdp_p50_ms": round(pct(pdp_lat, 50), 3),
            "raw_p99_ms": round(pct(raw_lat, 99), 3),
            "pdp_p99_ms": round(pct(pdp_lat, 99), 3),
            "rate": args.rate,
            "duration_s": args.duration,
            "connections": args.connections,
            "audit": args.audit,
            "shadow": args.shadow,
            "cores": os.cpu_count(),
            "pdp_non_2xx_at_saturation": pdp_errors,
        }
        print(json.dumps(result))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
