"""JWS primitives shared by the signer (keys), the verifier (target) and dev trust:
the ES algorithms, unpadded base64url, raw ECDSA signature checks, JWK thumbprints."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = ["ALGORITHMS", "b64url", "jwk_thumbprint", "verify_es"]


@dataclasses.dataclass(frozen=True, slots=True)
class _Alg:
    curve: type[ec.EllipticCurve]
    hash: type[hashes.HashAlgorithm]
    size: int  # bytes of r and of s
    crv: str


#: The JWS algorithms credentials may be signed with (ECDSA; ES256 is the default).
ALGORITHMS: Final[Mapping[str, _Alg]] = {
    "ES256": _Alg(ec.SECP256R1, hashes.SHA256, 32, "P-256"),
    "ES384": _Alg(ec.SECP384R1, hashes.SHA384, 48, "P-384"),
    "ES512": _Alg(ec.SECP521R1, hashes.SHA512, 66, "P-521"),
}


_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


def b64url(data: bytes) -> bytes:
    """Unpadded base64url (RFC 7515 §2)."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


def verify_es(
    public_key: ec.EllipticCurvePublicKey, alg: str, signing_input: bytes, signature: bytes
) -> bool:
    """Check a raw (r || s) JWS ECDSA signature; False for any mismatch."""
    spec = ALGORITHMS.get(alg)
    if spec is None or len(signature) != 2 * spec.size:
        return False
    if not isinstance(public_key.curve, spec.curve):
        return False
    r = int.from_bytes(signature[: spec.size], "big")
    s = int.from_bytes(signature[spec.size :], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(spec.hash()))
    except InvalidSignature:
        return False
    return True


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK SHA-256 thumbprint (base64url, unpadded) of an EC or RSA public JWK."""
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}.get(jwk.get("kty", ""))
    if required is None:
        raise ValueError(f"cannot compute a thumbprint for kty {jwk.get('kty')!r}")
    canonical = json.dumps(
        {name: jwk[name] for name in required}, separators=(",", ":"), sort_keys=True
    )
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
