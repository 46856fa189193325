"""Trust bundles: the set of trust domains and, per domain, the JWT-SVID keys (JWKS)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..errors import TrustBundleError
from .spiffeid import check_trust_domain, clip

__all__ = [
    "JWT_SVID_ALGS",
    "MAX_BUNDLE_FILE_BYTES",
    "MIN_RSA_KEY_BITS",
    "TrustBundleError",
    "TrustBundles",
    "TrustedKey",
]

#: Bundle files larger than this are refused rather than read.
MAX_BUNDLE_FILE_BYTES: Final = 1024 * 1024
#: RSA keys shorter than this are refused in bundles (NIST SP 800-131A).
MIN_RSA_KEY_BITS: Final = 2048

_JWT_SVID_USE: Final = "jwt-svid"

#: JWT-SVID spec §2.1: the only permitted algs, with the key each needs.
#: ("RSA", None) for RSASSA (PKCS#1 v1.5 and PSS); ("EC", curve name) for ECDSA.
JWT_SVID_ALGS: Final[Mapping[str, tuple[str, str | None]]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "secp256r1"),
    "ES384": ("EC", "secp384r1"),
    "ES512": ("EC", "secp521r1"),
}
#: JWK "crv" -> (cryptography curve name, the ES alg that curve serves).
_EC_CURVES: Final[Mapping[str, tuple[str, str]]] = {
    "P-256": ("secp256r1", "ES256"),
    "P-384": ("secp384r1", "ES384"),
    "P-521": ("secp521r1", "ES512"),
}
#: JWK members that only private (or secret) keys carry (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
_PRIVATE_JWK_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key from a bundle, with the algorithm family it serves."""

    public_key: PublicKey
    kty: str  # "RSA" or "EC"
    curve: str | None  # cryptography curve name for EC keys
    alg: str | None  # the JWK's own "alg", which then binds the key to that alg


class TrustBundles:
    """Trust domain -> {kid -> public key} for keys usable for JWT-SVIDs. Immutable.

    Which JWKs are kept (SPIFFE Trust Domain and Bundle spec §4):

    * ``use == "jwt-svid"``: kept. Other ``use`` values (``x509-svid``, ``sig``, ...) are
      ignored, as the spec requires for uses a client does not handle.
    * no ``use``: kept only when the document is a plain JWKS, i.e. has no ``spiffe_*``
      members (a JWKS published for JWT-SVID verification, e.g. exported by hand). In a
      SPIFFE bundle ``use`` is mandatory, so a key without it is ignored there.
    * ``kty`` other than ``RSA``/``EC`` (e.g. ``OKP``): ignored (unknown to JWT-SVID).

    Refused with :class:`TrustBundleError`, whatever the key's ``use``, because the bundle
    itself is then wrong or leaking: private key material (``d``, ``p``, ...), symmetric
    ``oct`` keys. Refused for kept keys: missing/empty ``kid``, duplicate ``kid`` within a
    domain, an ``alg`` that is not a JWT-SVID alg for that key, EC curves other than
    P-256/384/521, RSA keys under 2048 bits, unparseable key material, and a domain left
    with no usable key (every token from it would fail, so say so at start-up).
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, Mapping[str, TrustedKey]]) -> None:
        """Use :meth:`from_documents` or :meth:`from_files`."""
        self._keys: dict[str, dict[str, TrustedKey]] = {
            domain: dict(by_kid) for domain, by_kid in keys.items()
        }

    @classmethod
    def from_documents(cls, docs: Mapping[str, Mapping[str, Any]]) -> TrustBundles:
        """Build from ``{trust_domain: bundle_document}`` (parsed JSON)."""
        return cls({domain: _load_bundle(domain, doc) for domain, doc in docs.items()})

    @classmethod
    def from_files(cls, files: Mapping[str, Path]) -> TrustBundles:
        """Build from ``{trust_domain: path to a bundle JSON file}``."""
        docs: dict[str, Mapping[str, Any]] = {}
        for domain, path in files.items():
            try:
                with open(path, "rb") as handle:
                    raw = handle.read(MAX_BUNDLE_FILE_BYTES + 1)
            except OSError as exc:
                raise TrustBundleError(
                    f"trust bundle for {domain!r} at {str(path)!r} cannot be read: "
                    f"{exc.strerror or exc}"
                ) from exc
            if len(raw) > MAX_BUNDLE_FILE_BYTES:
                raise TrustBundleError(
                    f"trust bundle for {domain!r} at {str(path)!r} is larger than "
                    f"{MAX_BUNDLE_FILE_BYTES} bytes"
                )
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise TrustBundleError(
                    f"trust bundle for {domain!r} at {str(path)!r} is not valid JSON: {exc}"
                ) from exc
            if not isinstance(doc, dict):
                raise TrustBundleError(
                    f"trust bundle for {domain!r} at {str(path)!r} must be a JSON object (a JWKS)"
                )
            docs[domain] = doc
        return cls.from_documents(docs)

    def domains(self) -> frozenset[str]:
        """The configured trust domains."""
        return frozenset(self._keys)

    def key(self, domain: str, kid: str) -> Any | None:
        """The public key (a ``cryptography`` key object) for ``kid`` in ``domain``, if any."""
        entry = self.trusted_key(domain, kid)
        return None if entry is None else entry.public_key

    def trusted_key(self, domain: str, kid: str) -> TrustedKey | None:
        """The key ``kid`` of ``domain`` with the algorithm family it serves, if any."""
        by_kid = self._keys.get(domain)
        return None if by_kid is None else by_kid.get(kid)

    def __repr__(self) -> str:
        counts = ", ".join(f"{d}: {len(k)} key(s)" for d, k in sorted(self._keys.items()))
        return f"TrustBundles({counts})"


def _load_bundle(domain: str, doc: Mapping[str, Any]) -> dict[str, TrustedKey]:
    def fail(problem: str) -> TrustBundleError:
        return TrustBundleError(f"trust bundle for {domain!r}: {problem}")

    if not isinstance(domain, str):
        raise TrustBundleError(f"trust domain names are strings, got {clip(domain)}")
    try:
        check_trust_domain(domain)
    except ValueError as exc:
        raise fail(f"invalid trust domain name: {exc}") from None
    if not isinstance(doc, Mapping):
        raise fail("the document must be a JSON object (a JWKS)")
    for member in ("spiffe_sequence", "spiffe_refresh_hint"):
        value = doc.get(member)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise fail(f"{member!r} must be an integer")
    jwks = doc.get("keys")
    if not isinstance(jwks, list):
        raise fail("'keys' must be present and be a list of JWKs")
    is_spiffe_bundle = any(str(name).startswith("spiffe_") for name in doc)

    keys: dict[str, TrustedKey] = {}
    for index, jwk in enumerate(jwks):
        where = f"keys[{index}]"
        if not isinstance(jwk, Mapping):
            raise fail(f"{where} is not a JSON object")
        private = sorted(_PRIVATE_JWK_MEMBERS & set(jwk))
        if private:
            raise fail(
                f"{where} contains private key material ({', '.join(private)}); "
                "bundles must hold public keys only"
            )
        kty = jwk.get("kty")
        if kty == "oct":
            raise fail(f"{where} is a symmetric 'oct' key; JWT-SVIDs use public keys only")
        use = jwk.get("use")
        if use != _JWT_SVID_USE and not (use is None and not is_spiffe_bundle):
            continue  # x509-svid, unknown uses, or no use in a SPIFFE bundle: ignore
        if kty not in ("RSA", "EC"):
            continue  # unknown / unsupported key type: ignore (bundle spec §4.2.1)
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise fail(f"{where} ({kty}, use {use!r}) has no 'kid'; JWT-SVID keys need one")
        if kid in keys:
            raise fail(f"kid {kid!r} appears more than once")
        keys[kid] = _parse_jwk(jwk, kty, f"{where} (kid {kid!r})", fail)
    if not keys:
        raise fail("no keys usable for JWT-SVIDs (need RSA or EC keys with use 'jwt-svid')")
    return keys


def _parse_jwk(
    jwk: Mapping[str, Any],
    kty: str,
    where: str,
    fail: Callable[[str], TrustBundleError],
) -> TrustedKey:
    curve: str | None = None
    if kty == "EC":
        crv = jwk.get("crv")
        if not isinstance(crv, str) or crv not in _EC_CURVES:
            raise fail(f"{where} uses curve {clip(crv)}; only P-256, P-384, P-521 are allowed")
        curve, parse_alg = _EC_CURVES[crv]
    else:
        parse_alg = "RS256"  # parsing only; the token's alg is checked per verification
    alg = jwk.get("alg")
    if alg is not None:
        needs = JWT_SVID_ALGS.get(alg) if isinstance(alg, str) else None
        if needs is None or needs != (kty, curve):
            raise fail(f"{where} declares alg {clip(alg)}, which is not a JWT-SVID alg for it")
    try:
        parsed = jwt.PyJWK(dict(jwk), algorithm=parse_alg).key
    except (jwt.PyJWTError, TypeError, ValueError) as exc:
        raise fail(f"{where} is not a valid {kty} public key: {exc}") from None
    if kty == "RSA":
        if not isinstance(parsed, rsa.RSAPublicKey):
            raise fail(f"{where} is not an RSA public key")
        if parsed.key_size < MIN_RSA_KEY_BITS:
            raise fail(f"{where} is a {parsed.key_size}-bit RSA key; at least 2048 is required")
    elif not isinstance(parsed, ec.EllipticCurvePublicKey) or parsed.curve.name != curve:
        raise fail(f"{where} is not an EC public key on {jwk.get('crv')}")
    return TrustedKey(public_key=parsed, kty=kty, curve=curve, alg=alg)
