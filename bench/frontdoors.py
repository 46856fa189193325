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

Load: a closed loop of C concurrent requests per target for D seconds, targets interleaved
for R rounds; per target the round with the median throughput is reported. The load
generators are compiled by default (``--client compiled``): wrk (one thread) for the three
HTTP doors and ghz (``scripts/install-tools.sh --bench``; one CPU, one HTTP/2 connection, as
Envoy multiplexes) for gRPC, so the client takes little of the 2 shared cores; ``--client
python`` uses aiohttp and the generated grpc.aio stub instead (a Python client on the same
cores steals CPU from the PDP, unevenly per door). Before measuring, each door is checked
once with the Python client: every answer must be an allow with a minted credential (wrk
and ghz count only the status). The last line of output is one JSON object: decisions/s,
p50/p99 (ms) and the PDP process's own CPU per decision (from /proc, its OPA child
excluded; ``loop_us`` is the event-loop thread's part) per front door, and each adapter's
cost over the JSON API: ``cost_vs_json`` = 1 - rps / json_rps, ``cpu_vs_json`` = cpu /
json_cpu - 1 (the issue's bound is 10 %).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
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
from google.protobuf import descriptor_pb2, json_format

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import free_port, stop, wait_http  # noqa: E402
from pdp.devtrust import mint_svid  # noqa: E402
from pdp.routes import RouteTable  # noqa: E402

EXAMPLE = ROOT / "examples" / "requests" / "allow-support-bot-jira-search.json"
GHZ = ROOT / ".tools" / "bin" / "ghz"
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


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread id of process ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    if found is None:
        raise RuntimeError(f"cannot read a wrk latency: {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def run_wrk(url: str, lua: Path, connections: int, duration: float) -> dict[str, float]:
    """wrk, one thread: {count, rps, p50_ms, p99_ms}; raises on any non-2xx answer."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(lua), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    count = re.search(r"([0-9]+) requests in", out)
    p50 = re.search(r"\s50%\s+(\S+)", out)
    p99 = re.search(r"\s99%\s+(\S+)", out)
    if count is None or p50 is None or p99 is None:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    n = int(count.group(1))
    return {
        "count": n,
        "rps": n / duration,
        "p50_ms": _ms(p50.group(1)),
        "p99_ms": _ms(p99.group(1)),
    }


def run_ghz(
    port: int, protoset: Path, data: Path, connections: int, duration: float
) -> dict[str, float]:
    """ghz on one CPU over one connection: {count, rps, p50_ms, p99_ms}; raises on errors."""
    out = subprocess.run(
        [
            str(GHZ), "--insecure", "--protoset", str(protoset),
            "--call", "envoy.service.auth.v3.Authorization.Check", "-D", str(data),
            "-c", str(connections), "--connections", "1", "--cpus", "1",
            "-z", f"{duration}s", "-O", "json", f"127.0.0.1:{port}",
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    report = json.loads(out)
    codes = report.get("statusCodeDistribution") or {}
    errors = report.get("errorDistribution") or {}
    # ghz closes its connection at the end of -z with up to -c calls in flight: those end
    # "Unavailable: use of closed network connection". Anything else is a failure.
    cut = sum(v for k, v in errors.items() if "use of closed network connection" in k)
    if "OK" not in codes or sum(errors.values()) != cut or cut > connections:
        raise RuntimeError(f"ghz saw errors: {codes} {errors}")
    latency = {d["percentage"]: d["latency"] / 1e6 for d in report["latencyDistribution"]}
    n = int(codes["OK"])
    return {"count": n, "rps": n / duration, "p50_ms": latency[50], "p99_ms": latency[99]}


def write_protoset(path: Path) -> None:
    """The Envoy Authorization service's descriptors (from the generated package) for ghz."""
    fds = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(fd: Any) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        fds.file.append(proto)

    add(external_auth_pb2.DESCRIPTOR)
    path.write_bytes(fds.SerializeToString())


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
            runners = (
                compiled_runners(args, base, grpc_port, token, json_body, authzen, check)
                if args.client == "compiled"
                else None
            )
            figures: dict[str, list[dict[str, float]]] = {k: [] for k in targets}
            cpu: dict[str, list[float]] = {k: [] for k in targets}
            loop_cpu: dict[str, list[float]] = {k: [] for k in targets}
            for _ in range(args.rounds):
                for name, call in targets.items():
                    before, threads_before = cpu_seconds(pid), thread_cpu(pid)
                    if runners is not None:
                        fig = await asyncio.to_thread(runners[name])
                        count = fig["count"]
                    else:
                        rps, lat = await closed_loop(call, args.connections, args.duration)
                        count = len(lat)
                        fig = {"rps": rps, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}
                    # the PDP process's own CPU per decision (its OPA child is apart)
                    cpu[name].append((cpu_seconds(pid) - before) / max(1, count) * 1e6)
                    loop_s = thread_cpu(pid).get(pid, 0.0) - threads_before.get(pid, 0.0)
                    loop_cpu[name].append(loop_s / max(1, count) * 1e6)
                    figures[name].append(fig)
    out: dict[str, Any] = {}
    for name, results in figures.items():
        median = statistics.median_low(sorted(r["rps"] for r in results))
        fig = next(r for r in results if r["rps"] == median)
        out[name] = {
            "decisions_per_s": round(fig["rps"], 1),
            "p50_ms": round(fig["p50_ms"], 2),
            "p99_ms": round(fig["p99_ms"], 2),
            "rounds_rps": [round(r["rps"], 1) for r in results],
            "pdp_cpu_us_per_decision": round(statistics.median(cpu[name]), 1),
            "loop_us": round(statistics.median(loop_cpu[name]), 1),
        }
    json_rps = out["json"]["decisions_per_s"]
    json_cpu = out["json"]["pdp_cpu_us_per_decision"]
    for name in ("authzen", "ext_authz_http", "ext_authz_grpc"):
        out[name]["cost_vs_json"] = round(1 - out[name]["decisions_per_s"] / json_rps, 3)
        out[name]["cpu_vs_json"] = round(out[name]["pdp_cpu_us_per_decision"] / json_cpu - 1, 3)
    return out


def compiled_runners(
    args: argparse.Namespace,
    base: str,
    grpc_port: int,
    token: str,
    json_body: bytes,
    authzen: bytes,
    check: Any,
) -> dict[str, Callable[[], dict[str, float]]]:
    """One wrk or ghz run per door, with its files in a directory of its own."""
    if shutil.which("wrk") is None or not GHZ.exists():
        sys.exit(
            "--client compiled needs wrk (apt-get install wrk) and .tools/bin/ghz "
            "(scripts/install-tools.sh --bench); or use --client python"
        )
    work = Path(tempfile.mkdtemp(prefix="pdp-bench-load-"))
    (work / "json.json").write_bytes(json_body)
    (work / "authzen.json").write_bytes(authzen)
    post = (
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        'local f = io.open("{}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    (work / "json.lua").write_text(post.format(work / "json.json"))
    (work / "authzen.lua").write_text(post.format(work / "authzen.json"))
    (work / "ext.lua").write_text(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    write_protoset(work / "auth.protoset")
    (work / "check.json").write_text(json_format.MessageToJson(check))
    c, d = args.connections, args.duration
    return {
        "json": lambda: run_wrk(base + "/v1/decisions", work / "json.lua", c, d),
        "authzen": lambda: run_wrk(base + "/access/v1/evaluation", work / "authzen.lua", c, d),
        "ext_authz_http": lambda: run_wrk(base + "/ext_authz" + SEARCH, work / "ext.lua", c, d),
        "ext_authz_grpc": lambda: run_ghz(
            grpc_port, work / "auth.protoset", work / "check.json", c, d
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per target per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument(
        "--client",
        choices=("compiled", "python"),
        default="compiled",
        help="load generators: wrk + ghz (default), or aiohttp + grpc.aio in this process",
    )
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
        cost = (
            f"  PDP CPU {fig['pdp_cpu_us_per_decision']:5.0f} us/decision"
            f" (loop {fig['loop_us']:4.0f})"
        )
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
