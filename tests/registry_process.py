"""A real OCI registry for the bundle tests: CNCF distribution's ``registry`` (built into
.tools/bin by scripts/install-tools.sh), on 127.0.0.1 only, a free port, filesystem
storage in a temporary directory, no auth, no cache (so tampering with its storage shows).

Without the binary the tests fail in CI and are skipped, loudly, on a developer machine.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdp.tools import ToolNotFoundError, find_tool

from .conftest import free_port

_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
"""


class RegistryProcess:
    """One ``registry serve`` child process."""

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.root = workdir / "storage"
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> RegistryProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yml"
        config.write_text(
            _CONFIG.format(root=self.root, port=self.port, secret=secrets.token_hex(16))
        )
        self.proc = subprocess.Popen(
            [self.binary, "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"registry exited {self.proc.returncode}: {err[-2000:]}")
            if self.ready():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"registry not answering on {self.host}")
            time.sleep(0.05)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def blob_path(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (to tamper with what it serves)."""
        algo, hexdigest = digest.split(":", 1)
        return self.root / "docker/registry/v2/blobs" / algo / hexdigest[:2] / hexdigest / "data"


def registry_binary() -> str:
    try:
        return find_tool("registry", os.environ.get("PDP_REGISTRY_BINARY") or None)
    except ToolNotFoundError:
        message = (
            "the OCI registry binary is missing: the bundle-publishing tests need it "
            "(make tools / scripts/install-tools.sh builds it into .tools/bin)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryProcess]:
    """A fresh, empty registry for one test."""
    server = RegistryProcess(registry_binary(), tmp_path / "registry").start()
    yield server
    server.stop()
