#!/usr/bin/env python3
"""A/B benchmark of the audit trail: the PDP with the trail off vs on, interleaved.

Same machine, policy, bundle and request as ``run.py``, but the two PDPs (and raw OPA) run
side by side and are measured in alternating short wrk slices — raw OPA, audit off, audit
on, in a rotating order, ``--rounds`` times — so that load from other processes hits all
three alike. Reports the median req/s of each, the throughput ratio to raw OPA of each, and
the per-round ratio audit-on / audit-off with its median: the figure the <= 15 % budget
is about. Loopback only; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import free_port, running, wait_http  # noqa: E402
from bench.run import (  # noqa: E402
    WRK_LUA,
    post,
    raw_opa_input,
    run_wrk,
    start_pdp,
    start_raw_opa,
)
from pdp.bundle import build_bundle  # noqa: E402
from pdp.devtrust import ensure_dev_trust, mint_svid  # noqa: E402
from pdp.tools import find_opa  # noqa: E402

DEFAULT_EXAMPLE = ROOT / "examples" / "requests" / "allow-support-bot-jira-search.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--slice", type=int, default=3, help="seconds of wrk per target per round")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--fsync", choices=["batch", "always", "off"], default="batch")
    ap.add_argument("--opa-timeout-ms", type=int, default=2000, help="same for both PDPs")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("needs wrk on PATH (apt-get install wrk)")
    opa = find_opa()
    work = Path(tempfile.mkdtemp(prefix="pdp-audit-ab-"))
    with running(work) as procs:
        bundle = build_bundle(opa, ROOT / "policies", work / "bundle.tar.gz")
        example = json.loads(DEFAULT_EXAMPLE.read_text())
        domain = example["spiffe_id"].split("/")[2]
        state = work / "keys"
        bundles = ensure_dev_trust(state, [domain])
        token = mint_svid(state, example["spiffe_id"], ttl_seconds=3600)
        request = {**example["request"]}
        request["agent"] = {**request.get("agent", {}), "token": token}
        (work / "pdp.json").write_bytes(json.dumps(request).encode())
        (work / "opa.json").write_bytes(raw_opa_input(request, token, bundles))
        lua = work / "post.lua"
        lua.write_text(WRK_LUA)

        opa_port = free_port()
        procs.append(start_raw_opa(opa, bundle.path, opa_port))
        targets = {"raw": f"http://127.0.0.1:{opa_port}/v1/data/pdp/decision"}
        for name, audit in (("off", None), ("on", args.fsync)):
            port = free_port()
            pdp_state = work / f"state-{name}"
            shutil.copytree(state, pdp_state)  # the same dev keys: the token verifies
            env = {
                "PDP_DEV_TRUST_DOMAINS": domain,
                "PDP_OPA_TIMEOUT_MS": str(args.opa_timeout_ms),
                "PDP_AUDIT_ENABLED": "false" if audit is None else "true",
                "PDP_AUDIT_FSYNC": audit or "batch",
            }
            procs.append(start_pdp(port, pdp_state, env, work / f"pdp-{name}.log"))
            targets[name] = f"http://127.0.0.1:{port}/v1/decisions"
            wait_http(f"http://127.0.0.1:{port}/readyz")
        wait_http(f"http://127.0.0.1:{opa_port}/health?bundles")
        for name in ("off", "on"):
            assert post(targets[name], (work / "pdp.json").read_bytes())["allow"] is True
        bodies = {"raw": work / "opa.json", "off": work / "pdp.json", "on": work / "pdp.json"}

        rps: dict[str, list[float]] = {k: [] for k in targets}
        order = ["raw", "off", "on"]
        for r in range(args.rounds):
            loads = os.getloadavg()[0]
            for name in order[r % 3 :] + order[: r % 3]:
                rps[name].append(
                    run_wrk(targets[name], bodies[name], args.slice, args.connections, lua)[0]
                )
            print(
                f"round {r + 1}: raw {rps['raw'][-1]:7.0f}  off {rps['off'][-1]:6.0f}  "
                f"on {rps['on'][-1]:6.0f}  on/off {rps['on'][-1] / rps['off'][-1]:.3f}  "
                f"(load {loads:.2f})"
            )
        per_round = [on / off for on, off in zip(rps["on"], rps["off"], strict=True)]
        med = {k: statistics.median(v) for k, v in rps.items()}
        result = {
            "rounds": args.rounds,
            "slice_s": args.slice,
            "connections": args.connections,
            "fsync": args.fsync,
            "median_rps": {k: round(v, 1) for k, v in med.items()},
            "ratio_off": round(statistics.median(o / r for o, r in zip(rps["off"], rps["raw"],
                                                                          strict=True)), 3),
            "ratio_on": round(statistics.median(o / r for o, r in zip(rps["on"], rps["raw"],
                                                                         strict=True)), 3),
            "on_over_off_median": round(statistics.median(per_round), 3),
            "on_over_off_min_max": [round(min(per_round), 3), round(max(per_round), 3)],
            "cores": os.cpu_count(),
        }  # fmt: skip
        print(json.dumps(result))


if __name__ == "__main__":
    main()
