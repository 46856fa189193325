"""SIGKILL the service while decisions are in flight, repeatedly: nothing a client was told
is lost, and the trail verifies after each restart.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pdpctl.main import cli

from pdp.audit.segment import iter_records
from pdp.devtrust import mint_svid

from .conftest import EXAMPLES, ServeProcess, load_example

pytestmark = [
    pytest.mark.opa,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG"),
]

ROUNDS = 3
LOAD_SECONDS = 0.8
CLIENTS = 8
EXAMPLE_PATHS = [p for p in EXAMPLES if p.name.startswith(("allow-support", "deny-tenant"))]


def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url + "/v1/decisions", body, {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def requests_for(state: Path) -> list[bytes]:
    bodies = []
    for path in EXAMPLE_PATHS:
        example = load_example(path)
        request = copy.deepcopy(example["request"])
        request["agent"]["token"] = mint_svid(state, example["spiffe_id"], ttl_seconds=600)
        bodies.append(json.dumps(request).encode())
    return bodies


def load_until_killed(serve: ServeProcess, bodies: list[bytes]) -> list[str]:
    """Send decisions from several threads; SIGKILL the service mid-flight; return the ids
    of every decision a client received an answer for (200 and 503 answers carry one)."""
    received: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        i = n
        while not stop.is_set():
            try:
                _, body = post(serve.url, bodies[i % len(bodies)])
            except (OSError, ValueError):
                continue  # the service is gone: refused, reset or cut mid-answer
            i += 1
            if "decision_id" in body:
                with lock:
                    received.append(body["decision_id"])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(LOAD_SECONDS)
    os.kill(serve.pid, signal.SIGKILL)
    assert serve.proc is not None
    serve.proc.wait(10)
    time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(10)
    return received


def test_sigkill_under_load_loses_no_answered_decision_and_the_trail_verifies(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    audit = state / "audit"
    answered: list[str] = []
    bodies: list[bytes] = []
    for _ in range(ROUNDS):
        serve = ServeProcess(state).start()
        bodies = bodies or requests_for(state)
        got = load_until_killed(serve, bodies)
        assert len(got) > 20, "the load did not reach the service"
        answered += got

        serve = ServeProcess(state).start()  # restart: recover the tail, continue the chain
        recorded = {r["decision_id"] for r in iter_records(audit) if r["type"] == "decision"}
        assert set(got) <= recorded, f"lost {len(set(got) - recorded)} answered decision(s)"
        result = CliRunner().invoke(cli, ["audit", "verify", "--dir", str(audit)])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("ok: ")
        assert serve.terminate() == 0

    starts = [r for r in iter_records(audit) if r["type"] == "start"]
    shutdowns = [s["previous"]["shutdown"] if s["previous"] else None for s in starts]
    assert shutdowns == [None] + ["unclean", "clean"] * (ROUNDS - 1) + ["unclean"]
    assert len(set(answered)) == len(answered)
    result = CliRunner().invoke(cli, ["audit", "verify", "--dir", str(audit)])
    assert result.exit_code == 0, result.output
