"""Shadow evaluation: `serve --shadow-bundle FILE|oci://…` evaluates every live decision on
a second, real OPA holding a candidate, off the answer path; differences go to the shadow
log (never enforced) and `pdpctl shadow report` summarises them like `pdpctl replay`."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pdpctl import errors
from pdpctl.main import cli
from prometheus_client import CollectorRegistry

from pdp.bundle import build_bundle
from pdp.shadow import SHADOW_FILE, ShadowEvaluator, ShadowMetrics
from pdp.tools import find_opa

from .conftest import EXAMPLES, POLICIES, ClientFactory, load_example
from .opa_process import OPAProcess
from .registry_process import RegistryProcess
from .registry_process import registry as registry  # noqa: F401 (fixture)

pytestmark = pytest.mark.opa

ALLOW = next(p for p in EXAMPLES if p.name == "allow-support-bot-jira-search.json")
OTHER_TENANT = next(p for p in EXAMPLES if p.name == "deny-tenant-mismatch.json")
#: Widens access: any agent of the globex.example trust domain is allowed.
WIDENING = '\nallow if input.identity.trust_domain == "globex.example"\n'


def candidate(tmp: Path, *, widen: bool) -> Path:
    src = tmp / "candidate-policies"
    shutil.copytree(POLICIES, src)
    if widen:
        with (src / "pdp" / "decision.rego").open("a") as f:
            f.write(WIDENING)
    return build_bundle(find_opa(), src, tmp / "candidate.tar.gz", revision="candidate").path


async def decide_examples(client: Any, mint: Callable[..., str]) -> list[dict[str, Any]]:
    answers = []
    for path in (ALLOW, OTHER_TENANT):
        example = load_example(path)
        request = copy.deepcopy(example["request"])
        request["agent"]["token"] = mint(example["spiffe_id"])
        resp = await client.post("/v1/decisions", json=request)
        assert resp.status == 200
        answers.append(await resp.json())
    return answers


def shadow_lines(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "shadow" / SHADOW_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def wait_lines(tmp: Path, n: int) -> list[dict[str, Any]]:
    for _ in range(500):
        lines = [ln for ln in shadow_lines(tmp) if "decision_id" in ln]
        if len(lines) >= n:
            return lines
        await asyncio.sleep(0.02)
    raise AssertionError(f"shadow log has {len(shadow_lines(tmp))} line(s), wanted {n}")


def report(tmp: Path, *args: str) -> Any:
    return CliRunner().invoke(
        cli, ["shadow", "report", "--dir", str(tmp / "shadow"), *args], catch_exceptions=False
    )


async def test_a_widening_candidate_shows_allow_gained_and_is_never_enforced(
    make_client: ClientFactory, shared_opa: OPAProcess, tmp_path: Path, mint: Callable[..., str]
) -> None:
    bundle = candidate(tmp_path, widen=True)
    client = await make_client(
        shared_opa.url, opa_timeout_ms=5000, audit_dir=tmp_path / "audit", shadow_bundle=str(bundle)
    )

    allowed, denied = await decide_examples(client, mint)

    assert allowed["allow"] is True and denied["allow"] is False  # the live answers stand
    lines = await wait_lines(tmp_path, 2)
    by_id = {ln["decision_id"]: ln for ln in lines}
    assert by_id[allowed["decision_id"]]["kind"] is None
    gained = by_id[denied["decision_id"]]
    assert gained["kind"] == "deny_to_allow"
    assert gained["live"]["allow"] is False and gained["shadow"]["allow"] is True
    assert gained["shadow_revision"] == "candidate"
    assert "token" not in json.dumps(lines) and "input" not in gained
    text = await (await client.get("/metrics")).text()
    assert 'pdp_shadow_evaluations_total{result="changed"} 1.0' in text
    await client.close()

    result = report(tmp_path)
    assert result.exit_code == errors.REPLAY_CHANGED, result.output
    assert "deny → allow         1" in result.output
    doc = json.loads(report(tmp_path, "--format", "json", "--fail-on", "none").output)
    assert (doc["total"], doc["unchanged"], doc["deny_to_allow"]) == (2, 1, 1)
    assert doc["changes"][0]["decision_id"] == denied["decision_id"]
    md = report(tmp_path, "--format", "markdown", "--fail-on", "none").output
    assert "| deny → allow | 1 |" in md
    junit = report(tmp_path, "--format", "junit").output
    assert 'failures="1"' in junit


async def test_an_identical_candidate_shows_no_difference(
    make_client: ClientFactory, shared_opa: OPAProcess, tmp_path: Path, mint: Callable[..., str]
) -> None:
    bundle = candidate(tmp_path, widen=False)
    client = await make_client(
        shared_opa.url, opa_timeout_ms=5000, audit_dir=tmp_path / "audit", shadow_bundle=str(bundle)
    )
    await decide_examples(client, mint)
    lines = await wait_lines(tmp_path, 2)
    await client.close()

    assert [ln["kind"] for ln in lines] == [None, None]
    result = report(tmp_path, "--fail-on", "any-change")
    assert result.exit_code == 0, result.output
    doc = json.loads(report(tmp_path, "--format", "json").output)
    assert (doc["total"], doc["changed"], doc["unchanged"]) == (2, 0, 2)


async def test_a_candidate_from_the_registry_is_pulled_and_evaluated(
    make_client: ClientFactory,
    shared_opa: OPAProcess,
    tmp_path: Path,
    mint: Callable[..., str],
    registry: RegistryProcess,  # noqa: F811
) -> None:
    bundle = candidate(tmp_path, widen=True)
    ref = f"oci://{registry.host}/policies/pdp:candidate"
    published = CliRunner().invoke(cli, ["bundle", "publish", str(bundle), ref, "--plain-http"])
    assert published.exit_code == 0, published.output
    client = await make_client(
        shared_opa.url, opa_timeout_ms=5000, audit_dir=tmp_path / "audit", shadow_bundle=ref
    )

    _, denied = await decide_examples(client, mint)

    lines = await wait_lines(tmp_path, 2)
    assert {ln["decision_id"]: ln["kind"] for ln in lines}[denied["decision_id"]] == "deny_to_allow"
    await client.close()


async def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path: Path) -> None:
    metrics = CollectorRegistry()
    evaluator = ShadowEvaluator(
        None,  # type: ignore[arg-type]  # never evaluates: no worker is started
        tmp_path / SHADOW_FILE,
        ShadowMetrics(metrics),
        queue_max=2,
    )
    answer = {"allow": False, "reasons": [], "policy": {"revision": "r"}}

    for i in range(5):
        evaluator.submit(f"d-{i}", {}, answer)

    assert evaluator.queue.qsize() == 2 and evaluator.dropped == 3
    assert metrics.get_sample_value("pdp_shadow_dropped_total") == 3.0


def test_the_report_counts_drops_as_skipped_and_escapes_what_it_shows(tmp_path: Path) -> None:
    d = tmp_path / "shadow"
    d.mkdir()
    lines = [
        {"time": "2026-01-01T00:00:00Z", "decision_id": "a", "kind": None,
         "live_revision": "v1", "shadow_revision": "v2"},
        {"time": "2026-01-01T00:00:01Z", "decision_id": "b", "kind": "reasons",
         "live": {"allow": False, "reasons": ["x"], "obligations": {}},
         "shadow": {"allow": False, "reasons": ["y\u202e"], "obligations": {}},
         "agent": "spiffe://a/b", "tenant": "acme\u200b", "action": "tool.call",
         "destination": "d"},
        {"time": "2026-01-01T00:00:02Z", "tally": {"run": "r1", "dropped": 4}},
    ]  # fmt: skip
    (d / SHADOW_FILE).write_text("".join(json.dumps(ln) + "\n" for ln in lines))

    result = report(tmp_path, "--fail-on", "any-change")

    assert result.exit_code == errors.REPLAY_CHANGED
    assert "skipped (no answer)  4" in result.output
    assert "\u202e" not in result.output and "\u200b" not in result.output
    assert report(tmp_path, "--since", "2026-01-01T00:00:01.500000+00:00").exit_code == 0
