"""What every benchmark here does to its processes: pick a port, wait for readiness, stop.

The one start-up and shut-down helper of bench/ (run.py, audit_ab.py, frontdoors.py,
overload.py, mcp_gateway.py): loopback only, bounded waits, every process stopped (SIGTERM,
then SIGKILL after a grace period) and its work directory removed, whatever happened.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["free_port", "running", "stop", "wait_http", "wait_port"]


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers 200 (failing early if ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait until something listens on loopback ``port`` (failing early if ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def stop(procs: Iterable[subprocess.Popen[bytes]], grace_s: float = 10.0) -> None:
    """SIGTERM every process (last started first), then SIGKILL what has not exited."""
    procs = list(procs)
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running(work: Path | None = None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """A list to append started processes to; on exit every one is stopped and ``work``
    (a temporary directory, if given) removed."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        stop(procs)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
