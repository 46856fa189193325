#!/usr/bin/env python3
"""The decision path's Python pieces, in-process: CPU µs per call, for one or more trees.

``python bench/hotpath.py [TREE ...] [--rounds 3]`` runs each piece the levers of
bench/README.md ("Python-side levers, second pass") touched on run.py's request — the
strict JSON read of the body, the body read itself (a body already received), the URL's
canonical reading, the RFC 3339 timestamp, the task/session serialisation of a decision
that names neither, the decision log line, the app's middleware layers and routing around a
constant handler — in a fresh interpreter per tree (``TREE`` is a
source tree, e.g. ``git archive <rev> | tar -x -C TREE``; default: this one), the trees
interleaved for ``--rounds`` rounds, and prints per tree and piece the best µs per call
(``time.process_time``: CPU, not wall time, so other processes' load matters less). These
are the steady figures behind each lever; `bench/ab.py` gives the whole PDP's CPU per
decision, which a shared machine blurs by ±10 % per slice. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs inside the tree's interpreter: sys.path[0] is the tree.
_PROBE = r"""
import asyncio, io, json, logging, sys, time
from pathlib import Path

tree = Path(sys.argv[1])
sys.path.insert(0, str(tree))
from aiohttp.streams import StreamReader

from pdp import httpio, jsonparse, timefmt, urls
from pdp.audit.record import _log_line, build_record
from pdp.identity import Identity
from pdp.normalize import normalize
from pdp.sessions import SessionHistory

example = json.loads((tree / "examples/requests/allow-support-bot-jira-search.json").read_text())
request = dict(example["request"])
request["agent"] = {**request.get("agent", {}), "token": "eyJ" + "A" * 600}
request["task"] = {"purpose": request.get("task", {}).get("purpose", "triage")}
body = json.dumps(request).encode()
identity = Identity(True, "spiffe://acme.example/agents/support-bot", "acme.example",
                    ("agents", "support-bot"), 1_900_000_000, "j" * 22, "k" * 43)
input_doc = normalize(request, identity, 1_796_052_388_123_456_789)
record = build_record(decision_id="d" * 36, input_doc=input_doc, request=request,
                      response={"decision_id": "d" * 36, "allow": True, "reasons": [],
                                "obligations": {"credential": {"ttl_seconds": 120}}},
                      latency_s=0.001, kid=None)
logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s",
                    stream=io.StringIO())

def best(fn, n=20000, reps=7):
    out = None
    for _ in range(reps):
        t = time.process_time()
        for _ in range(n):
            fn()
        v = (time.process_time() - t) / n * 1e6
        out = v if out is None else min(out, v)
    return out

got = {
    "jsonparse.loads": best(lambda: jsonparse.loads(body)),
    "canonical_url": best(lambda: urls.canonical_url(request["destination"]["url"])),
    "rfc3339": best(lambda: timefmt.rfc3339(1_796_052_388_123_456_789)),
    "decision log line": best(lambda: _log_line(record)),
}

class _Proto:
    _reading_paused = False
    def pause_reading(self, **kw): pass
    def resume_reading(self, **kw): pass

class _Request:
    def __init__(self, content):
        self.content, self.content_length = content, len(body)

async def aio():
    loop = asyncio.get_running_loop()
    # The app's middleware layers and routing around a handler that returns a constant.
    import tempfile
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request
    from pdp.app import create_app
    from pdp.config import Settings
    app = create_app(Settings.from_env({}, state_dir=Path(tempfile.mkdtemp())))
    constant = web.Response(body=b"{}")
    async def bench_handler(request):
        return constant
    app.router.add_post("/v1/bench", bench_handler)
    app.freeze()
    mocked = make_mocked_request("POST", "/v1/bench", app=app)
    async def dispatch():
        await app._handle(mocked)
    history = SessionHistory.__new__(SessionHistory)
    history._locks = {}
    async def serialized():
        async with history.serialized(request):
            pass
    async def read():
        content = StreamReader(_Proto(), 2**16, loop=loop)
        content.feed_data(body)
        content.feed_eof()
        await httpio._read(_Request(content), 1 << 20, 10.0)
    async def empty_reader():
        StreamReader(_Proto(), 2**16, loop=loop).feed_eof()
    for name, coro in (("app middlewares + routing", dispatch),
                       ("sessions.serialized (no task)", serialized),
                       ("httpio._read (body already in)", read),
                       ("(harness: a StreamReader)", empty_reader)):
        out = None
        for _ in range(7):
            t = time.process_time()
            for _ in range(20000):
                await coro()
            v = (time.process_time() - t) / 20000 * 1e6
            out = v if out is None else min(out, v)
        got[name] = out
    got["httpio._read (body already in)"] -= got.pop("(harness: a StreamReader)")

try:
    import uvloop
    uvloop.run(aio())
except ImportError:
    asyncio.run(aio())
print(json.dumps({k: round(v, 2) for k, v in got.items()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="*", type=Path, default=[ROOT])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    best: dict[str, dict[str, float]] = {}
    for r in range(args.rounds):
        for tree in args.trees:
            out = subprocess.run(
                [sys.executable, "-c", _PROBE, str(tree.resolve())],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            got = json.loads(out.strip().splitlines()[-1])
            print(f"round {r + 1} {tree}: {got}", flush=True)
            mine = best.setdefault(str(tree), {})
            for key, value in got.items():
                mine[key] = min(value, mine.get(key, value))
    print(json.dumps({"us_per_call_best": best}))


if __name__ == "__main__":
    main()
