"""Building policy bundles with ``opa build``.

A policy directory holds Rego under ``pdp/`` and data documents under ``data/``
(``data/inventory/data.json`` becomes ``data.inventory``). Both are bundle roots.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError as BundleError

#: Folders of a policy directory that go into the bundle, in order.
SOURCE_DIRS = ("pdp", "data")
_SOURCE_SUFFIXES = {".rego", ".json", ".yaml", ".yml"}


@dataclass(frozen=True, slots=True)
class BuiltBundle:
    path: Path
    revision: str


def source_roots(policies_dir: Path) -> list[Path]:
    """The folders of ``policies_dir`` that OPA loads (pdp/ and data/ when present)."""
    roots = [policies_dir / d for d in SOURCE_DIRS if (policies_dir / d).is_dir()]
    if not roots:
        raise BundleError(
            f"{policies_dir}: no pdp/ or data/ folder with policies", missing_sources=True
        )
    return roots


def content_revision(policies_dir: Path) -> str:
    """A revision derived from the policy sources (not tests): same sources, same revision."""
    digest = hashlib.sha256()
    for root in source_roots(policies_dir):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.suffix not in _SOURCE_SUFFIXES or path.name.endswith("_test.rego"):
                continue
            digest.update(path.relative_to(policies_dir).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return "sha256-" + digest.hexdigest()[:16]


def build_bundle(
    opa: str,
    policies_dir: Path,
    output: Path,
    *,
    revision: str | None = None,
) -> BuiltBundle:
    """Run ``opa build`` over the policy sources, tests excluded; return path and revision."""
    revision = revision or content_revision(policies_dir)
    output = output.absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    # Run from the policy directory so the bundle holds relative paths (pdp/..., data/...):
    # the same sources give the same bundle wherever they are built.
    cmd = [
        opa,
        "build",
        *(root.name for root in source_roots(policies_dir)),
        "--ignore",
        "*_test.rego",
        "--revision",
        revision,
        "--output",
        str(output),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=policies_dir)
    if proc.returncode != 0:
        raise BundleError(
            (proc.stderr or proc.stdout).strip() or f"opa build exited {proc.returncode}"
        )
    return BuiltBundle(output, revision)
