"""Child processes of the tests (OPA, redis-server, `pdpctl serve`): one way to stop them."""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> int | None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit code (None if never started).

    A process that already exited is only reaped.
    """
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    return kill(proc)


def kill(proc: subprocess.Popen[bytes] | None) -> int | None:
    """SIGKILL (when still running) and reap; the exit code (None if never started)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.kill()
    return proc.wait()
