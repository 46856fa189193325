"""One ``pdpctl serve`` per state directory: an exclusive lock on ``STATE_DIR/serve.lock``.

Two services on one state directory would share the embedded OPA's socket, the built
bundle, the audit trail and the keys: the second would rewrite the first's bundle and, on
exit, leave it without its OPA. :func:`lock_state_dir` is taken before anything in the
directory is touched; it is an advisory ``flock`` the kernel releases when the process
dies, so a crashed service never leaves it held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from .errors import ConfigError

LOCK_NAME = "serve.lock"


class StateDirBusyError(ConfigError):
    """Another process serves from this state directory."""


def lock_state_dir(state_dir: Path) -> IO[str]:
    """Lock ``state_dir`` for this process (keep the returned file open while serving).

    Raises :class:`StateDirBusyError` (exit 9) when another process holds the lock; only
    the directory and its lock file are created, nothing else in it is read or written.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()[:20]
        handle.close()
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise StateDirBusyError(
            f"state directory {state_dir} is in use by another `pdpctl serve`{who}; "
            "stop it, or give this one its own --state-dir"
        ) from None
    except OSError:
        handle.close()
        raise
    with contextlib.suppress(OSError):
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    return handle
