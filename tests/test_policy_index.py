"""The entitlement index the bundle build derives (pdp/bundle.py, policies/pdp/index): shipped
in the bundle, and every example decides the same with it as with a scan of the inventory."""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from pdp.bundle import BuiltBundle, build_bundle
from pdp.devtrust import mint_svid
from pdp.identity import SVIDVerifier, TrustBundles
from pdp.normalize import normalize

from .conftest import DEV_DOMAINS, EXAMPLES, POLICIES, load_example


def bundle_data(path: Path) -> dict[str, Any]:
    with tarfile.open(path) as tar:
        member = tar.extractfile("/data.json") or tar.extractfile("data.json")
        assert member is not None
        doc: dict[str, Any] = json.loads(member.read())
        return doc


def test_the_built_bundle_carries_the_entitlement_index(policy_bundle: BuiltBundle) -> None:
    data = bundle_data(policy_bundle.path)
    inventory = data["inventory"]["agents"]
    index = data["pdp_index"]["entitlements"]
    bot = "spiffe://acme.example/agents/support-bot"
    jira = index[bot]["jira"]["tool.call"]
    assert jira == [e for e in inventory[bot]["entitlements"] if "jira" in e["destinations"]]
    # every (agent, destination, action type) an entitlement names is a key, and only those
    expected = {
        (agent, dest, kind)
        for agent, entry in inventory.items()
        for e in entry.get("entitlements", [])
        for dest in e["destinations"]
        for kind in e["action_types"]
    }
    got = {(a, d, k) for a, dests in index.items() for d, kinds in dests.items() for k in kinds}
    assert got == expected


def test_a_policy_without_an_index_rule_builds_without_derived_data(
    opa_bin: str, tmp_path: Path
) -> None:
    (tmp_path / "pdp").mkdir()
    (tmp_path / "pdp" / "p.rego").write_text("package pdp\n\ndecision := {}\n")
    built = build_bundle(opa_bin, tmp_path, tmp_path / "b.tar.gz")
    # No index; and no fast-path review, so a fast path would clear nothing.
    assert bundle_data(built.path)["pdp_index"] == {"fast_reviewed": False}


@pytest.fixture(scope="module")
def scan_bundle(opa_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same sources built by a plain `opa build`: no index, entitlements are scanned."""
    out = tmp_path_factory.mktemp("scan") / "scan.tar.gz"
    subprocess.run(
        [opa_bin, "build", "pdp", "data", "--ignore", "*_test.rego", "-o", str(out)],
        cwd=POLICIES,
        check=True,
        capture_output=True,
    )
    assert "pdp_index" not in bundle_data(out)
    return out


def evaluate(opa_bin: str, bundle: Path, input_doc: dict[str, Any], tmp: Path) -> Any:
    (tmp / "input.json").write_text(json.dumps(input_doc))
    out = subprocess.run(
        [opa_bin, "eval", "-b", str(bundle), "-i", str(tmp / "input.json"), "--format", "json",
         "data.pdp.decision"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out)["result"][0]["expressions"][0]["value"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_decides_the_same_with_the_index_and_with_a_scan(
    path: Path,
    opa_bin: str,
    policy_bundle: BuiltBundle,
    scan_bundle: Path,
    dev_state: Path,
    tmp_path: Path,
) -> None:
    example = load_example(path)
    request = json.loads(json.dumps(example["request"]))
    if example.get("spiffe_id") and not request.get("agent", {}).get("token"):
        request.setdefault("agent", {})["token"] = mint_svid(dev_state, example["spiffe_id"])
    verifier = SVIDVerifier(TrustBundles.from_files(_trust_files(dev_state)), "agent-pdp")
    identity = verifier.verify(request.get("agent", {}).get("token"))
    status = "active" if identity.authenticated else None
    input_doc = normalize(request, identity, time.time_ns(), agent_status=status)
    indexed = evaluate(opa_bin, policy_bundle.path, input_doc, tmp_path)
    scanned = evaluate(opa_bin, scan_bundle, input_doc, tmp_path)
    assert indexed == scanned
    assert indexed["allow"] == example["expect"]["allow"]


def _trust_files(state: Path) -> dict[str, Path]:
    from pdp.devtrust import ensure_dev_trust

    return ensure_dev_trust(state, DEV_DOMAINS)
