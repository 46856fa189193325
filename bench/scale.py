#!/usr/bin/env python3
"""Cost grows gently: `opa bench` of the allow example as the inventory grows.

Builds the shipped policy with synthetic inventories — 10 → 10,000 agents (five entitlements
each), and 10 → 1,000 entitlements for the deciding agent (support-bot, its real jira
entitlement listed last, so a scan would meet it last) — once through `pdp.bundle` (with the
entitlement index) and once with a plain `opa build` (no index: the agent's entitlements
are scanned), and runs `opa bench` of data.pdp.decision on the allow example's input. Each
figure is the best of ``--count`` runs, in µs per evaluation, with allocations per
evaluation (which do not depend on the machine's load). The bundles are built first; then
each round runs every case once, the order rotated each round, so that other processes'
load falls on every case alike (run one case after another, a load swing reads as growth).
The last line is JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.policy_cost import ALLOW_EXAMPLE, EXAMPLES, example_input, opa_bench  # noqa: E402
from pdp.bundle import build_bundle  # noqa: E402
from pdp.tools import find_opa  # noqa: E402

BOT = "spiffe://acme.example/agents/support-bot"


def grow(inventory: dict[str, Any], agents: int, entitlements: int) -> dict[str, Any]:
    """The inventory with ``agents`` agents in all and ``entitlements`` for support-bot."""
    inv = copy.deepcopy(inventory)
    for i in range(agents - len(inv["agents"])):
        inv["agents"][f"spiffe://acme.example/agents/synthetic-{i:05d}"] = {
            "tenant": "acme",
            "status": "active",
            "purposes": ["triage support tickets"],
            "entitlements": [
                {"action_types": ["tool.call"], "names": [f"tool{j}.*"], "operations": ["read"],
                 "destinations": [f"synthetic-dest-{(i + j) % 200}"]}
                for j in range(5)
            ],
        }  # fmt: skip
    bot = inv["agents"][BOT]
    real = bot["entitlements"]
    extra = max(0, entitlements - len(real))
    bot["entitlements"] = [
        {"action_types": ["tool.call", "data.read"], "names": [f"svc{j}.*"],
         "operations": ["read"], "destinations": [f"synthetic-dest-{j % 200}"]}
        for j in range(extra)
    ] + real  # fmt: skip
    return inv


def build(opa: str, policies: Path, inventory: dict[str, Any], work: Path) -> dict[str, Path]:
    """The shipped build (with the entitlement index) and a plain `opa build` (no index) of
    the policy with ``inventory``, under ``work``."""
    src = work / "policies"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(policies, src, ignore=shutil.ignore_patterns("*_test.rego"))
    (src / "data" / "inventory" / "data.json").write_text(json.dumps(inventory))
    indexed = build_bundle(opa, src, work / "indexed.tar.gz").path
    scanned = work / "scanned.tar.gz"
    subprocess.run(
        [opa, "build", "pdp", "data", "-o", str(scanned)], cwd=src, check=True,
        capture_output=True,
    )  # fmt: skip
    return {"indexed": indexed, "scan": scanned}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=3, help="rounds (best of, per case)")
    args = ap.parse_args()
    opa = find_opa()
    policies = ROOT / "policies"
    base = json.loads((policies / "data" / "inventory" / "data.json").read_text())
    cases = [("agents", n, 5) for n in (10, 100, 1000, 10000)]
    cases += [("entitlements", 10, n) for n in (10, 100, 1000)]
    with tempfile.TemporaryDirectory(prefix="pdp-scale-") as tmp:
        work = Path(tmp)
        input_file = work / "input.json"
        input_file.write_text(json.dumps(example_input(EXAMPLES / ALLOW_EXAMPLE, work / "state")))
        bundles = []
        for i, (_, agents, ents) in enumerate(cases):
            case_dir = work / f"case-{i}"
            case_dir.mkdir()
            bundles.append(build(opa, policies, grow(base, agents, ents), case_dir))
        # Every case once per round, the order rotated each round, so that the load of
        # other processes falls on all of them alike; the best of the rounds per case.
        best: dict[tuple[int, str], tuple[float, int]] = {}
        for r in range(args.count):
            for i in [(r + k) % len(cases) for k in range(len(cases))]:
                for name, bundle in bundles[i].items():
                    us_allocs = opa_bench(opa, bundle, input_file, 1)
                    if (i, name) not in best or us_allocs[0] < best[(i, name)][0]:
                        best[(i, name)] = us_allocs
        rows = []
        for i, (axis, agents, ents) in enumerate(cases):
            got: dict[str, dict[str, Any]] = {
                n: {"us": round(best[(i, n)][0], 1), "allocs": best[(i, n)][1]}
                for n in ("indexed", "scan")
            }
            rows.append({"axis": axis, "agents": agents, "entitlements": ents, **got})
            print(
                f"  {agents:6d} agents {ents:5d} entitlements: indexed "
                f"{got['indexed']['us']:7.1f} µs {got['indexed']['allocs']:5d} allocs | scan "
                f"{got['scan']['us']:7.1f} µs {got['scan']['allocs']:5d} allocs",
                file=sys.stderr,
            )
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
