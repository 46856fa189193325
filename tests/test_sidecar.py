"""The embedded default: the app builds the bundle and runs a real OPA as its child process."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from pdp.app import create_app
from pdp.bundle import BundleError, content_revision
from pdp.config import Settings
from pdp.devtrust import mint_svid
from pdp.sidecar import OPASidecar, SidecarError, pid_alive, socket_path
from pdp.state import DECISION_CACHE, SIDECAR
from pdp.tools import ToolNotFoundError

from .conftest import (
    DEV_DOMAINS,
    EXAMPLES,
    POLICIES,
    ServeProcess,
    load_example,
    process_running,
    wait_until,
)

pytestmark = pytest.mark.opa

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux-only"
)

ALLOW_EXAMPLE = next(p for p in EXAMPLES if p.name == "allow-support-bot-jira-search.json")


def embedded_settings(state: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "state_dir": state,
        "policies_dir": POLICIES,
        "dev_trust_domains": DEV_DOMAINS,
    }
    values.update(overrides)
    return Settings(**values)


def example_request(state: Path, path: Path = ALLOW_EXAMPLE) -> dict[str, Any]:
    """The example's request with a dev token minted from ``state``'s keys."""
    doc = load_example(path)
    request: dict[str, Any] = doc["request"]
    token = mint_svid(state, doc["spiffe_id"])
    return {**request, "agent": {**request["agent"], "token": token}}


async def start(aiohttp_client: Any, settings: Settings) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return client


async def poll_ready(client: TestClient[Any, Any], timeout: float = 10.0) -> bool:
    """Poll /readyz (bounded) until it answers 200."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        async with client.get("/readyz") as resp:
            if resp.status == 200:
                return True
        await asyncio.sleep(0.05)
    return False


def fake_opa(tmp_path: Path, opa_bin: str, run_script: str) -> str:
    """An `opa` that builds bundles with the real one (`opa build`, and `opa eval` for the
    derived entitlement index) but runs ``run_script`` for `opa run`."""
    script = tmp_path / "fake-opa"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$1" in build|eval) exec {opa_bin} "$@";; esac\n'
        f"echo $$ > {tmp_path / 'fake-opa.pid'}\n"
        f"{run_script}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


# --------------------------------------------------------------------------- start and decide


async def test_startup_builds_bundle_and_serves_decisions_from_child_opa(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, embedded_settings(tmp_path))
    sidecar = client.app[SIDECAR]
    assert sidecar is not None and sidecar.pid is not None
    assert pid_alive(sidecar.pid)
    assert (tmp_path / "bundles" / "policies.tar.gz").is_file()
    assert sidecar.socket == socket_path(tmp_path)
    assert stat.S_ISSOCK(sidecar.socket.stat().st_mode)
    assert stat.S_IMODE(sidecar.socket.stat().st_mode) == 0o600

    async with client.get("/readyz") as resp:
        assert resp.status == 200
        ready = await resp.json()
    revision = content_revision(POLICIES)
    assert ready == {"ready": True, "detail": "ok", "policy": {"revision": revision}}

    async with client.post("/v1/decisions", json=example_request(tmp_path)) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["allow"] is True
    assert body["reasons"] == []
    assert body["policy"] == {"revision": revision}


async def test_opa_killed_answers_503_deny_then_sidecar_restarts_it(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, embedded_settings(tmp_path))
    sidecar = client.app[SIDECAR]
    assert sidecar is not None and sidecar.pid is not None
    request = example_request(tmp_path)
    async with client.post("/v1/decisions", json=request) as resp:
        assert (resp.status, (await resp.json())["allow"]) == (200, True)
    old_pid = sidecar.pid

    os.kill(old_pid, signal.SIGKILL)
    # The decision cache stops serving as soon as the sidecar sees OPA exit (before that
    # instant, a repeat of a cacheable request would still be a hit).
    cache = client.app[DECISION_CACHE]
    assert cache is not None
    deadline = asyncio.get_running_loop().time() + 2.0
    while cache.serving and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)
    assert not cache.serving

    # The sidecar waits >= 0.1 s before restarting: these land in the outage.
    async with client.post("/v1/decisions", json=request) as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["allow"] is False
    assert body["error"]["code"] == "policy_engine_unavailable"
    assert "decision_id" in body
    async with client.get("/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["ready"] is False

    assert await poll_ready(client, timeout=10.0), "OPA was not restarted within 10 s"
    # /readyz can see the new OPA a poll before the sidecar does, which then counts it.
    deadline = asyncio.get_running_loop().time() + 2.0
    while sidecar.restarts == 0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert sidecar.restarts == 1
    assert sidecar.pid is not None and sidecar.pid != old_pid
    assert not pid_alive(old_pid)
    async with client.post("/v1/decisions", json=request) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["allow"] is True
    assert body["policy"] == {"revision": content_revision(POLICIES)}
    async with client.get("/metrics") as resp:
        assert "pdp_opa_sidecar_restarts 1.0" in await resp.text()


async def test_closing_the_app_stops_opa_and_removes_its_socket(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, embedded_settings(tmp_path))
    sidecar = client.app[SIDECAR]
    assert sidecar is not None and sidecar.pid is not None
    pid, sock = sidecar.pid, sidecar.socket
    assert sock.exists()

    await client.close()

    assert not pid_alive(pid)
    assert not sock.exists()
    assert sidecar.pid is None


async def test_a_state_dir_too_long_for_a_socket_path_still_serves(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    state = tmp_path / ("long-state-dir-" * 8)
    client = await start(aiohttp_client, embedded_settings(state))
    sidecar = client.app[SIDECAR]
    assert sidecar is not None
    sock = sidecar.socket
    try:
        assert not str(sock).startswith(str(state))
        assert len(str(sock)) <= 100
        async with client.post("/v1/decisions", json=example_request(state)) as resp:
            assert (resp.status, (await resp.json())["allow"]) == (200, True)
        await client.close()
        assert not sock.exists()
    finally:
        shutil.rmtree(sock.parent, ignore_errors=True)


# --------------------------------------------------------------------------- pdpctl serve


@linux_only
def test_serve_killed_with_sigkill_takes_its_opa_child_down(
    serve_process: Callable[..., ServeProcess],
) -> None:
    serve = serve_process()
    opa_pid = serve.opa_pid()

    os.kill(serve.pid, signal.SIGKILL)

    orphaned = not wait_until(lambda: not process_running(opa_pid), timeout=5.0)
    if orphaned:  # do not leave it running after the test
        os.kill(opa_pid, signal.SIGKILL)
    assert not orphaned, f"OPA (pid {opa_pid}) outlived its SIGKILLed parent"


@linux_only
def test_serve_stops_cleanly_on_sigterm_and_leaves_no_opa(
    serve_process: Callable[..., ServeProcess],
) -> None:
    serve = serve_process()
    opa_pid = serve.opa_pid()
    sock = socket_path(serve.state_dir)
    assert sock.exists()

    assert serve.terminate() == 0, serve.output()

    assert not process_running(opa_pid)
    assert not sock.exists()
    assert "Traceback" not in serve.output()


# --------------------------------------------------------------------------- start-up failures


async def _startup_error(settings: Settings) -> BaseException:
    """Start the app's resources the way `web.run_app` does; return what startup raised."""
    runner = web.AppRunner(create_app(settings))
    try:
        await runner.setup()
    except Exception as exc:
        return exc
    finally:
        await runner.cleanup()
    raise AssertionError("startup did not fail")


def broken_policies(tmp_path: Path) -> Path:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    (policies / "pdp" / "broken.rego").write_text("package pdp.broken\n\nallow if {\n")
    return policies


async def test_policies_that_do_not_compile_fail_startup_with_opas_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    exc = await _startup_error(embedded_settings(state, policies_dir=broken_policies(tmp_path)))
    assert isinstance(exc, BundleError)
    assert "rego_parse_error" in str(exc)
    assert "broken.rego:4" in str(exc)
    assert not (state / "run" / "opa.sock").exists()


async def test_missing_opa_binary_fails_startup_naming_make_tools(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-opa")
    exc = await _startup_error(embedded_settings(tmp_path, opa_binary=missing))
    assert isinstance(exc, ToolNotFoundError)
    assert missing in str(exc)
    assert "make tools" in str(exc)


async def test_opa_that_never_activates_fails_startup_and_is_stopped(
    tmp_path: Path, opa_bin: str
) -> None:
    opa = fake_opa(tmp_path, opa_bin, "exec sleep 60")
    started = time.monotonic()
    exc = await _startup_error(
        embedded_settings(tmp_path / "state", opa_binary=opa, opa_start_timeout_s=0.5)
    )
    assert isinstance(exc, SidecarError)
    assert str(exc) == "opa did not activate its bundle within 0.5 s"
    assert time.monotonic() - started < 10
    fake_pid = int((tmp_path / "fake-opa.pid").read_text())
    assert not pid_alive(fake_pid)


async def test_opa_that_exits_while_starting_fails_startup_with_its_stderr(
    tmp_path: Path, opa_bin: str
) -> None:
    opa = fake_opa(tmp_path, opa_bin, "echo 'error: bundle activation failed' >&2\nexit 3")
    exc = await _startup_error(embedded_settings(tmp_path / "state", opa_binary=opa))
    assert isinstance(exc, SidecarError)
    assert str(exc) == "opa exited with status 3 while starting: error: bundle activation failed"


async def test_sidecar_stop_before_start_is_harmless(tmp_path: Path) -> None:
    sidecar = OPASidecar("opa", tmp_path / "b.tar.gz", tmp_path / "opa.sock")
    await sidecar.stop()
    assert sidecar.pid is None


# --------------------------------------------------------------------------- socket path


def test_socket_path_is_in_the_state_dir_when_short(tmp_path: Path) -> None:
    assert socket_path(tmp_path) == tmp_path / "run" / "opa.sock"


def test_socket_path_is_absolute_for_a_relative_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert socket_path(Path(".pdp-state")) == tmp_path / ".pdp-state" / "run" / "opa.sock"


def test_socket_path_falls_back_to_a_short_temp_dir_when_state_dir_is_long(
    tmp_path: Path,
) -> None:
    long_state = tmp_path / ("s" * 120)
    path = socket_path(long_state)
    try:
        assert path.name == "opa.sock"
        assert path.parent.name.startswith("pdp-opa-")
        assert path.parent.is_dir()
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert len(str(path)) <= 100
        assert not str(path).startswith(str(long_state))
    finally:
        shutil.rmtree(path.parent)


def test_socket_path_boundary_is_100_characters(tmp_path: Path) -> None:
    suffix = "/run/opa.sock"
    fits = Path(str(tmp_path) + "/" + "x" * (100 - len(str(tmp_path)) - 1 - len(suffix)))
    assert len(str(fits / "run" / "opa.sock")) == 100
    assert socket_path(fits) == fits / "run" / "opa.sock"
    too_long = Path(str(fits) + "x")
    path = socket_path(too_long)
    try:
        assert path.parent.name.startswith("pdp-opa-")
    finally:
        shutil.rmtree(path.parent)
