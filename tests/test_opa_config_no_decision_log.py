"""The shipped opa-config.yaml must not make OPA upload decisions anywhere.

With a ``decision_logs`` block and no service named, OPA sends every decision (its input
included) to the only service, the bundle registry, at ``/logs``. Here a real OPA runs
with the repository's file and a loopback HTTP server as the registry that records every
request; after a decision and OPA's graceful shutdown (which flushes pending decision
logs) the server must have seen nothing under ``/logs``.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .bundle_keys import key_pair
from .conftest import ROOT, free_port, wait_until

pytestmark = pytest.mark.opa


class _Recorder(http.server.BaseHTTPRequestHandler):
    paths: list[str] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        type(self).paths.append(self.path)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_HEAD = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    paths: list[str] = []
    handler = type("Handler", (_Recorder,), {"paths": paths})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", paths
    finally:
        server.shutdown()
        server.server_close()


def run_opa(opa_bin: str, tmp_path: Path, host: str, paths: list[str], config: Path) -> list[str]:
    _, pub = key_pair(tmp_path / "keys", "bundle-signing")
    port = free_port()
    env = {**os.environ, "BUNDLE_REGISTRY_URL": f"http://{host}",
           "BUNDLE_RESOURCE": f"{host}/policies/pdp:prod"}  # fmt: skip
    log = (tmp_path / "opa.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603
        [opa_bin, "run", "--server", "--addr", f"127.0.0.1:{port}",
         "--config-file", str(config),
         "--set-file", f"keys.pdp-bundle-signing.key={pub}",
         "--set", f"persistence_directory={tmp_path / 'opa'}"],
        env=env, stdout=log, stderr=log,
    )  # fmt: skip
    try:

        def decided() -> bool:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/data/pdp/decision",
                data=json.dumps({"input": {"secret": "must-not-leave"}}).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
                    return bool(response.status == 200)
            except OSError:
                return False

        assert wait_until(decided, timeout=30), "OPA did not answer"
        for _ in range(3):
            decided()
        time.sleep(2.5)  # more than a (would-be) reporting interval
    finally:
        proc.terminate()  # graceful: OPA flushes buffered decision logs on shutdown
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return list(paths)


def test_shipped_config_sends_no_decision_logs(
    opa_bin: str, tmp_path: Path, recorder: tuple[str, list[str]]
) -> None:
    host, paths = recorder
    seen = run_opa(opa_bin, tmp_path, host, paths, ROOT / "opa-config.yaml")
    assert any("/v2/" in p for p in seen), f"OPA never contacted the registry: {seen}"
    assert not [p for p in seen if p.startswith("/logs")], seen


def test_config_with_decision_logs_would_leak(
    opa_bin: str, tmp_path: Path, recorder: tuple[str, list[str]]
) -> None:
    """The check above can fail: a ``decision_logs`` block added back makes OPA upload."""
    host, paths = recorder
    config = tmp_path / "leaky.yaml"
    config.write_text(
        (ROOT / "opa-config.yaml").read_text()
        + "decision_logs:\n  console: false\n"
        + "  reporting: {min_delay_seconds: 1, max_delay_seconds: 1}\n"
    )
    seen = run_opa(opa_bin, tmp_path, host, paths, config)
    assert [p for p in seen if p.startswith("/logs")], seen
