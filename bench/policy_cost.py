#!/usr/bin/env python3
"""`opa bench` of data.pdp.decision on every example request (the policy's own cost).

Each example's request is normalised exactly as the PDP does (dev SVID minted for its agent,
agent status "active"), then `opa bench --optimize-store-for-read-speed` (the engine flags of
the embedded OPA) evaluates the entrypoint on the built bundle. Prints one line per example
(µs/op, allocations) and, last, one JSON object: ``opa_eval_us`` (the allow example),
``opa_eval_us_worst`` (the slowest example) and the per-example figures.

``--against DIR`` measures a second policy directory (e.g. a ``git archive`` of main's
``policies/``) in the same run, alternating the two bundles example by example and run by
run, so that load from other processes hits both alike; the JSON then carries both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pdp.bundle import build_bundle  # noqa: E402
from pdp.devtrust import ensure_dev_trust, mint_svid  # noqa: E402
from pdp.identity import SVIDVerifier, TrustBundles  # noqa: E402
from pdp.normalize import normalize  # noqa: E402
from pdp.tools import find_opa  # noqa: E402

EXAMPLES = ROOT / "examples" / "requests"
ALLOW_EXAMPLE = "allow-support-bot-jira-search.json"


def example_input(path: Path, state: Path) -> dict[str, Any]:
    """The OPA input the PDP builds for an example request."""
    doc = json.loads(path.read_text())
    request = json.loads(json.dumps(doc["request"]))
    spiffe_id = doc.get("spiffe_id")
    domains = ["acme.example", "globex.example"]
    bundles = ensure_dev_trust(state, domains)
    verifier = SVIDVerifier(TrustBundles.from_files(bundles), "agent-pdp")
    token = request.get("agent", {}).get("token")
    if spiffe_id and not token:
        token = mint_svid(state, spiffe_id, ttl_seconds=3600)
        request.setdefault("agent", {})["token"] = token
    identity = verifier.verify(token)
    status = "active" if identity.authenticated else None
    return normalize(request, identity, time.time_ns(), agent_status=status)


def opa_bench(opa: str, bundle: Path, input_file: Path, count: int) -> tuple[float, int]:
    """(µs per evaluation, allocations per evaluation): the best of ``count`` runs."""
    best: tuple[float, int] | None = None
    for _ in range(count):
        out = subprocess.run(
            [opa, "bench", "-b", str(bundle), "-i", str(input_file), "--format", "json",
             "--optimize-store-for-read-speed", "data.pdp.decision"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        doc = json.loads(out)  # Go's testing.BenchmarkResult: N runs took T ns
        us = doc["T"] / doc["N"] / 1000
        allocs = round(doc["MemAllocs"] / doc["N"])
        if best is None or us < best[0]:
            best = (us, allocs)
    assert best is not None
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=3, help="opa bench runs per example (best)")
    ap.add_argument("--only-allow", action="store_true", help="just the allow example")
    ap.add_argument("--policies", type=Path, default=ROOT / "policies")
    ap.add_argument("--against", type=Path, help="a second policy directory, measured alternately")
    args = ap.parse_args()
    if args.against:
        print(json.dumps(compare(args.against, args.policies, args.count)))
        return
    print(json.dumps(measure(args.policies, args.count, only_allow=args.only_allow)))


def compare(before: Path, after: Path, count: int) -> dict[str, Any]:
    """Both policy directories on every example, alternating A, B, B, A, ... per run; the
    best of ``count`` runs of each. Returns {"before": summary, "after": summary}."""
    opa = find_opa()
    with tempfile.TemporaryDirectory(prefix="pdp-policy-cost-") as tmp:
        work = Path(tmp)
        bundles = {
            "before": build_bundle(opa, before, work / "before.tar.gz").path,
            "after": build_bundle(opa, after, work / "after.tar.gz").path,
        }
        per: dict[str, dict[str, dict[str, float]]] = {"before": {}, "after": {}}
        for path in sorted(EXAMPLES.glob("*.json")):
            input_file = work / "input.json"
            input_file.write_text(json.dumps(example_input(path, work / "state")))
            best: dict[str, tuple[float, int]] = {}
            for run in range(count):
                order = ["before", "after"] if run % 2 == 0 else ["after", "before"]
                for side in order:
                    us, allocs = opa_bench(opa, bundles[side], input_file, 1)
                    if side not in best or us < best[side][0]:
                        best[side] = (us, allocs)
            for side, (us, allocs) in best.items():
                per[side][path.stem] = {"us": round(us, 1), "allocs": allocs}
            b, a = best["before"], best["after"]
            print(
                f"  {b[0]:8.1f} -> {a[0]:8.1f} µs/op {b[1]:6d} -> {a[1]:6d} allocs  {path.stem}",
                file=sys.stderr,
            )
    return {side: summary(figures) for side, figures in per.items()}


def summary(per: dict[str, dict[str, float]]) -> dict[str, Any]:
    """opa_eval_us (the allow example), the slowest example and every example's figures."""
    worst = max(per, key=lambda k: per[k]["us"])
    return {
        "opa_eval_us": per[Path(ALLOW_EXAMPLE).stem]["us"],
        "opa_eval_us_worst": per[worst]["us"],
        "worst_example": worst,
        "examples": per,
    }


def measure(policies: Path, count: int, *, only_allow: bool = False) -> dict[str, Any]:
    opa = find_opa()
    with tempfile.TemporaryDirectory(prefix="pdp-policy-cost-") as tmp:
        work = Path(tmp)
        bundle = build_bundle(opa, policies, work / "bundle.tar.gz").path
        paths = sorted(EXAMPLES.glob("*.json"))
        if only_allow:
            paths = [p for p in paths if p.name == ALLOW_EXAMPLE]
        per: dict[str, dict[str, float]] = {}
        for path in paths:
            input_file = work / "input.json"
            input_file.write_text(json.dumps(example_input(path, work / "state")))
            us, allocs = opa_bench(opa, bundle, input_file, count)
            per[path.stem] = {"us": round(us, 1), "allocs": allocs}
            print(f"  {us:8.1f} µs/op {allocs:6d} allocs  {path.stem}", file=sys.stderr)
    return summary(per)


if __name__ == "__main__":
    main()
