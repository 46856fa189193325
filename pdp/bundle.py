"""Building policy bundles with ``opa build``.

A policy directory holds Rego under ``pdp/`` and data documents under ``data/``
(``data/inventory/data.json`` becomes ``data.inventory``). Both are bundle roots.

Derived data: when the policy defines ``data.pdp.index.entitlements`` (policies/pdp/index),
the build evaluates it once with ``opa eval`` over the same sources and ships the result
as the data document ``data.pdp_index.entitlements``, so a decision looks up the agent's
entitlements for one destination and action type instead of scanning them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    roots = [root.name for root in source_roots(policies_dir)]
    with tempfile.TemporaryDirectory(prefix="pdp-bundle-") as tmp:
        derived = derived_data(opa, policies_dir, roots)
        if derived is not None:
            (Path(tmp) / "data.json").write_text(json.dumps(derived, sort_keys=True))
            roots.append(tmp)
        # Run from the policy directory so the bundle holds relative paths (pdp/...,
        # data/...): the same sources give the same bundle wherever they are built.
        cmd = [
            opa,
            "build",
            *roots,
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


#: The rule the build evaluates, and where the bundle carries its value.
INDEX_RULE = "data.pdp.index.entitlements"
INDEX_DOCUMENT = ("pdp_index", "entitlements")


def derived_data(opa: str, policies_dir: Path, roots: list[str]) -> dict[str, Any] | None:
    """The data the build derives from the sources (the entitlement index), or None when
    the policy defines no index or it cannot be evaluated: decisions then scan the
    inventory (same answers), and `opa build` reports what is wrong with the sources."""
    data_args = [arg for root in roots for arg in ("--data", root)]
    cmd = [opa, "eval", "--format", "json", *data_args, "--ignore", "*_test.rego", INDEX_RULE]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=policies_dir)
    try:
        results = json.loads(proc.stdout).get("result") or [] if proc.returncode == 0 else []
    except (ValueError, AttributeError):
        results = []
    if not results:
        return None
    value = results[0]["expressions"][0]["value"]
    return {INDEX_DOCUMENT[0]: {INDEX_DOCUMENT[1]: value}}
