#!/usr/bin/env python3
"""A/B of two source trees of agent-pdp: the PDP's own CPU per decision, p50 and req/s.

``python bench/ab.py TREE_A TREE_B [--rounds 6] [--slice 3] [--fsync off] [--b-env K=V]
[--env K=V]``
starts `pdpctl serve` from each tree (``git archive <rev> | tar -x -C TREE`` makes one; each
needs its ``.tools`` with OPA) with the same settings — audit trail on, the given fsync
mode, decision cache off — and the request run.py sends, then alternates wrk slices between
them (A then B, the order flipped each round) at 1 and at 8 connections. Per slice it
reads the PDP process's own CPU time (all its threads, its OPA child excluded) from /proc:
CPU per decision is the figure that survives a shared machine, where req/s and p50 move by
tens of per cent from one slice to the next. The last line of output is one JSON object.
Loopback only; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import free_port, running, wait_http  # noqa: E402
from bench.run import DEFAULT_EXAMPLE, WRK_LUA  # noqa: E402
from pdp.devtrust import ensure_dev_trust, mint_svid  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` (not of its children)."""
    ticks = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk_slice(
    url: str, body: Path, lua: Path, connections: int, seconds: int, pid: int
) -> dict[str, float]:
    """One closed-loop wrk slice: req/s, p50 (ms), non-2xx and PDP CPU µs per request."""
    before = cpu_seconds(pid)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BENCH_BODY": str(body)},
    ).stdout
    used = cpu_seconds(pid) - before
    total = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if not total or not rps or not p50:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    n = max(1, int(total.group(1)))
    return {
        "rps": float(rps.group(1)),
        "p50_ms": float(p50.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)],
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "cpu_us": used / n * 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree_a", type=Path)
    ap.add_argument("tree_b", type=Path)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--slice", type=int, default=3, help="seconds per wrk slice")
    ap.add_argument("--fsync", choices=["off", "batch", "always"], default="off")
    ap.add_argument("--b-env", action="append", default=[], help="extra KEY=VALUE for B only")
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        help="extra KEY=VALUE for both, e.g. PDP_DECISION_CACHE_SIZE=10000: every decision "
        "after the first is then a cache hit (the hit's own CPU)",
    )
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("needs wrk on PATH (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="pdp-ab-"))
    with running(work) as procs:
        example = json.loads(DEFAULT_EXAMPLE.read_text())
        spiffe_id = example["spiffe_id"]
        domain = spiffe_id.split("/")[2]
        keys = work / "keys"
        ensure_dev_trust(keys, [domain])
        request = {**example["request"]}
        request["agent"] = {
            **request.get("agent", {}),
            "token": mint_svid(keys, spiffe_id, ttl_seconds=3600),
        }
        if "task" in request:  # as run.py: no task history (see its docstring)
            request["task"] = {k: v for k, v in request["task"].items() if k == "purpose"}
        body, lua = work / "pdp.json", work / "post.lua"
        body.write_text(json.dumps(request))
        lua.write_text(WRK_LUA)
        urls: dict[str, str] = {}
        pids: dict[str, int] = {}
        for name, tree in (("A", args.tree_a), ("B", args.tree_b)):
            tree = tree.resolve()
            state = work / f"state-{name}"
            shutil.copytree(keys / "dev-trust", state / "dev-trust")
            port = free_port()
            env = {
                **os.environ,
                "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'cli'}",
                "PDP_DEV_TRUST_DOMAINS": domain,
                "PDP_AUDIT_ENABLED": "true",
                "PDP_AUDIT_FSYNC": args.fsync,
                "PDP_DECISION_CACHE_SIZE": "0",
            }
            env.update(kv.split("=", 1) for kv in args.env)
            if name == "B":
                env.update(kv.split("=", 1) for kv in args.b_env)
            cmd = [sys.executable, "-m", "pdpctl", "serve", "--port", str(port)]
            with (work / f"{name}.log").open("wb") as log:
                proc = subprocess.Popen(
                    [*cmd, "--state-dir", str(state)],
                    cwd=tree,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            procs.append(proc)
            urls[name], pids[name] = f"http://127.0.0.1:{port}", proc.pid
        for name, url in urls.items():
            wait_http(url + "/readyz", 90, procs[0 if name == "A" else 1])
        for name in urls:  # warm both (connections, caches)
            wrk_slice(urls[name] + "/v1/decisions", body, lua, 8, 1, pids[name])
        got: dict[str, list[dict[str, float]]] = {f"{n}{c}": [] for c in (1, 8) for n in "AB"}
        for r in range(args.rounds):
            order = "AB" if r % 2 == 0 else "BA"
            for c in (1, 8):
                for name in order:
                    got[f"{name}{c}"].append(
                        wrk_slice(
                            urls[name] + "/v1/decisions", body, lua, c, args.slice, pids[name]
                        )
                    )
            print(
                f"round {r + 1} (load {os.getloadavg()[0]:.1f}): "
                + "  ".join(
                    f"{k} {v[-1]['rps']:.0f} req/s p50 {v[-1]['p50_ms']:.2f} ms "
                    f"cpu {v[-1]['cpu_us']:.0f} us"
                    for k, v in got.items()
                ),
                flush=True,
            )
        result: dict[str, Any] = {"rounds": args.rounds, "slice_s": args.slice}
        for c in (1, 8):
            a, b = got[f"A{c}"], got[f"B{c}"]
            for key in ("cpu_us", "p50_ms", "rps"):
                result[f"c{c}_{key}"] = {
                    "A": round(statistics.median(x[key] for x in a), 3),
                    "B": round(statistics.median(x[key] for x in b), 3),
                    "B_over_A_rounds": [
                        round(y[key] / x[key], 3) for x, y in zip(a, b, strict=True)
                    ],
                }
            result[f"c{c}_non_2xx"] = {
                "A": sum(x["non_2xx"] for x in a),
                "B": sum(x["non_2xx"] for x in b),
            }
        result["load_avg_1m"] = round(os.getloadavg()[0], 2)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
