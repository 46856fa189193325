"""A running PDP whose OPA activates a bundle with off-schema data fails closed
(pdp/dataguard.py): every decision under that revision is a ``policy.data_invalid`` deny,
recorded; /readyz is 503; a later bundle whose data matches lifts it. Real OPA pulling real
bundles from a bundle service; the off-schema bundle is built with plain `opa build`, which
does not check the data (pdpctl bundle build would refuse it)."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pdp.app import create_app
from pdp.bundle import BuiltBundle, build_bundle, derived_data
from pdp.dataguard import DataGuard
from pdp.opa import OPAResult
from pdp.state import DATA_GUARD

from .conftest import EXAMPLES, POLICIES, load_example, remote_settings
from .http_helpers import metric
from .opa_process import OPAProcess
from .test_decision_cache import BundleServer, ListRecorder

Client = TestClient[Any, Any]
ALLOW = next(p for p in EXAMPLES if p.name == "allow-support-bot-jira-search.json")
BOT = "spiffe://acme.example/agents/support-bot"


def raw_bundle(opa_bin: str, policies: Path, out: Path, revision: str) -> Path:
    """`opa build` as another tool would run it (the derived data included, so the fast
    path and index behave as in a bundle of ours): no data check."""
    derived = out.parent / f"{revision}-derived"
    derived.mkdir()
    (derived / "data.json").write_text(json.dumps(derived_data(opa_bin, policies, ["pdp", "data"])))
    subprocess.run(
        [opa_bin, "build", "pdp", "data", str(derived), "--ignore", "*_test.rego",
         "--revision", revision, "--output", str(out)],
        cwd=policies, check=True, capture_output=True,
    )  # fmt: skip
    return out


def off_schema_policies(tmp_path: Path) -> Path:
    """The shipped policies with one member the policy never reads added to the support
    bot's entry: OPA still allows its Jira search; the schema refuses the member."""
    policies = tmp_path / "off"
    shutil.copytree(POLICIES, policies)
    path = policies / "data/inventory/data.json"
    doc = json.loads(path.read_text())
    doc["agents"][BOT]["purpose"] = ["anything"]
    path.write_text(json.dumps(doc))
    return policies


@pytest.fixture
def bundle_server(policy_bundle: BuiltBundle) -> Iterator[BundleServer]:
    server = BundleServer(policy_bundle.path.read_bytes())
    yield server
    server.close()


@pytest.fixture
def opa_on(opa_bin: str, tmp_path: Path) -> Iterator[Callable[[BundleServer], OPAProcess]]:
    started: list[OPAProcess] = []

    def _start(server: BundleServer) -> OPAProcess:
        config = tmp_path / "opa.yaml"
        config.write_text(
            f"services:\n  b:\n    url: {server.url}\n"
            "bundles:\n  pdp:\n    service: b\n    resource: bundle.tar.gz\n"
            "    polling:\n      min_delay_seconds: 1\n      max_delay_seconds: 1\n"
        )
        opa = OPAProcess(opa_bin, tmp_path / "opa.sock", "--config-file", str(config)).start()
        started.append(opa)
        return opa

    yield _start
    for opa in started:
        opa.stop()


def request_of(mint: Callable[..., str]) -> dict[str, Any]:
    example = load_example(ALLOW)
    request: dict[str, Any] = copy.deepcopy(example["request"])
    request["agent"]["token"] = mint(example["spiffe_id"])
    # no task id or session: this test's calls are judged without a history
    request["task"] = {"purpose": request["task"]["purpose"]}
    return request


async def until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(300):  # OPA polls every second, the guard checks every second
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_off_schema_data_denies_every_decision_until_a_good_bundle_is_active(
    aiohttp_client: Any,
    dev_state: Path,
    mint: Callable[..., str],
    opa_bin: str,
    tmp_path: Path,
    bundle_server: BundleServer,
    opa_on: Callable[[BundleServer], OPAProcess],
) -> None:
    bad = raw_bundle(opa_bin, off_schema_policies(tmp_path), tmp_path / "bad.tar.gz", "bad-1")
    bundle_server.payload = bad.read_bytes()
    opa = opa_on(bundle_server)
    recorder = ListRecorder()
    settings = remote_settings(dev_state, opa.url, audit_enabled=False, opa_timeout_ms=5000)
    client: Client = await aiohttp_client(create_app(settings, recorder=recorder))
    request = request_of(mint)

    resp = await client.post("/v1/decisions", json=request)
    assert resp.status == 200
    body = await resp.json()
    pointer = "/agents/spiffe:~1~1acme.example~1agents~1support-bot/purpose"
    assert body["allow"] is False
    assert "credential" not in body
    assert body["policy"] == {"revision": "bad-1"}
    [reason] = body["reasons"]
    assert reason["code"] == "policy.data_invalid"
    assert reason["message"] == (
        "bundle revision bad-1 has data that does not match its schemas: "
        f"data.inventory: {pointer}: is not a known field"
    )
    assert "policy.data_invalid" in json.dumps(recorder.records[-1])

    ready = await client.get("/readyz")
    assert ready.status == 503
    detail = (await ready.json())["detail"]
    assert detail.startswith("bundle revision bad-1 refused: its data does not match the schemas")
    text = await (await client.get("/metrics")).text()
    assert 'pdp_policy_bundle_data_valid{revision="bad-1"} 0.0' in text

    good = build_bundle(opa_bin, POLICIES, tmp_path / "good.tar.gz", revision="good-1")
    bundle_server.payload = good.path.read_bytes()
    guard = client.app[DATA_GUARD]
    await until(lambda: guard.revision == "good-1", "the good bundle to be checked")

    after = await (await client.post("/v1/decisions", json=request)).json()
    assert after["allow"] is True, after
    assert after["policy"] == {"revision": "good-1"}
    assert (await client.get("/readyz")).status == 200
    text = await (await client.get("/metrics")).text()
    assert metric(text, "pdp_policy_bundle_data_valid", revision="good-1") == 1
    assert 'pdp_policy_bundle_data_valid{revision="bad-1"} 0.0' in text


async def test_a_decision_from_a_revision_not_yet_checked_is_checked_before_it_is_answered(
    opa_bin: str,
    tmp_path: Path,
    bundle_server: BundleServer,
    opa_on: Callable[[BundleServer], OPAProcess],
) -> None:
    from pdp.opa import OPAClient

    opa = opa_on(bundle_server)
    client = OPAClient(opa.url, timeout_s=5)
    await client.start()
    try:
        guard = DataGuard(client, interval_s=3600)  # no polling: only vet() checks
        await guard.refresh()
        assert guard.error is None
        first = guard.revision
        bad = raw_bundle(opa_bin, off_schema_policies(tmp_path), tmp_path / "b.tar.gz", "bad-2")
        bundle_server.payload = bad.read_bytes()
        for _ in range(300):
            probe = await client.data("system/bundles/pdp/manifest/revision")
            if probe == "bad-2":
                break
            await asyncio.sleep(0.05)
        allow = {"allow": True, "reasons": [], "obligations": {}, "cache": {"ttl_seconds": 0}}
        vetted = await guard.vet(OPAResult(allow, "bad-2", 0.0))
        assert (vetted.decision, vetted.error_code) == (None, "policy.data_invalid")
        assert guard.verdicts[first] == ""
        # a revision that is neither active nor checked cannot be vouched for
        gone = await guard.vet(OPAResult(allow, "never-seen", 0.0))
        assert gone.error_code == "policy.data_unverified"
        assert guard.problem() is not None
    finally:
        await client.close()


async def test_a_guard_that_cannot_read_opa_refuses() -> None:
    from pdp.opa import OPAClient

    client = OPAClient("unix:///nonexistent/opa.sock", timeout_s=0.5)
    await client.start()
    try:
        guard = DataGuard(client)
        await guard.refresh()
        assert guard.error is not None
        allow = {"allow": True, "reasons": [], "obligations": {}, "cache": {"ttl_seconds": 0}}
        vetted = await guard.vet(OPAResult(allow, "r1", 0.0))
        assert vetted.decision is None
        assert vetted.error_code == "policy.data_unverified"
    finally:
        await client.close()
