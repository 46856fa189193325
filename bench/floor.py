#!/usr/bin/env python3
"""The floor: the cheapest aiohttp decision handler, against raw OPA and the real PDP.

``python bench/floor.py [--rounds 4] [--slice 3]`` starts one OPA (the shipped bundle, the
embedded OPA's engine flags) listening on loopback TCP and on a Unix socket, a *floor*
server and a real ``pdpctl serve`` (audit trail on, ``fsync: off``, decision cache off: the
``fast`` PDP of run.py), then alternates wrk slices between raw OPA, the floor and the PDP
(order rotated each round) at 1 and at 8 connections. Per slice: req/s, p50 and the CPU per
request of the server process (its threads only) and of the OPA behind it.

The floor is an aiohttp application with one route, no middleware, no access log, uvloop,
doing only what every decision must do: read the body and parse it as strict JSON
(``pdp.jsonparse``), one OPA round trip over the PDP's own transport (``pdp.opahttp``, the
input encoded with orjson, the answer parsed), an ES256 signature over a credential's
claims, a SHA-256-chained canonical record appended to a file (no fsync) and a JSON answer.
No schema, token verification, normalisation, metrics, log line, deadlines or admission.
What it costs is what the real path cannot go below with aiohttp on this machine.

``python bench/floor.py --serve PORT SOCKET INPUT TRAIL`` runs the floor server alone.
The last line of output is one JSON object. Loopback only; every process is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ab import cpu_seconds, wrk_slice  # noqa: E402
from bench.harness import free_port, running, wait_http, wait_port  # noqa: E402
from bench.run import DEFAULT_EXAMPLE, WRK_LUA, raw_opa_input, start_pdp  # noqa: E402


def serve(port: int, socket: str, input_file: Path, trail: Path) -> None:
    """The floor server (see the module docstring)."""
    import orjson
    from aiohttp import web
    from cryptography.hazmat.primitives.asymmetric import ec

    from pdp import jsonparse
    from pdp.eventloop import new_event_loop
    from pdp.keys import SigningKey
    from pdp.opahttp import HTTPPool

    base: dict[str, Any] = json.loads(input_file.read_text())["input"]
    key = SigningKey("k1", "ES256", ec.generate_private_key(ec.SECP256R1()), "JWT")
    fd = os.open(trail, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    chain: dict[str, Any] = {"prev": "0" * 64, "seq": 0}
    pool = HTTPPool(f"unix://{socket}")
    head = pool.head("POST", "/v1/data/pdp/decision", "application/json")

    async def decide(request: web.Request) -> web.Response:
        body = jsonparse.loads(await request.read())
        now = time.time_ns()
        decision_id = str(uuid.uuid4())
        doc = {**base, "request": {"id": decision_id, "received_at": now}}
        status, raw = await pool.request(head, orjson.dumps({"input": doc}))
        decision = orjson.loads(raw)["result"]
        answer: dict[str, Any] = {"decision_id": decision_id, "allow": decision["allow"]}
        if decision["allow"]:
            claims = {
                "iss": "agent-pdp", "sub": doc["identity"]["spiffe_id"], "aud": "jira",
                "scope": body["action"]["name"], "iat": now // 10**9,
                "exp": now // 10**9 + 60, "jti": decision_id,
            }  # fmt: skip
            answer["credential"] = {"token": key.sign(orjson.dumps(claims)), "expires_in": 60}
        chain["seq"] += 1
        record = {
            "decision_id": decision_id, "input": doc, "decision": decision,
            "seq": chain["seq"], "prev": chain["prev"],
        }  # fmt: skip
        line = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        chain["prev"] = hashlib.sha256(line).hexdigest()
        os.write(fd, line + b"\n")
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/decisions", decide)
    loop = new_event_loop("auto")
    asyncio.set_event_loop(loop)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--slice", type=int, default=3, help="seconds per wrk slice")
    ap.add_argument("--serve", nargs=4, metavar=("PORT", "SOCKET", "INPUT", "TRAIL"))
    args = ap.parse_args()
    if args.serve:
        port, sock, inp, trail = args.serve
        serve(int(port), sock, Path(inp), Path(trail))
        return
    if shutil.which("wrk") is None:
        sys.exit("needs wrk on PATH (apt-get install wrk)")
    from pdp.bundle import build_bundle
    from pdp.devtrust import ensure_dev_trust, mint_svid
    from pdp.tools import find_opa

    opa = find_opa()
    work = Path(tempfile.mkdtemp(prefix="pdp-floor-"))
    with running(work) as procs:
        bundle = build_bundle(opa, ROOT / "policies", work / "bundle.tar.gz")
        example = json.loads(DEFAULT_EXAMPLE.read_text())
        spiffe_id = example["spiffe_id"]
        domain = spiffe_id.split("/")[2]
        state = work / "state-pdp"
        bundles = ensure_dev_trust(state, [domain])
        token = mint_svid(state, spiffe_id, ttl_seconds=3600)
        request = {**example["request"]}
        request["agent"] = {**request.get("agent", {}), "token": token}
        request["task"] = {k: v for k, v in request["task"].items() if k == "purpose"}
        (work / "pdp.json").write_text(json.dumps(request))
        (work / "opa.json").write_bytes(raw_opa_input(request, token, bundles))
        lua = work / "post.lua"
        lua.write_text(WRK_LUA)
        opa_port, floor_port, pdp_port = free_port(), free_port(), free_port()
        sock = work / "opa.sock"
        cmd = [
            opa, "run", "--server", "--addr", f"127.0.0.1:{opa_port}", "--addr",
            f"unix://{sock}", "--bundle", str(bundle.path), "--log-level", "error",
            "--skip-version-check", "--optimize-store-for-read-speed",
        ]  # fmt: skip
        opa_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(opa_proc)
        wait_http(f"http://127.0.0.1:{opa_port}/health?bundles")
        floor_cmd = [sys.executable, __file__, "--serve", str(floor_port), str(sock),
                     str(work / "opa.json"), str(work / "trail.jsonl")]  # fmt: skip
        floor = subprocess.Popen(floor_cmd, cwd=ROOT)
        procs.append(floor)
        env = {"PDP_DEV_TRUST_DOMAINS": domain, "PDP_AUDIT_ENABLED": "true",
               "PDP_AUDIT_FSYNC": "off", "PDP_DECISION_CACHE_SIZE": "0"}  # fmt: skip
        pdp = start_pdp(pdp_port, state, env, work / "pdp.log")
        procs.append(pdp)
        wait_port(floor_port, floor)
        wait_http(f"http://127.0.0.1:{pdp_port}/readyz", 90, pdp)
        time.sleep(0.5)
        pdp_opa = int(Path(f"/proc/{pdp.pid}/task/{pdp.pid}/children").read_text().split()[0])
        targets = {
            "opa": (f"http://127.0.0.1:{opa_port}/v1/data/pdp/decision", work / "opa.json",
                    opa_proc.pid, opa_proc.pid),
            "floor": (f"http://127.0.0.1:{floor_port}/v1/decisions", work / "pdp.json",
                      floor.pid, opa_proc.pid),
            "pdp": (f"http://127.0.0.1:{pdp_port}/v1/decisions", work / "pdp.json",
                    pdp.pid, pdp_opa),
        }  # fmt: skip

        def one(name: str, c: int, seconds: int) -> dict[str, float]:
            url, body, pid, opa_pid = targets[name]
            before = cpu_seconds(opa_pid) if opa_pid != pid else 0.0
            got = wrk_slice(url, body, lua, c, seconds, pid)
            n = got["rps"] * seconds
            if opa_pid != pid:
                got["opa_cpu_us"] = (cpu_seconds(opa_pid) - before) / max(n, 1) * 1e6
            else:
                got["opa_cpu_us"] = got["cpu_us"]
            return got

        for name in targets:  # warm-up; also checks every target answers 2xx
            warm = one(name, 8, 1)
            if warm["non_2xx"]:
                raise RuntimeError(f"{name} answered non-2xx: {warm}")
        got: dict[str, list[dict[str, float]]] = {f"{n}{c}": [] for c in (1, 8) for n in targets}
        names = list(targets)
        for r in range(args.rounds):
            order = names[r % 3 :] + names[: r % 3]
            for c in (1, 8):
                for name in order:
                    got[f"{name}{c}"].append(one(name, c, args.slice))
            print(
                f"round {r + 1} (load {os.getloadavg()[0]:.1f}): "
                + "  ".join(
                    f"{k} {v[-1]['rps']:.0f}/s p50 {v[-1]['p50_ms']:.2f} "
                    f"cpu {v[-1]['cpu_us']:.0f} opa {v[-1]['opa_cpu_us']:.0f}"
                    for k, v in got.items()
                ),
                flush=True,
            )
        result: dict[str, Any] = {"rounds": args.rounds, "slice_s": args.slice}
        for key, slices in got.items():
            result[key] = {
                k: round(statistics.median(s[k] for s in slices), 3)
                for k in ("rps", "p50_ms", "cpu_us", "opa_cpu_us", "non_2xx")
            }
        for c in (1, 8):
            raw = got[f"opa{c}"]
            for name in ("floor", "pdp"):
                mine = got[f"{name}{c}"]
                result[f"{name}_c{c}_rps_ratio_rounds"] = [
                    round(b["rps"] / a["rps"], 3) for a, b in zip(raw, mine, strict=True)
                ]
                result[f"{name}_c{c}_added_p50_ms_rounds"] = [
                    round(b["p50_ms"] - a["p50_ms"], 3) for a, b in zip(raw, mine, strict=True)
                ]
        result["load_avg_1m"] = round(os.getloadavg()[0], 2)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
