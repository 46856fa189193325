"""Signed checkpoints: the writer's signature over the trail's head, every N records or T
seconds and at shutdown.

A checkpoint is a record in the chain (``"type": "checkpoint"``) right after the record it
seals::

    {"type": "checkpoint", "time": T,
     "checkpoint": {"seq": S, "hash": H, "time": T, "kid": K},
     "jws": "<compact JWS, ES256, payload = canonical JSON of the checkpoint member>"}

``S``/``H`` are the seq and hash of the record just before it. Whoever holds the public
keys (``jwks.json``, also served at ``/.well-known/audit-jwks.json``) can check that the
trail up to ``S`` is the one the writer signed, without trusting the PDP: rewriting any
record before ``S`` changes ``H`` and the signature no longer matches; cutting the trail
short is caught against a checkpoint kept elsewhere (``--expect-checkpoint``, the
collector's copy).

Audit-signing keys are the writer's own (never the credential keys)::

    <keys_dir>/               0700
    <keys_dir>/current        kid of the key that signs now
    <keys_dir>/<kid>.pem      0600  EC P-256 private key (PKCS#8); kid = RFC 7638 thumbprint
    <keys_dir>/jwks.json      every public key that ever signed a checkpoint

Rotation writes the new public key into ``jwks.json`` before signing with it and deletes
the old private key; old public keys stay published (old checkpoints must keep verifying).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from ..errors import ConfigError
from ..keys import SigningKey, private_dir, public_jwk, verify_es, write_private
from ..timefmt import rfc3339
from .chain import canonical

log = logging.getLogger("pdp.audit")

ALG: Final = "ES256"
#: JWS ``typ`` of a checkpoint signature.
TYP: Final = "pdp-audit-checkpoint+jws"
JWKS_FILE: Final = "jwks.json"
_CURRENT_FILE: Final = "current"
#: The members a checkpoint signs, in the order documented.
CLAIMS: Final = ("seq", "hash", "time", "kid")


class CheckpointError(ConfigError):
    """A checkpoint or audit JWKS is malformed, or a checkpoint is signed by an unknown key
    or its signature is bad."""


class AuditSigner:
    """The audit-signing key ring of one writer (see the module docstring)."""

    def __init__(self, keys_dir: Path) -> None:
        self.keys_dir = keys_dir
        self._current: SigningKey | None = None
        self._jwks: list[dict[str, Any]] = []

    @property
    def kid(self) -> str:
        return self.current.kid

    @property
    def current(self) -> SigningKey:
        if self._current is None:
            raise RuntimeError("the audit signer has not been opened")
        return self._current

    @property
    def jwks(self) -> bytes:
        """The JWKS document: every audit-signing public key, current last."""
        return orjson.dumps({"keys": self._jwks})

    def open(self) -> None:
        """Load the current key, or make the first one."""
        private_dir(self.keys_dir)
        self._jwks = _read_jwks_file(self.keys_dir / JWKS_FILE)
        try:
            kid = (self.keys_dir / _CURRENT_FILE).read_text().strip()
        except FileNotFoundError:
            kid = ""
        pem = self.keys_dir / f"{kid}.pem"
        if kid and pem.is_file():
            key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise CheckpointError(f"{pem}: not an EC private key")
            jwk = public_jwk(key, ALG)
            if jwk["kid"] != kid:
                raise CheckpointError(f"{pem}: the key does not match its name")
            if all(k.get("kid") != kid for k in self._jwks):
                self._publish(jwk)
            self._current = SigningKey(kid, ALG, key, TYP)
        else:
            self.rotate()
        log.info("audit checkpoints signed with key %s (%s)", self.kid, self.keys_dir)

    def rotate(self) -> tuple[str | None, str]:
        """A new current key, published before it signs; returns (previous, new) kids."""
        private_dir(self.keys_dir)
        previous = self._current.kid if self._current is not None else None
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = public_jwk(key, ALG)
        kid = str(jwk["kid"])
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(self.keys_dir / f"{kid}.pem", pem)
        self._publish(jwk)
        write_private(self.keys_dir / _CURRENT_FILE, kid.encode() + b"\n")
        self._current = SigningKey(kid, ALG, key, TYP)
        if previous is not None:
            (self.keys_dir / f"{previous}.pem").unlink(missing_ok=True)
            log.warning("audit-signing key rotated: %s -> %s", previous, kid)
        return previous, kid

    def _publish(self, jwk: dict[str, Any]) -> None:
        self._jwks = [k for k in self._jwks if k.get("kid") != jwk["kid"]] + [jwk]
        path = self.keys_dir / JWKS_FILE
        data = orjson.dumps({"keys": self._jwks}, option=orjson.OPT_INDENT_2) + b"\n"
        write_private(path, data)
        path.chmod(0o644)  # public keys: readable by whoever verifies

    def checkpoint(self, seq: int, digest: str, now_ns: int | None = None) -> dict[str, Any]:
        """The checkpoint record sealing the record ``seq`` whose hash is ``digest``."""
        when = rfc3339(time.time_ns() if now_ns is None else now_ns)
        claims = {"seq": seq, "hash": digest, "time": when, "kid": self.kid}
        return {
            "type": "checkpoint",
            "time": when,
            "checkpoint": claims,
            "jws": self.current.sign(canonical(claims)),
        }


def _read_jwks_file(path: Path) -> list[dict[str, Any]]:
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except orjson.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not JSON: {exc}") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise CheckpointError(f"{path}: not a JWKS (no 'keys' array)")
    return [k for k in keys if isinstance(k, dict)]


# ---------------------------------------------------------------------------- verifying


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The signed content of a checkpoint."""

    seq: int
    hash: str
    time: str
    kid: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "time": self.time, "kid": self.kid}


PublicKeys = Mapping[str, ec.EllipticCurvePublicKey]


def load_public_keys(path: Path) -> dict[str, ec.EllipticCurvePublicKey]:
    """kid -> public key from a JWKS file (ES256 keys only)."""
    out: dict[str, ec.EllipticCurvePublicKey] = {}
    for jwk in _read_jwks_file(path):
        kid = jwk.get("kid")
        if not isinstance(kid, str) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            continue
        try:
            key = ECAlgorithm.from_jwk(jwk)
        except Exception as exc:  # a malformed key: say which
            raise CheckpointError(f"{path}: key {kid!r} is unusable: {exc}") from None
        if isinstance(key, ec.EllipticCurvePublicKey):
            out[kid] = key
    if not out:
        raise CheckpointError(f"{path}: no ES256 (P-256) keys")
    return out


def _b64decode(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise CheckpointError("the JWS is not base64url") from None


def parse_jws(jws: str) -> tuple[dict[str, Any], Checkpoint, bytes, bytes]:
    """(header, claims, signing input, signature) of a checkpoint JWS; no signature check."""
    parts = jws.split(".") if isinstance(jws, str) else []
    if len(parts) != 3:
        raise CheckpointError("the checkpoint signature is not a compact JWS")
    try:
        header = orjson.loads(_b64decode(parts[0]))
        payload = orjson.loads(_b64decode(parts[1]))
    except orjson.JSONDecodeError:
        raise CheckpointError("the JWS header or payload is not JSON") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise CheckpointError("the JWS header or payload is not a JSON object")
    if sorted(payload) != sorted(CLAIMS):
        raise CheckpointError(f"the checkpoint must sign exactly {', '.join(CLAIMS)}")
    seq, digest, when, kid = (payload[c] for c in CLAIMS)
    if not (isinstance(seq, int) and seq >= 1 and isinstance(digest, str)):
        raise CheckpointError("the checkpoint's seq or hash is malformed")
    if not (isinstance(when, str) and isinstance(kid, str)):
        raise CheckpointError("the checkpoint's time or kid is malformed")
    claims = Checkpoint(seq, digest, when, kid)
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), _b64decode(parts[2])


def check_jws(jws: str, keys: PublicKeys | None) -> Checkpoint:
    """The claims of a checkpoint JWS; with ``keys`` its signature is checked too."""
    header, claims, signing_input, signature = parse_jws(jws)
    if header.get("alg") != ALG:
        raise CheckpointError(f"checkpoint signed with {header.get('alg')!r}, not {ALG}")
    if header.get("kid") != claims.kid:
        raise CheckpointError("the JWS header and the checkpoint name different keys")
    if keys is not None:
        key = keys.get(claims.kid)
        if key is None:
            raise CheckpointError(f"checkpoint signed by unknown key {claims.kid!r}")
        if not verify_es(key, ALG, signing_input, signature):
            raise CheckpointError(f"bad signature (key {claims.kid})")
    return claims


def check_record(record: Mapping[str, Any], keys: PublicKeys | None) -> Checkpoint:
    """The claims of a checkpoint record: its JWS checked, its members equal to what it signs."""
    claims = check_jws(str(record.get("jws", "")), keys)
    if record.get("checkpoint") != claims.to_json():
        raise CheckpointError("the checkpoint's members differ from what it signs")
    return claims


def read_expected(path: Path, keys: PublicKeys | None) -> Checkpoint:
    """A checkpoint kept out of band, as a file: the compact JWS, a checkpoint record, a
    forwarded event (``{"audit": record}``), or a JSON array / JSON lines of those (the
    last checkpoint wins). Its signature is checked when ``keys`` are given."""
    try:
        raw = path.read_bytes().strip()
    except OSError as exc:
        raise CheckpointError(f"{path}: {exc.strerror}") from None
    if raw and raw[:1] not in (b"{", b"["):
        return check_jws(raw.decode("ascii", errors="replace"), keys)
    docs: list[Any]
    try:
        parsed = orjson.loads(raw)
        docs = parsed if isinstance(parsed, list) else [parsed]
    except orjson.JSONDecodeError:
        try:
            docs = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
        except orjson.JSONDecodeError:
            raise CheckpointError(f"{path}: neither a JWS nor JSON") from None
    found = None
    for doc in docs:
        if isinstance(doc, dict) and isinstance(doc.get("audit"), dict):
            doc = doc["audit"]
        if isinstance(doc, dict) and doc.get("type") == "checkpoint":
            found = doc
    if found is None:
        raise CheckpointError(f"{path}: holds no checkpoint")
    return check_record(found, keys)
