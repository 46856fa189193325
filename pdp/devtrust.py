"""Dev trust domains for the embedded default: generated signing keys and their bundles.

Layout under the state directory (created on first use, reused afterwards)::

    <state_dir>/dev-trust/                  0700
    <state_dir>/dev-trust/<domain>/         0700
    <state_dir>/dev-trust/<domain>/key.pem  0600  EC P-256 private key, PKCS#8 PEM
    <state_dir>/dev-trust/<domain>/bundle.json    SPIFFE trust bundle with its public key

The keys exist only in the state directory, which is never committed. They let a newcomer
mint a JWT-SVID (``mint_svid``) that the PDP accepts; production configures real bundles
and no dev domains.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from .errors import DevTrustError
from .identity import parse_spiffe_id
from .jws import jwk_thumbprint

__all__ = [
    "DEV_AUDIENCE_DEFAULT",
    "DevTrustError",
    "ensure_dev_trust",
    "jwk_thumbprint",
    "mint_delegation",
    "mint_svid",
]

DEV_AUDIENCE_DEFAULT: Final = "agent-pdp"
#: Suggested bundle refresh interval, in seconds (the dev key never rotates by itself).
DEV_REFRESH_HINT_SECONDS: Final = 3600
_DEV_DIR: Final = "dev-trust"
_KEY_FILE: Final = "key.pem"
_BUNDLE_FILE: Final = "bundle.json"
#: Claims mint_svid sets itself; extra_claims may not override them.
_RESERVED_CLAIMS: Final = frozenset({"sub", "aud", "iat", "exp", "jti"})


def _public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": jwk_thumbprint(jwk), "use": "jwt-svid", "alg": "ES256"}


def _domain_dir(state_dir: Path, domain: str) -> Path:
    return Path(state_dir) / _DEV_DIR / domain


def _check_domain(domain: str) -> None:
    try:
        td, path = parse_spiffe_id(f"spiffe://{domain}")
    except ValueError as exc:
        raise DevTrustError(f"invalid dev trust domain {domain!r}: {exc}") from None
    if path or td != domain or domain in (".", ".."):  # it becomes a directory name
        raise DevTrustError(f"invalid dev trust domain {domain!r}: expected a bare domain name")


def _private_dir(path: Path) -> None:
    """Create ``path`` (and parents) and make sure the leaf is 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _write_atomic(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to a fresh temporary file beside ``path`` (with ``mode``) and fsync it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise DevTrustError(
            f"dev signing key {str(path)!r} cannot be loaded ({exc}); delete it to regenerate"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise DevTrustError(
            f"dev signing key {str(path)!r} is not an EC P-256 key; delete it to regenerate"
        )
    return key


def _ensure_key(directory: Path) -> ec.EllipticCurvePrivateKey:
    """Load the domain's key, or create it so that concurrent creators agree on one key."""
    path = directory / _KEY_FILE
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = _write_atomic(path, pem, 0o600)
        try:
            os.link(tmp, path)  # atomic create-if-absent: all racing creators end on one key
        except FileExistsError:
            pass  # another process got there first: use theirs
        except OSError:
            if not path.exists():  # no hard links on this file system: plain rename
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    os.chmod(path, 0o600)
    return _load_key(path)


def _ensure_bundle(directory: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    """Write bundle.json unless it already holds exactly this key; bump the sequence if not."""
    path = directory / _BUNDLE_FILE
    jwk = _public_jwk(key)
    sequence = 1
    try:
        existing = json.loads(path.read_bytes())
    except (OSError, ValueError):
        existing = None
    if isinstance(existing, dict):
        if existing.get("keys") == [jwk]:
            return path
        previous = existing.get("spiffe_sequence")
        if isinstance(previous, int) and not isinstance(previous, bool):
            sequence = previous + 1
    bundle = {
        "keys": [jwk],
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": DEV_REFRESH_HINT_SECONDS,
    }
    data = (json.dumps(bundle, indent=2, sort_keys=True) + "\n").encode("utf-8")
    os.replace(_write_atomic(path, data, 0o644), path)
    return path


def ensure_dev_trust(state_dir: Path, domains: Sequence[str]) -> dict[str, Path]:
    """Create (once) an EC P-256 signing key and a SPIFFE trust bundle per dev trust domain.

    Under ``state_dir/dev-trust/<domain>/``: ``key.pem`` (0600, directories 0700) and
    ``bundle.json``, a JWKS with the public JWK (``kid`` = RFC 7638 thumbprint, ``use``
    "jwt-svid", ``alg`` ES256), ``spiffe_sequence`` and ``spiffe_refresh_hint``. Idempotent:
    existing keys are reused (and their permissions tightened); a bundle is rewritten only
    if it does not match its key. Returns ``{domain: bundle_path}``.
    """
    if isinstance(domains, str):
        raise TypeError("domains must be a sequence of domain names, not one string")
    for domain in domains:
        _check_domain(domain)
    if not domains:
        return {}
    root = Path(state_dir) / _DEV_DIR
    Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    _private_dir(root)
    bundles: dict[str, Path] = {}
    for domain in domains:
        directory = root / domain
        _private_dir(directory)
        bundles[domain] = _ensure_bundle(directory, _ensure_key(directory))
    return bundles


def mint_svid(
    state_dir: Path,
    spiffe_id: str,
    *,
    audience: str = DEV_AUDIENCE_DEFAULT,
    ttl_seconds: int = 300,
    clock: Callable[[], float] = time.time,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """Sign a JWT-SVID for ``spiffe_id`` with the dev key of its trust domain.

    ES256, header ``kid`` (the key's thumbprint) and ``typ`` JWT; claims ``sub``,
    ``aud`` [audience], ``iat``, ``exp`` (iat + ttl_seconds), a random ``jti``, plus
    ``extra_claims`` (which may not set sub/aud/iat/exp/jti). Raises :class:`DevTrustError`
    when the ID is not a workload SPIFFE ID or its domain has no dev key.
    """
    try:
        domain, path = parse_spiffe_id(spiffe_id)
    except ValueError as exc:
        raise DevTrustError(f"cannot mint an SVID for {spiffe_id!r}: {exc}") from None
    _check_domain(domain)
    if not path:
        raise DevTrustError(
            f"cannot mint an SVID for {spiffe_id!r}: a workload SPIFFE ID needs a path, "
            f"e.g. spiffe://{domain}/agents/demo"
        )
    if not audience:
        raise ValueError("audience must not be empty")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    extra = dict(extra_claims or {})
    reserved = sorted(_RESERVED_CLAIMS & set(extra))
    if reserved:
        raise ValueError(f"extra_claims may not set {', '.join(reserved)}")

    key_path = _domain_dir(state_dir, domain) / _KEY_FILE
    if not key_path.is_file():
        raise DevTrustError(
            f"trust domain {domain!r} has no dev signing key (looked for {str(key_path)!r}); "
            "run this where `pdpctl serve` ran or pass its --state-dir (PDP_STATE_DIR), and "
            f"make sure {domain!r} is one of its dev trust domains (PDP_DEV_TRUST_DOMAINS): "
            "serve creates the key at start"
        )
    key = _load_key(key_path)
    now = int(clock())
    claims: dict[str, Any] = {
        **extra,
        "sub": spiffe_id,
        "aud": [audience],
        "iat": now,
        "exp": now + ttl_seconds,
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(
        claims,
        key,
        algorithm="ES256",
        headers={"kid": _public_jwk(key)["kid"], "typ": "JWT"},
    )


def mint_delegation(
    state_dir: Path,
    issuer_domain: str,
    subject: str,
    actors: Sequence[str],
    *,
    audience: str = DEV_AUDIENCE_DEFAULT,
    ttl_seconds: int = 300,
    tenant: str | None = None,
    clock: Callable[[], float] = time.time,
) -> str:
    """Sign a delegation assertion (pdp.delegation) with the dev key of ``issuer_domain``:
    ``sub`` is ``subject``, ``act`` nests ``actors`` with the first (outermost) being the
    current agent, as RFC 8693 §4.1 orders them."""
    _check_domain(issuer_domain)
    if not actors:
        raise ValueError("a delegation names at least one actor")
    key_path = _domain_dir(state_dir, issuer_domain) / _KEY_FILE
    if not key_path.is_file():
        raise DevTrustError(f"trust domain {issuer_domain!r} has no dev signing key")
    key = _load_key(key_path)
    act: dict[str, Any] | None = None
    for actor in reversed(list(actors)):
        act = {"sub": actor} if act is None else {"sub": actor, "act": act}
    now = int(clock())
    claims: dict[str, Any] = {
        "iss": f"spiffe://{issuer_domain}",
        "sub": subject,
        "aud": [audience],
        "iat": now,
        "exp": now + ttl_seconds,
        "jti": secrets.token_urlsafe(16),
        "act": act,
    }
    if tenant is not None:
        claims["tenant"] = tenant
    return jwt.encode(
        claims, key, algorithm="ES256", headers={"kid": _public_jwk(key)["kid"], "typ": "JWT"}
    )
