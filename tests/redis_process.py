"""A real redis-server for the store tests: loopback, a free port, no persistence.

CI installs the Debian package (`.ci/run`); without the binary the tests fail in CI and
are skipped, loudly, on a developer machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import process_helpers
from .conftest import free_port


class RedisProcess:
    """One redis-server child process."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisProcess:
        cmd = [
            self.binary, "--bind", "127.0.0.1", "--port", str(self.port),
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            "--protected-mode", "yes", "--loglevel", "warning",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited {self.proc.returncode}: {err}")
            if self.ping():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server not answering on port {self.port}")
            time.sleep(0.02)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            assert sock.recv(16).startswith(b"+OK")

    def stop(self) -> None:
        process_helpers.stop(self.proc)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        message = (
            "redis-server is not installed: the Redis store tests need it "
            "(apt-get install redis-server; .ci/run installs it)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One redis-server for the session; tests flush it with ``redis_url``."""
    server = RedisProcess(redis_binary(), tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """The session's redis-server, emptied for this test."""
    redis_server.flush()
    return redis_server.url
