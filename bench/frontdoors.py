#!/usr/bin/env python3
"""Benchmark: the front doors against the JSON API, one PDP, the same allow example.

One `pdpctl serve` (embedded OPA, audit trail on, decision cache off so that every request
is a full decision) with the ext_authz gRPC port and examples/gateways/routes.yaml. Four
ways to ask for the same decision — support-bot searching jira
(examples/requests/allow-support-bot-jira-search.json), as the route file's jira-search
route describes the call, so every door hands the decision service the identical request;
every answer is an allow that mints a credential:

  json         POST /v1/decisions                      the example's decision request
  authzen      POST /access/v1/evaluation              the same, as an AuthZEN agent
                                                        evaluation asking for the credential
  ext_authz_http  GET /ext_authz/rest/api/2/search      Authorization: Bearer <SVID>
  ext_authz_grpc  envoy.service.auth.v3.Authorization/Check, same HTTP attributes

Load: a closed loop of C concurrent requests per target for D seconds (Python client:
aiohttp for HTTP, the generated grpc.aio stub for gRPC), targets interleaved for R rounds;
per target the round with the median throughput is reported. The last line of output is
one JSON object: decisions/s, p50/p99 (ms) and the PDP process's own CPU per decision
(from /proc, its OPA child excluded) per front door, and each adapter's cost over the JSON
API: ``cost_vs_json`` = 1 - rps / json_rps, ``cpu_vs_json`` = cpu / json_cpu - 1 (the
issue's bound is 10 %). CPU per decision is the steadier figure on a shared machine.
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import free_port, stop, wait_http  # noqa: E402
from pdp.devtrust import mint_svid  # noqa: E402
from pdp.routes import RouteTable  # noqa: E402

EXAMPLE = ROOT / "examples" / "requests" / "allow-support-bot-jira-search.json"
ROUTES = ROOT / "examples" / "gateways" / "routes.yaml"
SEARCH = "/rest/api/2/search"


def authzen_body(request: dict[str, Any], spiffe_id: str, token: str) -> dict[str, Any]:
    """The example's decision request as an AuthZEN agent evaluation (docs/authzen.md)."""
    action, dest = request["action"], request["destination"]
    context = dict(request.get("context", {}))
    context.update({k: request[k] for k in ("tenant", "task", "prompt") if k in request})
    props: dict[str, Any] = {"token": token}
    if "on_behalf_of" in request.get("agent", {}):
        props["on_behalf_of"] = request["agent"]["on_behalf_of"]
    rprops = {k: dest[k] for k in ("url", "environment") if k in dest}
    rprops.update(request.get("data", {}))
    return {
        "subject": {"type": "agent", "id": spiffe_id, "properties": props},
        "action": {
            "name": action["name"],
            "properties": {k: action[k] for k in ("type", "operation", "arguments") if k in action},
        },
        "resource": {"type": dest["type"], "id": dest["name"], "properties": rprops},
        "context": context,
        "options": {"agent_pdp": {"credential": True}},
    }


Call = Callable[[], Awaitable[bool]]


async def closed_loop(call: Call, connections: int, duration: float) -> tuple[float, list[float]]:
    """``connections`` workers calling back to back for ``duration`` s: (rps, latencies)."""
    latencies: list[float] = []
    failures = 0
    last: list[str] = []
    stop = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal failures
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                ok = await call()
            except (aiohttp.ClientError, grpc.aio.AioRpcError, KeyError) as exc:
                ok = False
                last[:] = [repr(exc)[:300]]
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{call.__name__}: {failures} answers were not an allow {last}")
    return len(latencies) / elapsed, latencies


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[k] * 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    args: argparse.Namespace, base: str, grpc_port: int, state: Path, pid: int
) -> Any:
    example = json.loads(EXAMPLE.read_text())
    token = mint_svid(state, example["spiffe_id"], ttl_seconds=3600)
    # One decision request for all four doors: the one the ext_authz route produces for a
    # GET of the search path (the example's call, as routes.yaml describes it).
    route = RouteTable.load(ROUTES).match("jira.internal.acme", SEARCH, "GET")
    assert route is not None
    http_context = {"http": {"method": "GET", "host": "jira.internal.acme", "path": SEARCH}}
    request = route.decision_request(token, None, http_context)
    json_body = json.dumps(request).encode()
    authzen = json.dumps(authzen_body(request, example["spiffe_id"], token)).encode()
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=args.connections * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            check = external_auth_pb2.CheckRequest(
                attributes=attribute_context_pb2.AttributeContext(
                    request=attribute_context_pb2.AttributeContext.Request(
                        http=attribute_context_pb2.AttributeContext.HttpRequest(
                            method="GET",
                            host="jira.internal.acme",
                            path=SEARCH,
                            headers={"authorization": f"Bearer {token}"},
                        )
                    )
                )
            )

            async def json_api() -> bool:
                async with session.post(
                    base + "/v1/decisions", data=json_body, headers=headers
                ) as r:
                    return r.status == 200 and (await r.json())["allow"] is True

            async def authzen_api() -> bool:
                url = base + "/access/v1/evaluation"
                async with session.post(url, data=authzen, headers=headers) as r:
                    body = await r.json()
                    return r.status == 200 and body["decision"] is True

            async def ext_http() -> bool:
                async with session.get(
                    base + "/ext_authz" + SEARCH, headers={"Authorization": f"Bearer {token}"}
                ) as r:
                    await r.read()
                    return r.status == 200 and r.headers["Authorization"] != f"Bearer {token}"

            async def ext_grpc() -> bool:
                resp = await stub.Check(check, timeout=5)
                return bool(resp.status.code == 0 and resp.HasField("ok_response"))

            targets: dict[str, Call] = {
                "json": json_api,
                "authzen": authzen_api,
                "ext_authz_http": ext_http,
                "ext_authz_grpc": ext_grpc,
            }
            for call in targets.values():  # warm-up, and a correctness check of each door
                await closed_loop(call, args.connections, 1.0)
            rounds: dict[str, list[tuple[float, list[float]]]] = {k: [] for k in targets}
            cpu: dict[str, list[float]] = {k: [] for k in targets}
            for _ in range(args.rounds):
                for name, call in targets.items():
                    before = cpu_seconds(pid)
                    rps, lat = await closed_loop(call, args.connections, args.duration)
                    # the PDP process's own CPU per decision (its OPA child is apart)
                    cpu[name].append((cpu_seconds(pid) - before) / max(1, len(lat)) * 1e6)
                    rounds[name].append((rps, lat))
    out: dict[str, Any] = {}
    for name, results in rounds.items():
        rps_values = sorted(r for r, _ in results)
        median = statistics.median_low(rps_values)
        rps, lat = next(r for r in results if r[0] == median)
        out[name] = {
            "decisions_per_s": round(rps, 1),
            "p50_ms": round(pct(lat, 50), 2),
            "p99_ms": round(pct(lat, 99), 2),
            "rounds_rps": [round(r, 1) for r, _ in results],
            "pdp_cpu_us_per_decision": round(statistics.median(cpu[name]), 1),
        }
    json_rps = out["json"]["decisions_per_s"]
    json_cpu = out["json"]["pdp_cpu_us_per_decision"]
    for name in ("authzen", "ext_authz_http", "ext_authz_grpc"):
        out[name]["cost_vs_json"] = round(1 - out[name]["decisions_per_s"] / json_rps, 3)
        out[name]["cpu_vs_json"] = round(out[name]["pdp_cpu_us_per_decision"] / json_cpu - 1, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5, help="seconds per target per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pdp-bench-fd-") as tmp:
        state = Path(tmp) / "state"
        port, grpc_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PDP_")}
        env["PDP_DECISION_CACHE_SIZE"] = "0"  # every request a full decision, at every door
        # A deadline that a saturated, shared 2-core machine does not hit: every answer is
        # the allow (the fail-closed 503 under overload is measured by bench/run.py).
        env["PDP_OPA_TIMEOUT_MS"] = "2000"
        cmd = [
            sys.executable, "-m", "pdpctl", "serve", "--port", str(port),
            "--state-dir", str(state), "--routes", str(ROUTES),
            "--ext-authz-grpc-port", str(grpc_port),
        ]  # fmt: skip
        log = Path(tmp) / "serve.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60)
            base = f"http://127.0.0.1:{port}"
            result = asyncio.run(measure(args, base, grpc_port, state, proc.pid))
        except Exception:
            print(log.read_text()[-2000:], file=sys.stderr)
            raise
        finally:
            stop([proc], grace_s=20)
    for name, fig in result.items():
        cost = f"  PDP CPU {fig['pdp_cpu_us_per_decision']:5.0f} us/decision"
        if "cost_vs_json" in fig:
            cost += (
                f"  vs JSON API: throughput {-fig['cost_vs_json'] * 100:+.1f} %,"
                f" PDP CPU {fig['cpu_vs_json'] * 100:+.1f} %"
            )
        print(
            f"{name:15s} {fig['decisions_per_s']:8.1f} decisions/s  p50 {fig['p50_ms']:6.2f} ms"
            f"  p99 {fig['p99_ms']:6.2f} ms{cost}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
