"""Shared fixtures: a real OPA with the repository's bundle, dev trust keys, app clients."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pdp.app import create_app
from pdp.bundle import BuiltBundle, build_bundle
from pdp.config import Settings
from pdp.devtrust import ensure_dev_trust, mint_svid
from pdp.tools import find_opa

from . import process_helpers
from .opa_process import OPAProcess

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
EXAMPLES = sorted((ROOT / "examples" / "requests").glob("*.json"))
DEV_DOMAINS = ("acme.example", "globex.example")

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def load_example(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


@pytest.fixture(scope="session")
def opa_bin() -> str:
    """The real OPA binary (installed by `make tools`); tests fail loudly without it."""
    return find_opa()


@pytest.fixture(scope="session")
def policy_bundle(opa_bin: str, tmp_path_factory: pytest.TempPathFactory) -> BuiltBundle:
    out = tmp_path_factory.mktemp("bundle") / "bundle.tar.gz"
    return build_bundle(opa_bin, POLICIES, out)


@pytest.fixture(scope="session")
def shared_opa(
    opa_bin: str, policy_bundle: BuiltBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OPAProcess]:
    """One OPA for the session, for tests that do not stop or break it."""
    sock = tmp_path_factory.mktemp("opa") / "opa.sock"
    opa = OPAProcess(opa_bin, sock, "--bundle", str(policy_bundle.path)).start()
    yield opa
    opa.stop()


@pytest.fixture
def own_opa(opa_bin: str, policy_bundle: BuiltBundle, tmp_path: Path) -> Iterator[OPAProcess]:
    """An OPA of this test's own, free to be killed or paused."""
    opa = OPAProcess(opa_bin, tmp_path / "opa.sock", "--bundle", str(policy_bundle.path)).start()
    yield opa
    opa.stop()


@pytest.fixture(scope="session")
def dev_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir with dev trust keys for the example trust domains."""
    state = tmp_path_factory.mktemp("state")
    ensure_dev_trust(state, DEV_DOMAINS)
    return state


@pytest.fixture
def mint(dev_state: Path) -> Callable[..., str]:
    """Mint a dev JWT-SVID: ``mint(spiffe_id, audience=..., ttl_seconds=...)``."""

    def _mint(spiffe_id: str, **kw: Any) -> str:
        return mint_svid(dev_state, spiffe_id, **kw)

    return _mint


def remote_settings(state: Path, opa_url: str, **overrides: Any) -> Settings:
    """Settings for an app that uses an OPA started by the test."""
    values: dict[str, Any] = {
        "state_dir": state,
        "opa_url": opa_url,
        "dev_trust_domains": DEV_DOMAINS,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def make_client(
    aiohttp_client: Any, dev_state: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ClientFactory]:
    """Start the app against a given OPA URL (plus settings overrides); return its client.

    Each app gets a store of its own (unless ``store_url`` is given), so the task and
    session histories one test leaves (pdp.sessions) never decide another's calls."""

    async def _make(opa_url: str, **overrides: Any) -> TestClient[Any, Any]:
        if "store_url" not in overrides:
            store = tmp_path_factory.mktemp("store") / "pdp.sqlite3"
            overrides["store_url"] = f"sqlite://{store}"
        client: TestClient[Any, Any] = await aiohttp_client(
            create_app(remote_settings(dev_state, opa_url, **overrides))
        )
        return client

    yield _make


@pytest.fixture
async def client(make_client: ClientFactory, shared_opa: OPAProcess) -> TestClient[Any, Any]:
    """The app, on the session's real OPA."""
    return await make_client(shared_opa.url)


# --------------------------------------------------------------------------- pdpctl serve
# Added for tests/test_sidecar.py and tests/test_cli.py: the service as a user runs it,
# `python -m pdpctl serve` in a subprocess with the embedded OPA as its child.


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, ppid) of a process from /proc, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    state, ppid = raw[raw.rindex(")") + 2 :].split()[:2]
    return comm, state, int(ppid)


def process_running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie.

    An orphan whose parent was SIGKILLed is reparented to PID 1 (or a subreaper), which in
    a container may never reap it: a zombie has stopped running, so it counts as gone.
    """
    stat = _proc_stat(pid)
    return stat is not None and stat[1] != "Z"


def child_pids(pid: int, comm: str | None = None) -> list[int]:
    """Running children of ``pid`` (optionally only those whose command name is ``comm``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is None or stat[2] != pid or stat[1] == "Z":
            continue
        if comm is None or stat[0] == comm:
            found.append(int(entry.name))
    return found


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(interval)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    """GET ``url``; return the status and the JSON body (also for 4xx/5xx answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


class ServeProcess:
    """`python -m pdpctl serve` on a free port with its own state dir (embedded OPA)."""

    def __init__(self, state_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        #: Extra environment for the service (and the OPA it starts).
        self.env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = state_dir.parent / f"{state_dir.name}-serve.log"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0, *, ready: bool = True) -> ServeProcess:
        """Start and wait (bounded) until /readyz answers 200 (``ready=False``: until the
        service answers at all)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PDP_")} | self.env
        cmd = [
            sys.executable, "-m", "pdpctl", "--policies", str(POLICIES), "serve",
            "--port", str(self.port), "--state-dir", str(self.state_dir), *self.args,
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pdpctl serve exited {self.proc.returncode}: {self.output()}")
            try:
                if http_get(self.url + "/readyz", timeout=1.0)[0] == 200 or not ready:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"pdpctl serve not ready in {timeout:g} s: {self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def opa_pid(self) -> int:
        """The pid of the one OPA child of the service."""
        pids = child_pids(self.pid, "opa")
        assert len(pids) == 1, f"expected one OPA child, found {pids}"
        return pids[0]

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, and wait (bounded) for the exit code."""
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        process_helpers.kill(self.proc)


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start `pdpctl serve` subprocesses (``serve_process(*extra_args)``); killed at the end."""
    started: list[ServeProcess] = []

    def _start(*args: str) -> ServeProcess:
        serve = ServeProcess(tmp_path / f"state{len(started)}", *args)
        started.append(serve)
        return serve.start()

    yield _start
    for serve in started:
        serve.kill()
