"""The official AuthZEN interop vectors, unmodified, against a real OPA per scenario.

The vector files are copies (tests/authzen_vectors/README.md names source and commit).
Each check compares exactly what the interop runner beside the file compares:

- todo-backend and api-gateways ``runner.ts``: ``JSON.stringify(expected) ===
  JSON.stringify(data.decision || false)`` for /evaluation, and the same against
  ``data.evaluations || []`` for /evaluations (so an evaluations answer must be exactly
  ``[{"decision": ...}, ...]``).
- search-demo ``src/runner.ts``: axios POST (a non-2xx is an error), then
  ``deepStrictEqual`` of the whole body with ``results`` sorted by (type, id) on both sides:
  the body must be exactly ``{"results": [...]}``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pdp.bundle import build_bundle

from .conftest import ROOT, ClientFactory, ServeProcess, free_port, http_get
from .opa_process import OPAProcess

pytestmark = pytest.mark.opa

VECTORS = Path(__file__).parent / "authzen_vectors"
SCENARIOS = ROOT / "examples" / "authzen"
Client = TestClient[Any, Any]

DECISION_FILES = [
    ("todo", "authzen-todo-backend/decisions-authorization-api-1_0-00.json"),
    ("todo", "authzen-todo-backend/decisions-authorization-api-1_0-01.json"),
    ("todo", "authzen-todo-backend/decisions-authorization-api-1_0-02.json"),
    ("todo", "authzen-api-gateways/decisions.json"),
]
SEARCH_FILES = [
    ("subject", "authzen-search-demo/subject/results.json"),
    ("resource", "authzen-search-demo/resource/results.json"),
    ("action", "authzen-search-demo/action/results.json"),
]


def _stringify(value: Any) -> str:
    """JSON.stringify: no whitespace, member order as received."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.fixture(scope="module")
def scenario_opa(
    opa_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, OPAProcess]]:
    """One real OPA per interop scenario, each serving the bundle built from its directory."""
    running: dict[str, OPAProcess] = {}
    try:
        for name in ("todo", "search"):
            tmp = tmp_path_factory.mktemp(f"authzen-{name}")
            built = build_bundle(opa_bin, SCENARIOS / name, tmp / "bundle.tar.gz")
            running[name] = OPAProcess(
                opa_bin, tmp / "opa.sock", "--bundle", str(built.path)
            ).start()
        yield running
    finally:
        for opa in running.values():
            opa.stop()


def test_every_vector_file_is_present_and_unmodified() -> None:
    sums: dict[str, str] = {}
    for line in (VECTORS / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        sums[rel] = digest
    assert sorted(sums) == sorted(rel for _, rel in DECISION_FILES + SEARCH_FILES)
    for rel, digest in sums.items():
        assert hashlib.sha256((VECTORS / rel).read_bytes()).hexdigest() == digest, rel
        assert json.loads((VECTORS / rel).read_text())["evaluation"], rel


@pytest.mark.parametrize(("scenario", "rel"), DECISION_FILES, ids=[r for _, r in DECISION_FILES])
async def test_decision_vectors_pass_as_the_interop_runner_compares(
    make_client: ClientFactory, scenario_opa: dict[str, OPAProcess], scenario: str, rel: str
) -> None:
    client = await make_client(scenario_opa[scenario].url, opa_timeout_ms=2000)
    doc = json.loads((VECTORS / rel).read_text())
    failures = []
    cases = [("evaluation", c) for c in doc.get("evaluation", [])]
    cases += [("evaluations", c) for c in doc.get("evaluations", [])]
    for endpoint, case in cases:
        resp = await client.post(f"/access/v1/{endpoint}", json=case["request"])
        data = await resp.json()
        if endpoint == "evaluation":
            got = data.get("decision") or False
        else:
            got = data.get("evaluations") or []
        if _stringify(case["expected"]) != _stringify(got):
            failures.append((endpoint, case["request"], case["expected"], got))
    assert failures == []
    assert len(cases) == len(doc.get("evaluation", [])) + len(doc.get("evaluations", []))


def _sorted_results(body: dict[str, Any]) -> dict[str, Any]:
    # The runner sorts by (type, id); actions have neither, so they sort by name here (the
    # runner's comparator would throw on two actions: a quirk, not a requirement).
    def key(item: dict[str, Any]) -> tuple[str, str]:
        return (str(item.get("type", "")), str(item.get("id", item.get("name", ""))))

    return {**body, "results": sorted(body.get("results") or [], key=key)}


@pytest.mark.parametrize(("kind", "rel"), SEARCH_FILES, ids=[r for _, r in SEARCH_FILES])
async def test_search_vectors_pass_as_the_interop_runner_compares(
    make_client: ClientFactory, scenario_opa: dict[str, OPAProcess], kind: str, rel: str
) -> None:
    client = await make_client(scenario_opa["search"].url, opa_timeout_ms=2000)
    doc = json.loads((VECTORS / rel).read_text())
    failures = []
    for case in doc["evaluation"]:
        resp = await client.post(f"/access/v1/search/{kind}", json=case["request"])
        body = await resp.json()
        if resp.status != 200 or _sorted_results(body) != _sorted_results(case["expected"]):
            failures.append((case["request"], case["expected"], resp.status, body))
    assert failures == []


@pytest.mark.parametrize("scenario", ["todo", "search"])
@pytest.mark.parametrize(
    "command",
    [["fmt", "--check"], ["check"], ["lint"], ["test", "--coverage-min", "90"]],
    ids=lambda c: c[0],
)
def test_scenario_policies_pass_the_policy_gate(scenario: str, command: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pdpctl", "--policies", str(SCENARIOS / scenario), "policy"]
        + command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pdpctl_serve_policies_serves_a_scenario_with_all_front_doors(
    serve_process: Callable[..., ServeProcess],
) -> None:
    """`pdpctl serve --policies DIR` builds and serves DIR's bundle (the group's own
    --policies names the repository's library: the serve option wins), with the AuthZEN
    routes, the ext_authz HTTP mode and the gRPC listener up."""
    grpc_port = free_port()
    serve = serve_process(
        "--policies", str(SCENARIOS / "todo"),
        "--ext-authz-grpc-port", str(grpc_port),
        "--routes", str(ROOT / "examples" / "gateways" / "routes.yaml"),
    )  # fmt: skip
    case = json.loads((VECTORS / DECISION_FILES[1][1]).read_text())["evaluation"][12]
    request = urllib.request.Request(
        serve.url + "/access/v1/evaluation",
        data=json.dumps(case["request"]).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert json.loads(resp.read())["decision"] is case["expected"] is False
    status, body = http_get(serve.url + "/.well-known/authzen-configuration")
    assert status == 200 and body["policy_decision_point"] == serve.url
    with socket.create_connection(("127.0.0.1", grpc_port), timeout=5):
        pass
