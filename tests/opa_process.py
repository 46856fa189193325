"""A real OPA server process for tests: start on a Unix socket, wait, pause, kill, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from pdp.fuzz.engine import UnixHTTPConnection
from tests import process_helpers


def unix_get(path: Path, url: str, timeout: float = 1.0) -> int:
    """GET ``url`` over the Unix socket at ``path``; return the status code."""
    conn = UnixHTTPConnection(path, timeout)
    try:
        conn.request("GET", url)
        return conn.getresponse().status
    finally:
        conn.close()


class OPAProcess:
    """``opa run --server`` on a Unix socket, serving a bundle or a config."""

    def __init__(self, opa: str, socket_path: Path, *args: str) -> None:
        self.opa = opa
        self.socket = socket_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, *, wait_bundles: bool = True, timeout: float = 20.0) -> OPAProcess:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            self.socket.unlink()
        self.proc = subprocess.Popen(
            [
                self.opa,
                "run",
                "--server",
                "--addr",
                f"unix://{self.socket}",
                "--log-level",
                "error",
                "--skip-version-check",
                *self.args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        url = "/health?bundles" if wait_bundles else "/health"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"opa exited with {self.proc.returncode}")
            try:
                if unix_get(self.socket, url) == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("opa did not become healthy")
            time.sleep(0.02)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)  # a paused OPA would not see SIGTERM
        process_helpers.stop(self.proc)
