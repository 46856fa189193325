#!/usr/bin/env python3
"""Micro-benchmark of the audit trail: what one decision record costs, in-process.

1. CPU per record to chain it (canonical JSON + SHA-256), on records of the committed
   corpus (tests/corpus/audit), which are real decisions of the real service;
2. the one writer under concurrent callers, per fsync mode: records/s, commits, mean batch
   size and the wall time a caller waits for durability (p50/p99). With ``--busy-us`` each
   caller first burns that much CPU on the event loop, as a decision does: the writer's
   thread then has to win the GIL from a busy loop.

Runs in a temporary directory on the same file system as the system temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pdp.audit.chain import seal  # noqa: E402
from pdp.audit.log import AuditLog  # noqa: E402
from pdp.audit.segment import iter_records  # noqa: E402
from pdp.audit.writer import AuditWriter  # noqa: E402

CHAIN_FIELDS = ("seq", "prev", "hash")


def corpus() -> list[dict[str, Any]]:
    recs = [r for r in iter_records(ROOT / "tests" / "corpus" / "audit") if r["type"] == "decision"]
    return [{k: v for k, v in r.items() if k not in CHAIN_FIELDS} for r in recs]


def chain_cost(records: list[dict[str, Any]], rounds: int = 7) -> tuple[float, float]:
    """(best µs CPU per record, mean line bytes)."""
    best = float("inf")
    size = 0
    for _ in range(rounds):
        prev = "0" * 64
        t0 = time.process_time()
        for i in range(2000):
            line, prev = seal(records[i % len(records)], i + 1, prev)
            size += len(line)
        best = min(best, (time.process_time() - t0) / 2000 * 1e6)
    return best, size / (2000 * rounds)


def burn(us: float) -> None:
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


async def writer_run(
    directory: Path,
    mode: str,
    records: list[dict[str, Any]],
    callers: int,
    seconds: float,
    busy_us: float = 0.0,
    io_ms: float = 0.0,
) -> dict[str, Any]:
    commits: list[int] = []
    fsync = "off" if mode == "none" else mode
    writer = AuditWriter(AuditLog(directory, fsync=fsync), on_commit=lambda n, _: commits.append(n))
    await writer.start()
    waits: list[float] = []
    stop = time.monotonic() + seconds

    async def caller(k: int) -> None:
        i = k
        while time.monotonic() < stop:
            if busy_us:
                burn(busy_us)
                await asyncio.sleep(io_ms / 1000)
            t0 = time.perf_counter()
            if mode != "none":
                await writer.append(records[i % len(records)])
            waits.append(time.perf_counter() - t0)
            i += callers

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller(k) for k in range(callers)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    await writer.close()
    waits.sort()
    return {
        "mode": mode,
        "records_per_s": round(len(waits) / wall),
        "cpu_us_per_record": round(cpu / len(waits) * 1e6, 1),
        "commits": len(commits),
        "mean_batch": round(statistics.mean(commits), 1) if commits else 0,
        "wait_p50_ms": round(waits[len(waits) // 2] * 1000, 3),
        "wait_p99_ms": round(waits[int(len(waits) * 0.99)] * 1000, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--callers", type=int, default=16, help="concurrent appenders")
    ap.add_argument("--seconds", type=float, default=3.0, help="per fsync mode")
    ap.add_argument("--busy-us", type=float, default=0.0, help="loop CPU per record")
    ap.add_argument("--io-ms", type=float, default=0.0, help="then a wait (an OPA call)")
    ap.add_argument(
        "--modes", default="off,batch,always", help="fsync modes; none: no trail (baseline)"
    )
    args = ap.parse_args()
    records = corpus()
    us, size = chain_cost(records)
    print(f"chain one record (canonical JSON + SHA-256): {us:.1f} µs CPU, {size:.0f} bytes")
    results = []
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory(prefix="pdp-audit-bench-") as tmp:
            r = asyncio.run(
                writer_run(
                    Path(tmp) / "a",
                    mode,
                    records,
                    args.callers,
                    args.seconds,
                    args.busy_us,
                    args.io_ms,
                )
            )
        results.append(r)
        print(
            f"fsync={mode:6} {r['records_per_s']:7d} records/s  {r['cpu_us_per_record']:6.1f} µs "
            f"CPU/record  {r['commits']:6d} commits (mean batch {r['mean_batch']})  "
            f"wait p50 {r['wait_p50_ms']} ms p99 {r['wait_p99_ms']} ms"
        )
    print(json.dumps({"chain_us": round(us, 1), "record_bytes": round(size), "writer": results}))


if __name__ == "__main__":
    main()
