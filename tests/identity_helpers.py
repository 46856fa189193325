"""Keys, bundles, a settable clock and token forging for the identity tests.

Plain helpers (no fixtures) so any test module can import them; the fixtures that use them
live beside the tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

#: The instant every test token is minted at (2023-11-14T22:13:20Z).
NOW = 1_700_000_000
AUDIENCE = "agent-pdp"
DOMAIN = "acme.example"
OTHER_DOMAIN = "beta.example"
SPIFFE_ID = "spiffe://acme.example/agents/support-bot"


class FakeClock:
    """A clock the test moves by hand; call it like ``time.time``."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class KeyPair:
    """A signing key with the kid it is published under."""

    private_key: Any
    kid: str

    def public_jwk(self, use: str | None = "jwt-svid", **extra: Any) -> dict[str, Any]:
        """The public JWK as a bundle would carry it."""
        public = self.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        jwk["kid"] = self.kid
        if use is not None:
            jwk["use"] = use
        jwk.update(extra)
        return jwk

    def private_jwk(self) -> dict[str, Any]:
        """The JWK including private members (what must never be in a bundle)."""
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            jwk = RSAAlgorithm.to_jwk(self.private_key, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(self.private_key, as_dict=True)
        return {**jwk, "kid": self.kid, "use": "jwt-svid"}

    def public_pem(self) -> bytes:
        return bytes(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )


def ec_key(kid: str, curve: ec.EllipticCurve | None = None) -> KeyPair:
    return KeyPair(ec.generate_private_key(curve or ec.SECP256R1()), kid)


def rsa_key(kid: str, bits: int = 2048) -> KeyPair:
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=bits), kid)


def ed25519_key(kid: str) -> KeyPair:
    return KeyPair(ed25519.Ed25519PrivateKey.generate(), kid)


def bundle_doc(*jwks: dict[str, Any], spiffe: bool = True) -> dict[str, Any]:
    """A SPIFFE bundle (or, with ``spiffe=False``, a plain JWKS) of ``jwks``."""
    doc: dict[str, Any] = {"keys": list(jwks)}
    if spiffe:
        doc.update(spiffe_sequence=1, spiffe_refresh_hint=300)
    return doc


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid JWT-SVID claims at NOW; ``name=None`` removes a claim."""
    base: dict[str, Any] = {
        "sub": SPIFFE_ID,
        "aud": [AUDIENCE],
        "iat": NOW,
        "exp": NOW + 300,
        "jti": "jti-1",
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def sign(
    key: KeyPair,
    payload: dict[str, Any] | None = None,
    *,
    alg: str = "ES256",
    kid: str | None = "",
    headers: dict[str, Any] | None = None,
) -> str:
    """Sign ``payload`` (default: valid claims) with PyJWT; kid "" means the key's own kid."""
    header: dict[str, Any] = {"typ": "JWT"}
    if kid is not None:
        header["kid"] = kid or key.kid
    header.update(headers or {})
    return jwt.encode(
        payload if payload is not None else claims(), key.private_key, alg, headers=header
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def forge(header: Any, payload: Any, signature: bytes = b"") -> str:
    """A compact JWS with arbitrary header/payload and a given (usually bogus) signature."""
    return f"{b64json(header)}.{b64json(payload)}.{b64url(signature)}"


def forge_hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    """HS256 by hand: PyJWT refuses PEM secrets, which is exactly the attack to simulate."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def replace_payload(token: str, payload: dict[str, Any]) -> str:
    """Keep header and signature, swap the payload: a tampered token."""
    header, _, signature = token.split(".")
    return f"{header}.{b64json(payload)}.{signature}"
