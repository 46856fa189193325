#!/usr/bin/env python3
"""Cost grows gently: `opa bench` of the allow example as the inventory grows.

Builds the shipped policy with synthetic inventories — 10 → 10,000 agents (five entitlements
each), and 10 → 1,000 entitlements for the deciding agent (support-bot, its real jira
entitlement listed last, so a scan would meet it last) — once through `pdp.bundle` (with the
entitlement index) and once with a plain `opa build` (no index: the agent's entitlements
are scanned), and runs `opa bench` of data.pdp.decision on the allow example's input. Each
figure is the best of ``--count`` runs, in µs per evaluation, with allocations per
evaluation (which do not depend on the machine's load). The last line is JSON.
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


def measure(opa: str, policies: Path, inventory: dict[str, Any], work: Path, count: int,
            input_file: Path) -> dict[str, Any]:  # fmt: skip
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
    out = {}
    for name, bundle in (("indexed", indexed), ("scan", scanned)):
        us, allocs = opa_bench(opa, bundle, input_file, count)
        out[name] = {"us": round(us, 1), "allocs": allocs}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=3)
    args = ap.parse_args()
    opa = find_opa()
    policies = ROOT / "policies"
    base = json.loads((policies / "data" / "inventory" / "data.json").read_text())
    rows = []
    with tempfile.TemporaryDirectory(prefix="pdp-scale-") as tmp:
        work = Path(tmp)
        input_file = work / "input.json"
        input_file.write_text(json.dumps(example_input(EXAMPLES / ALLOW_EXAMPLE, work / "state")))
        cases = [("agents", n, 5) for n in (10, 100, 1000, 10000)]
        cases += [("entitlements", 10, n) for n in (10, 100, 1000)]
        for axis, agents, ents in cases:
            got = measure(opa, policies, grow(base, agents, ents), work, args.count, input_file)
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
