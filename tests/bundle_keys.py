"""Bundle-signing key pairs generated at test time (never committed)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def key_pair(directory: Path, name: str, alg: str = "ES256") -> tuple[Path, Path]:
    """(private PEM, public PEM) files for ``alg`` (ES256: P-256, RS256: RSA 2048)."""
    directory.mkdir(parents=True, exist_ok=True)
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / f"{name}.key.pem"
    public = directory / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def tamper(bundle: Path, output: Path, name: str = "pdp/decision.rego") -> Path:
    """A copy of ``bundle`` with one file changed after signing (a comment appended)."""
    with tarfile.open(bundle, "r:gz") as src, tarfile.open(output, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if data is not None and member.name.lstrip("/") == name:
                data += b"\n# changed after signing\n"
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return output
