#!/usr/bin/env python3
"""Benchmark: raw OPA REST vs agent-pdp end to end, same machine, policy, bundle and inputs.

Raw OPA and three PDPs (each `pdpctl serve` with its embedded OPA) run side by side:
``durable`` (default durable audit trail, decision cache off), ``fast`` (audit trail on,
fsync off, cache off) and ``cached`` (the defaults: durable audit, decision cache on). Every
phase alternates short wrk slices between raw OPA and one PDP, flipping the order each round,
so load from other processes hits both alike; each figure is the median of the rounds:

  1. throughput_ratio: PDP durable / raw OPA req/s at --connections (closed loop);
  2. cached_throughput_ratio: the same with the cache on and repeat traffic (one request);
  3. added_p50_ms_c1: p50 at 1 connection, PDP fast minus raw OPA (and the durable figure);
  4. opa_eval_us / opa_eval_us_worst: `opa bench` of the policy (bench/policy_cost.py).

Raw OPA gets exactly the input document the PDP would send it for the same request (the
PDP's own normaliser builds it), over TCP as a gateway calling OPA directly would. The
example's task id and session are left out unless --with-task: a decision on a task's
history is serialised with that task's other decisions and never cached (pdp.sessions), so
one repeated task would measure that rather than the decision path.
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import free_port, running, wait_http  # noqa: E402
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


def post(url: str, body: bytes, attempts: int = 5) -> dict[str, Any]:
    """POST ``body``; a 503 (a PDP whose OPA missed its deadline on a loaded machine: fail
    closed) is asked again, up to ``attempts`` times, half a second apart."""
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                doc: dict[str, Any] = json.loads(resp.read())
                return doc
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


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


def wrk_latency_p50(url: str, body_file: Path, duration: int, lua: Path) -> tuple[float, int]:
    """(p50 latency in ms, non-2xx answers) of a closed loop of one connection."""
    out = subprocess.run(
        ["wrk", "-t1", "-c1", f"-d{duration}s", "--latency", "-s", str(lua), url],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BENCH_BODY": str(body_file)},
    ).stdout
    m = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if not m:
        raise RuntimeError(f"cannot read wrk latency output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return float(m.group(1)) * scale, int(bad.group(1)) if bad else 0


def metric_value(url: str, name: str) -> float:
    """Sum of the samples of one metric on a PDP's /metrics."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slice", type=int, default=3, help="seconds per wrk slice")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per phase")
    ap.add_argument("--connections", type=int, default=8, help="wrk connections (throughput)")
    ap.add_argument("--example", type=Path, default=DEFAULT_EXAMPLE)
    ap.add_argument(
        "--opa-bench",
        choices=["all", "allow", "none"],
        default="all",
        help="opa bench of the policy: every example (worst), the allow example only, or none",
    )
    ap.add_argument("--pdp-env", action="append", default=[], help="extra KEY=VALUE for PDPs")
    ap.add_argument(
        "--shadow",
        action="store_true",
        help="also run shadow evaluation (PDP_SHADOW_BUNDLE = the same bundle) in every PDP: "
        "what the second OPA off the answer path costs the live decisions",
    )
    ap.add_argument(
        "--with-task",
        action="store_true",
        help="keep the example's task id and session: every decision then reads and updates "
        "the task's history, decisions of the task are serialised, and none is cached",
    )
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench needs wrk on PATH (apt-get install wrk)")

    opa = find_opa()
    work = Path(tempfile.mkdtemp(prefix="pdp-bench-"))
    with running(work) as procs:
        bundle = build_bundle(opa, ROOT / "policies", work / "bundle.tar.gz")
        example = json.loads(args.example.read_text())
        spiffe_id = example["spiffe_id"]
        domain = spiffe_id.split("/")[2]
        extra = dict(kv.split("=", 1) for kv in args.pdp_env)
        # Three PDPs, each with its own state dir and embedded OPA, the same bundle sources:
        #   durable: the default durable audit trail (fsync batch), decision cache off;
        #   fast:    audit trail on, fsync off, decision cache off (the PDP's own overhead);
        #   cached:  the default (fsync batch, decision cache on), for repeat traffic.
        variants = {
            "durable": {"PDP_AUDIT_FSYNC": "batch", "PDP_DECISION_CACHE_SIZE": "0"},
            "fast": {"PDP_AUDIT_FSYNC": "off", "PDP_DECISION_CACHE_SIZE": "0"},
            "cached": {"PDP_AUDIT_FSYNC": "batch"},
        }
        state0 = work / "state-durable"
        bundles = ensure_dev_trust(state0, [domain])
        token = mint_svid(state0, spiffe_id, ttl_seconds=3600)
        request = {**example["request"]}
        request["agent"] = {**request.get("agent", {}), "token": token}
        if not args.with_task and "task" in request:
            # A decision on a task's history (pdp.sessions) is serialised with the task's
            # other decisions and never cached: one repeated task measures that, not the
            # decision path. The purpose stays (purpose binding is still decided).
            request["task"] = {k: v for k, v in request["task"].items() if k == "purpose"}
        pdp_body = json.dumps(request).encode()
        opa_body = raw_opa_input(request, token, bundles)

        opa_port = free_port()
        procs.append(start_raw_opa(opa, bundle.path, opa_port))
        urls: dict[str, str] = {}
        for name, env in variants.items():
            state = work / f"state-{name}"
            if state != state0:  # the same dev trust keys: one token for all three
                shutil.copytree(state0 / "dev-trust", state / "dev-trust")
            port = free_port()
            env = {"PDP_DEV_TRUST_DOMAINS": domain, "PDP_AUDIT_ENABLED": "true", **env, **extra}
            if args.shadow:
                env["PDP_SHADOW_BUNDLE"] = str(bundle.path)
            procs.append(start_pdp(port, state, env, work / f"pdp-{name}.log"))
            urls[name] = f"http://127.0.0.1:{port}"
        raw_url = f"http://127.0.0.1:{opa_port}/v1/data/pdp/decision"
        wait_http(f"http://127.0.0.1:{opa_port}/health?bundles")
        for base in urls.values():
            wait_http(base + "/readyz")

        raw_answer = post(raw_url, opa_body)["result"]
        for name, base in urls.items():
            answer = post(base + "/v1/decisions", pdp_body)
            if raw_answer["allow"] != answer["allow"]:
                raise RuntimeError(f"raw OPA and PDP {name} disagree: {raw_answer} vs {answer}")
        print(
            f"example {args.example.name}: allow={raw_answer['allow']} (all agree); "
            f"cache ttl {raw_answer.get('cache', {}).get('ttl_seconds')} s; "
            f"bundle {bundle.revision}; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        lua = work / "post.lua"
        lua.write_text(WRK_LUA)
        (work / "opa.json").write_bytes(opa_body)
        (work / "pdp.json").write_bytes(pdp_body)
        opa_file, pdp_file = work / "opa.json", work / "pdp.json"
        c, sl = args.connections, args.slice

        def ratio_rounds(target: str) -> tuple[list[float], list[float], list[float], int]:
            """Alternating slices raw/target (order flips each round): per-round ratios."""
            ratios, raws, pdps, errors = [], [], [], 0
            for i in range(args.rounds):
                order = ("raw", target) if i % 2 == 0 else (target, "raw")
                got: dict[str, float] = {}
                for who in order:
                    if who == "raw":
                        got[who], _ = run_wrk(raw_url, opa_file, sl, c, lua)
                    else:
                        got[who], bad = run_wrk(
                            urls[target] + "/v1/decisions", pdp_file, sl, c, lua
                        )
                        errors += bad
                ratios.append(got[target] / got["raw"])
                raws.append(got["raw"])
                pdps.append(got[target])
                print(
                    f"  round {i + 1}: raw {got['raw']:7.0f} req/s  {target} "
                    f"{got[target]:7.0f} req/s  ratio {ratios[-1]:.3f}"
                )
            return ratios, raws, pdps, errors

        print(f"throughput, durable audit, no cache: wrk -c{c}, {args.rounds} x {sl} s slices")
        tput, raw_rps, pdp_rps, tput_err = ratio_rounds("durable")
        print(f"repeat traffic, decision cache on, durable audit: wrk -c{c}")
        hits0 = metric_value(urls["cached"] + "/metrics", "pdp_decision_cache_hits_total")
        cached, _, cached_rps, cached_err = ratio_rounds("cached")
        hits = metric_value(urls["cached"] + "/metrics", "pdp_decision_cache_hits_total") - hits0
        misses = metric_value(urls["cached"] + "/metrics", "pdp_decision_cache_misses_total")

        print(f"latency at 1 connection (wrk -c1 --latency), {args.rounds} x {sl} s slices")
        added_fast, added_durable, raw_p50s, c1_err = [], [], [], 0
        for i in range(args.rounds):
            order = ["raw", "fast", "durable"]
            order = order[i % 3 :] + order[: i % 3]
            p50 = {}
            for who in order:
                url = raw_url if who == "raw" else urls[who] + "/v1/decisions"
                p50[who], bad = wrk_latency_p50(
                    url, opa_file if who == "raw" else pdp_file, sl, lua
                )
                c1_err += bad
            added_fast.append(p50["fast"] - p50["raw"])
            added_durable.append(p50["durable"] - p50["raw"])
            raw_p50s.append(p50["raw"])
            print(
                f"  round {i + 1}: p50 raw {p50['raw']:.3f} ms, fsync off "
                f"{p50['fast']:.3f} ms (+{added_fast[-1]:.3f}), fsync batch "
                f"{p50['durable']:.3f} ms (+{added_durable[-1]:.3f})"
            )

        result: dict[str, Any] = {}
        if args.opa_bench != "none":
            from bench.policy_cost import measure

            print("opa bench of data.pdp.decision (best of 3 per example) ...")
            cost = measure(ROOT / "policies", 3, only_allow=args.opa_bench == "allow")
            result["opa_eval_us"] = cost["opa_eval_us"]
            if args.opa_bench == "all":
                result["opa_eval_us_worst"] = cost["opa_eval_us_worst"]
                result["opa_eval_worst_example"] = cost["worst_example"]
        result.update(
            {
                "throughput_ratio": round(statistics.median(tput), 3),
                "cached_throughput_ratio": round(statistics.median(cached), 3),
                "added_p50_ms_c1": round(statistics.median(added_fast), 3),
                "added_p50_ms_c1_durable": round(statistics.median(added_durable), 3),
                "throughput_ratio_rounds": spread(tput),
                "cached_throughput_ratio_rounds": spread(cached),
                "added_p50_ms_c1_rounds": spread(added_fast),
                "added_p50_ms_c1_durable_rounds": spread(added_durable),
                "raw_opa_rps": round(statistics.median(raw_rps), 1),
                "pdp_rps": round(statistics.median(pdp_rps), 1),
                "pdp_cached_rps": round(statistics.median(cached_rps), 1),
                "raw_p50_ms_c1": round(statistics.median(raw_p50s), 3),
                "cache_hits": int(hits),
                "cache_misses": int(misses),
                "pdp_non_2xx": tput_err + cached_err + c1_err,
                "connections": c,
                "slice_s": sl,
                "rounds": args.rounds,
                "cores": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "example": args.example.stem,
                "task_history": args.with_task,
                "shadow": args.shadow,
            }
        )
        print(json.dumps(result))


if __name__ == "__main__":
    main()
