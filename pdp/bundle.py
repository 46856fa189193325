"""Building policy bundles with ``opa build``.

A policy directory holds Rego under ``pdp/`` and data documents under ``data/``
(``data/inventory/data.json`` becomes ``data.inventory``). Both are bundle roots.

Derived data: when the policy defines ``data.pdp.index.entitlements`` (policies/pdp/index),
the build evaluates it once with ``opa eval`` over the same sources and ships the result
as the data document ``data.pdp_index.entitlements``, so a decision looks up the agent's
entitlements for one destination and action type instead of scanning them. Beside it,
``data.pdp_index.fast_reviewed``: whether the policy modules are the ones the fast path
(policies/pdp/fast) was reviewed against (:func:`fast_review`); only then does the build
also evaluate ``data.pdp.index.fast`` and ship it as ``data.pdp_index.fast``, the fast
path's entries (what it checks that does not depend on the request). Without them the fast
path clears nothing. Both are derived afresh by every build, so no stale entry can clear.

Content digest: every bundle built here carries ``metadata.content_digest`` in its manifest
(``sha256:<hex>`` over every file but the manifest, :func:`content_digest`), so two bundles
with the same revision string but different contents are told apart by whoever reads the
manifest: the decision cache (pdp/decision_cache.py) keys its entries on it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bundledata import check_policy_data
from .cache_safety import CONTENT_DIGEST_KEY
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
    """Run ``opa build`` over the policy sources, tests excluded; return path and revision.

    The data documents are checked against their schemas first (:mod:`pdp.bundledata`):
    off-schema data raises :class:`~pdp.bundledata.DataSchemaError` and nothing is
    written. The bundle is built beside ``output`` and renamed onto it only once complete,
    so a failed build never leaves a partial or stale file at ``output``'s name.
    """
    check_policy_data(policies_dir, source_roots(policies_dir))
    revision = revision or content_revision(policies_dir)
    output = output.absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    roots = [root.name for root in source_roots(policies_dir)]
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    with tempfile.TemporaryDirectory(prefix="pdp-bundle-") as tmp:
        derived = derived_data(opa, policies_dir, roots)
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
            str(partial),
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, check=False, cwd=policies_dir
            )
            if proc.returncode != 0:
                raise BundleError(
                    (proc.stderr or proc.stdout).strip() or f"opa build exited {proc.returncode}"
                )
            stamp_content_digest(partial)
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
    return BuiltBundle(output, revision)


_MANIFEST = ".manifest"


def content_digest(files: dict[str, bytes]) -> str:
    """``sha256:<hex>`` over the bundle's files (name and bytes, sorted by name), the
    manifest and signatures left out: the identity of what the bundle decides with."""
    digest = hashlib.sha256()
    for name in sorted(files):
        if name.lstrip("/") in {_MANIFEST, ".signatures.json"}:
            continue
        data = files[name]
        digest.update(f"{name.lstrip('/')}\0{len(data)}\0".encode())
        digest.update(data)
    return "sha256:" + digest.hexdigest()


def stamp_content_digest(bundle: Path) -> str:
    """Rewrite the gzipped tarball ``bundle`` with ``metadata.content_digest`` in its
    manifest (the files and their order kept; deterministic: no timestamps); return it."""
    with tarfile.open(bundle, "r:gz") as tar:
        members = [(m, tar.extractfile(m)) for m in tar.getmembers() if m.isfile()]
        files = {m.name: f.read() for m, f in members if f is not None}
    manifest_name = next((n for n in files if n.lstrip("/") == _MANIFEST), "/" + _MANIFEST)
    manifest = json.loads(files.get(manifest_name) or b"{}")
    digest = content_digest(files)
    metadata = manifest.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    manifest["metadata"] = {**metadata, CONTENT_DIGEST_KEY: digest}
    files[manifest_name] = json.dumps(manifest, sort_keys=True).encode()
    order = [m.name for m, _ in members]
    if manifest_name not in order:
        order.append(manifest_name)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as out:
        for name in order:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o600, 0
            out.addfile(info, io.BytesIO(files[name]))
    bundle.write_bytes(buf.getvalue())
    return digest


#: The rule the build evaluates, and where the bundle carries its value.
INDEX_RULE = "data.pdp.index.entitlements"
INDEX_DOCUMENT = ("pdp_index", "entitlements")
#: The fast path's entries (policies/pdp/index: pdp.index.fast), shipped beside the index as
#: data.pdp_index.fast; absent (nothing cleared) when the policy defines none.
FAST_INDEX_RULE = "data.pdp.index.fast"
FAST_INDEX_DOCUMENT = ("pdp_index", "fast")


#: The digest of the policy modules a fast path (policies/pdp/fast) was reviewed against,
#: relative to the policy directory: ``sha256:<hex>`` of :func:`review_digest`.
FAST_REVIEW_FILE = Path("pdp") / "fast" / "REVIEWED"
#: Where the bundle says whether that review still holds (data.pdp_index.fast_reviewed).
FAST_REVIEWED_DOCUMENT = ("pdp_index", "fast_reviewed")


def review_digest(policies_dir: Path) -> str:
    """``sha256:<hex>`` over every policy module under ``pdp/`` (``*.rego``, tests excluded:
    relative path and bytes, in path order). Any change to any rule — a new deny module, a
    new rule in a reviewed one, a changed helper — changes it."""
    digest = hashlib.sha256()
    root = policies_dir / "pdp"
    if root.is_dir():
        for path in sorted(p for p in root.rglob("*.rego") if p.is_file()):
            if path.name.endswith("_test.rego"):
                continue
            digest.update(path.relative_to(policies_dir).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()


def fast_review(policies_dir: Path) -> tuple[bool, str, str | None]:
    """(whether the fast path's review holds, the modules' digest now, the reviewed one or
    None without a review file). A fast path (policies/pdp/fast) evaluates none of the deny
    rules when it clears a call, so it may only clear calls for the very modules it was
    reviewed against: otherwise the bundle turns it off and every decision is composed."""
    now = review_digest(policies_dir)
    file = policies_dir / FAST_REVIEW_FILE
    try:
        reviewed = file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return False, now, None
    return reviewed == now, now, reviewed


def derived_data(opa: str, policies_dir: Path, roots: list[str]) -> dict[str, Any]:
    """The data the build derives from the sources: whether the fast path's review holds
    (``data.pdp_index.fast_reviewed``, always present), the fast path's entries (only when
    it holds) and the entitlement index, each absent when the policy does not define it or
    it cannot be evaluated (decisions then scan the inventory, or are all composed: same
    answers; `opa build` reports what is wrong with the sources)."""
    reviewed = fast_review(policies_dir)[0]
    derived: dict[str, Any] = {FAST_REVIEWED_DOCUMENT[0]: {FAST_REVIEWED_DOCUMENT[1]: reviewed}}
    rules = [(INDEX_RULE, INDEX_DOCUMENT)]
    if reviewed:
        # The fast path's entries only for the modules it was reviewed against: without
        # them it clears nothing, and every decision is composed.
        rules.append((FAST_INDEX_RULE, FAST_INDEX_DOCUMENT))
    for rule, (document, key) in rules:
        value = _evaluate(opa, policies_dir, roots, rule)
        if value is not None:
            derived[document][key] = value
    return derived


def _evaluate(opa: str, policies_dir: Path, roots: list[str], rule: str) -> Any:
    """The value of ``rule`` over the policy sources (tests excluded); None when it is
    undefined or cannot be evaluated."""
    data_args = [arg for root in roots for arg in ("--data", root)]
    cmd = [opa, "eval", "--format", "json", *data_args, "--ignore", "*_test.rego", rule]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=policies_dir)
    try:
        results = json.loads(proc.stdout).get("result") or [] if proc.returncode == 0 else []
    except (ValueError, AttributeError):
        results = []
    return results[0]["expressions"][0]["value"] if results else None
