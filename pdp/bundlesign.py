"""Signed bundles, with OPA doing the cryptography: ``opa build --signing-key`` signs,
``opa build --verification-key`` verifies, ``opa inspect`` reads.

:func:`sign_bundle` stages an unsigned bundle (from :func:`pdp.bundle.build_bundle`) in a
temporary directory and has ``opa build --bundle`` write it again with OPA's own
``.signatures.json`` (one JWT over every file's SHA-256; the key id as the ``keyid``
claim). The algorithm is never taken from a bundle: verifying with the algorithm a bundle
names would let an HS256 token "signed" with the public key pass.
"""

from __future__ import annotations

import base64
import json
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BAD_INPUT, BUNDLE_INVALID, PDPError

#: Algorithms a bundle may be signed and verified with.
SIGNING_ALGS = ("ES256", "RS256")


class BundleSigningError(PDPError, RuntimeError):
    """OPA could not sign, verify or read a bundle; the message carries OPA's own output."""

    exit_code = BAD_INPUT


class BundleInvalidError(BundleSigningError):
    """The bundle is unsigned, tampered with, or signed by another key."""

    exit_code = BUNDLE_INVALID


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cwd)


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    return (proc.stderr or proc.stdout).strip() or f"opa exited {proc.returncode}"


def sign_bundle(
    opa: str,
    unsigned: Path,
    output: Path,
    *,
    signing_key: Path,
    alg: str = "ES256",
    key_id: str | None = None,
) -> None:
    """Write ``unsigned`` to ``output`` with OPA's ``.signatures.json`` added."""
    if alg not in SIGNING_ALGS:
        raise BundleSigningError(f"signing algorithm must be one of {', '.join(SIGNING_ALGS)}")
    output = output.absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pdp-bundle-") as tmp:
        stage = Path(tmp) / "bundle"
        stage.mkdir()
        with tarfile.open(unsigned, "r:gz") as tar:
            tar.extractall(stage, filter="data")
        cmd = [
            opa,
            "build",
            "--bundle",
            ".",  # run from the staged bundle: file names stay pdp/..., data.json
            "--signing-key",
            str(signing_key.absolute()),
            "--signing-alg",
            alg,
            "--output",
            str(output),
        ]
        if key_id is not None:
            claims = Path(tmp) / "claims.json"
            claims.write_text(json.dumps({"keyid": key_id}))
            cmd += ["--claims-file", str(claims)]
        proc = _run(cmd, cwd=stage)
    if proc.returncode != 0:
        raise BundleSigningError(f"opa build could not sign the bundle: {_output(proc)}")


def verify_bundle(opa: str, bundle: Path, *, verification_key: Path, alg: str = "ES256") -> None:
    """Raise :class:`BundleInvalidError` unless ``bundle`` is signed by ``verification_key``
    and every file matches its signed hash (OPA's own verification)."""
    if alg not in SIGNING_ALGS:
        raise BundleSigningError(f"signing algorithm must be one of {', '.join(SIGNING_ALGS)}")
    if not bundle.is_file():
        raise BundleSigningError(f"{bundle}: no such bundle file")
    with tempfile.TemporaryDirectory(prefix="pdp-verify-") as tmp:
        proc = _run(
            [
                opa,
                "build",
                "--bundle",
                str(bundle.absolute()),
                "--verification-key",
                str(verification_key.absolute()),
                "--signing-alg",
                alg,
                "--output",
                str(Path(tmp) / "checked.tar.gz"),
            ]
        )
    if proc.returncode != 0:
        raise BundleInvalidError(_output(proc))


@dataclass(frozen=True, slots=True)
class BundleInfo:
    """What ``pdpctl bundle inspect`` shows."""

    revision: str | None
    roots: list[str]
    files: list[str]
    signed: bool
    #: From the signature's JWT (not verified here): alg, kid/keyid, iss, iat, scope.
    signer: dict[str, Any]
    #: The manifest's ``metadata.content_digest`` (``sha256:<hex>``, written by
    #: ``pdpctl bundle build``), the bundle's identity for the decision cache; None when absent.
    content_digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "roots": self.roots,
            "files": self.files,
            "signed": self.signed,
            "signer": self.signer,
            "content_digest": self.content_digest,
        }


def _b64json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def inspect_bundle(opa: str, bundle: Path) -> BundleInfo:
    """Revision, roots, files and (unverified) signer of ``bundle`` via ``opa inspect``."""
    if not bundle.is_file():
        raise BundleSigningError(f"{bundle}: no such bundle file")
    proc = _run([opa, "inspect", "--format", "json", str(bundle.absolute())])
    if proc.returncode != 0:
        raise BundleSigningError(f"opa inspect failed: {_output(proc)}")
    doc = json.loads(proc.stdout)
    manifest = doc.get("manifest") or {}
    with tarfile.open(bundle, "r:gz") as tar:
        files = sorted(m.name.lstrip("/") for m in tar.getmembers() if m.isfile())
    signatures = (doc.get("signatures_config") or {}).get("signatures") or []
    signer: dict[str, Any] = {}
    if signatures:
        try:
            header_b64, payload_b64, _ = str(signatures[0]).split(".")
            header, payload = _b64json(header_b64), _b64json(payload_b64)
        except (ValueError, json.JSONDecodeError) as exc:
            raise BundleSigningError(f"the bundle's signature is not a JWT: {exc}") from None
        signer = {
            "alg": header.get("alg"),
            "key_id": header.get("kid") or payload.get("keyid"),
            "signed_files": len(payload.get("files") or []),
        }
        signer.update({k: payload[k] for k in ("iss", "iat", "scope") if k in payload})
    return BundleInfo(
        revision=manifest.get("revision"),
        roots=list(manifest.get("roots") or [""]),
        files=files,
        signed=bool(signatures),
        signer=signer,
        content_digest=_content_digest(manifest),
    )


def _content_digest(manifest: dict[str, Any]) -> str | None:
    metadata = manifest.get("metadata")
    digest = metadata.get("content_digest") if isinstance(metadata, dict) else None
    return digest if isinstance(digest, str) else None
