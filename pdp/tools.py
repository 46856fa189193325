"""Finding the Go-built tools agent-pdp drives: ``opa`` and ``regal``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import ToolNotFoundError as ToolNotFoundError

INSTALL_HINT = (
    "run 'make tools' (or scripts/install-tools.sh) to build it into .tools/bin with Go, "
    "put it on PATH, or point PDP_OPA_BINARY at it"
)


def _project_bin() -> list[Path]:
    """Candidate .tools/bin folders: the working directory's and the source checkout's."""
    here = Path(__file__).resolve().parent.parent
    return [Path.cwd() / ".tools" / "bin", here / ".tools" / "bin"]


def find_tool(name: str, configured: str | None = None) -> str:
    """Return the path of ``name``: the configured path, then .tools/bin, then PATH."""
    if configured:
        if os.access(configured, os.X_OK):
            return configured
        raise ToolNotFoundError(f"{name} not found at {configured!r}: {INSTALL_HINT}")
    for folder in _project_bin():
        candidate = folder / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise ToolNotFoundError(f"{name} binary not found: {INSTALL_HINT}")


def find_opa(configured: str | None = None) -> str:
    """Path of the ``opa`` binary (PDP_OPA_BINARY, .tools/bin, PATH)."""
    return find_tool("opa", configured or os.environ.get("PDP_OPA_BINARY") or None)


def find_regal(configured: str | None = None) -> str:
    """Path of the ``regal`` binary (PDP_REGAL_BINARY, .tools/bin, PATH)."""
    return find_tool("regal", configured or os.environ.get("PDP_REGAL_BINARY") or None)
