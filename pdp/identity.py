"""Workload authentication: SPIFFE IDs, trust bundles and JWT-SVID verification.

The only thing the rest of the service needs from this module is an :class:`Identity`,
produced by :meth:`SVIDVerifier.verify` from whatever token the gateway sent. ``verify``
never raises: every problem becomes ``Identity.failure(code, message)``, which policies see
as a deny-worthy ``identity.error`` (fail closed).

Error codes (``Identity.error_code``)::

    authn.token_missing      no token (None or "")
    authn.malformed          not a compact JWS, > 16 KiB, bad base64/JSON, bad typ, a header
                             parameter other than alg/kid/typ, a claim of the wrong type
    authn.alg_not_allowed    alg outside RS/PS/ES 256/384/512 (none, HS*, EdDSA, ...), or an alg
                             the selected key cannot serve (RSA key + ES256, P-256 key + ES384,
                             a JWK whose own "alg" differs)
    authn.unknown_kid        no kid, or no key with that kid in the sub's trust domain bundle
    authn.invalid_spiffe_id  sub is not a SPIFFE ID, or names a trust domain and no workload
    authn.untrusted_domain   sub is in a trust domain with no configured bundle
    authn.invalid_signature  signature does not verify with the selected key
    authn.missing_claim      sub, exp or aud absent (or aud empty)
    authn.audience_mismatch  aud does not contain the configured audience
    authn.expired            exp + leeway <= now
    authn.not_yet_valid      nbf - leeway > now
    authn.issued_in_future   iat - leeway > now (a token minted by a clock far ahead, or forged
                             to outlive a key rotation)
    authn.lifetime_too_long  exp - iat (exp - now without iat) beyond the maximum SVID lifetime
                             (PDP_SVID_MAX_LIFETIME_S, 24 h by default): a stolen long-lived
                             token is not accepted, nor cached for its whole life
    authn.error              an unexpected internal failure (a bug); still a deny
    authn.unauthenticated    only from to_input() of an Identity(authenticated=False) built
                             without a code (the same fallback pdp.rules.authn uses)

Key/alg mismatch is reported as ``authn.alg_not_allowed`` rather than
``authn.invalid_signature``: it is decided from the header and the public bundle before any
cryptography runs, it tells an operator exactly what is wrong (an issuer signing with an
algorithm its key cannot produce), and it reveals nothing an attacker cannot read from the
bundle. PyJWT is only ever handed the one algorithm that key can serve.

Checks that must precede signature verification (alg, kid, sub -> trust domain -> key) use
the unverified header and claims; everything else (exp, nbf, aud, the sub again) is judged
only on a token whose signature has verified, so forged tokens report invalid_signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.types import Options

__all__ = [
    "Identity",
    "SVIDVerifier",
    "TrustBundleError",
    "TrustBundles",
    "parse_spiffe_id",
]

#: Tokens longer than this (characters) are rejected before any parsing.
MAX_TOKEN_LENGTH: Final = 16 * 1024
#: SPIFFE-ID spec §2.3: implementations must support IDs up to 2048 bytes; longer is refused.
MAX_SPIFFE_ID_LENGTH: Final = 2048
#: RFC 3986 host limit, which the SPIFFE-ID spec applies to trust domain names.
MAX_TRUST_DOMAIN_LENGTH: Final = 255
#: Bundle files larger than this are refused rather than read.
MAX_BUNDLE_FILE_BYTES: Final = 1024 * 1024
#: RSA keys shorter than this are refused in bundles (NIST SP 800-131A).
MIN_RSA_KEY_BITS: Final = 2048

_JWT_SVID_USE: Final = "jwt-svid"
#: NumericDates beyond this are refused: not exact as a double, and no real token's.
_MAX_NUMERIC_DATE: Final = 2**53 - 1
#: Default longest lifetime (exp - iat) of an accepted JWT-SVID, seconds.
DEFAULT_MAX_LIFETIME_S: Final = 86400
_SPIFFE_SCHEME: Final = "spiffe://"
_TRUST_DOMAIN_RE: Final = re.compile(r"[a-z0-9._-]+")
_PATH_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9._-]+")
#: JWS compact serialization: three unpadded base64url parts (RFC 7515 §3.1, §2).
_COMPACT_JWS_RE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_UNRESERVED_TD_HINT: Final = "lowercase letters, digits, '.', '-' and '_'"

#: JWT-SVID spec §2.1: the only permitted algs, with the key each needs.
#: ("RSA", None) for RSASSA (PKCS#1 v1.5 and PSS); ("EC", curve name) for ECDSA.
_ALG_KEYS: Final[Mapping[str, tuple[str, str | None]]] = {
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
#: JWT-SVID spec §2: "Any header not described here ... MUST NOT be included".
_ALLOWED_HEADERS: Final = frozenset({"alg", "kid", "typ"})
_ALLOWED_TYPS: Final = frozenset({"JWT", "JOSE"})
#: JWK members that only private (or secret) keys carry (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
_PRIVATE_JWK_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


# --------------------------------------------------------------------------- Identity


@dataclass(frozen=True, slots=True)
class Identity:
    """The outcome of authenticating one workload token.

    When ``authenticated`` is true the SPIFFE fields describe the verified ``sub``; when it
    is false only ``error_code`` ("authn.*") and ``error_message`` are meaningful.
    ``error_message`` is for humans and never contains the token.
    """

    authenticated: bool
    spiffe_id: str | None = None
    trust_domain: str | None = None
    path: tuple[str, ...] = ()
    expires_at: int | None = None
    jti: str | None = None
    kid: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    def to_input(self) -> dict[str, Any]:
        """The ``identity`` object of the OPA input (``pdp/schemas/opa-input.schema.json``)."""
        if not self.authenticated:
            return {
                "authenticated": False,
                "spiffe_id": None,
                "trust_domain": None,
                "path": None,
                "expires_at": None,
                "jti": None,
                "error": {
                    # an Identity(authenticated=False) built by hand: the policy's own fallback
                    "code": self.error_code or "authn.unauthenticated",
                    "message": self.error_message or "not authenticated",
                },
            }
        return {
            "authenticated": True,
            "spiffe_id": self.spiffe_id,
            "trust_domain": self.trust_domain,
            "path": list(self.path),
            "expires_at": self.expires_at,
            "jti": self.jti,
            "error": None,
        }

    @classmethod
    def failure(cls, code: str, message: str) -> Identity:
        """An unauthenticated identity carrying why (``code`` must start with "authn.")."""
        if not code.startswith("authn."):
            raise ValueError(f"identity error codes start with 'authn.', got {code!r}")
        return cls(authenticated=False, error_code=code, error_message=message)


# --------------------------------------------------------------------------- SPIFFE IDs


def _clip(value: object, limit: int = 80) -> str:
    """``repr`` of an untrusted value, bounded so it can go into messages and logs."""
    return _shorten(repr(value), limit)


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_trust_domain(domain: str) -> None:
    if not domain:
        raise ValueError("trust domain is missing")
    if len(domain) > MAX_TRUST_DOMAIN_LENGTH:
        raise ValueError(f"trust domain is longer than {MAX_TRUST_DOMAIN_LENGTH} characters")
    if "@" in domain:
        raise ValueError("userinfo is not allowed in a SPIFFE ID")
    if ":" in domain:
        raise ValueError("a port is not allowed in a SPIFFE ID trust domain")
    if not _TRUST_DOMAIN_RE.fullmatch(domain):
        raise ValueError(
            f"trust domain {_clip(domain)} may contain only {_UNRESERVED_TD_HINT}"
            + (" (it must be lowercase)" if domain.lower() != domain else "")
        )


def parse_spiffe_id(value: str) -> tuple[str, tuple[str, ...]]:
    """Validate a SPIFFE ID and split it into ``(trust_domain, path_segments)``.

    Follows the SPIFFE-ID spec (as enforced by go-spiffe): scheme exactly ``spiffe``; a
    non-empty trust domain of ``[a-z0-9._-]`` (no userinfo, no port); no query or fragment;
    each path segment non-empty, of ``[A-Za-z0-9._-]``, and neither ``.`` nor ``..`` (so no
    trailing slash and no percent-encoding). ``spiffe://example.org`` (no path) is a valid
    SPIFFE ID naming the trust domain itself and yields ``()``; callers wanting a workload
    must check the path. Raises ``ValueError`` saying what is wrong.
    """
    if not isinstance(value, str):
        raise ValueError(f"a SPIFFE ID must be a string, not {type(value).__name__}")
    if not value:
        raise ValueError("SPIFFE ID is empty")
    if not value.isascii():
        raise ValueError("SPIFFE ID must be ASCII")
    if len(value) > MAX_SPIFFE_ID_LENGTH:
        raise ValueError(f"SPIFFE ID is longer than {MAX_SPIFFE_ID_LENGTH} bytes")
    if not value.startswith(_SPIFFE_SCHEME):
        raise ValueError(f"{_clip(value)} is not a SPIFFE ID: the scheme must be 'spiffe://'")
    if "?" in value:
        raise ValueError("a query is not allowed in a SPIFFE ID")
    if "#" in value:
        raise ValueError("a fragment is not allowed in a SPIFFE ID")
    domain, slash, path = value[len(_SPIFFE_SCHEME) :].partition("/")
    _check_trust_domain(domain)
    if not slash:
        return domain, ()
    segments = tuple(path.split("/"))
    for index, segment in enumerate(segments):
        if not segment:
            where = "a trailing '/'" if index == len(segments) - 1 else "an empty segment ('//')"
            raise ValueError(f"SPIFFE ID path has {where}")
        if segment in (".", ".."):
            raise ValueError(f"SPIFFE ID path segment {segment!r} is not allowed")
        if not _PATH_SEGMENT_RE.fullmatch(segment):
            raise ValueError(
                f"SPIFFE ID path segment {_clip(segment)} may contain only letters, digits, "
                "'.', '-' and '_'"
            )
    return domain, segments


# --------------------------------------------------------------------------- trust bundles


class TrustBundleError(ValueError):
    """A trust bundle file or document is unusable (names the domain and the problem)."""


@dataclass(frozen=True, slots=True)
class _TrustedKey:
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

    def __init__(self, keys: Mapping[str, Mapping[str, _TrustedKey]]) -> None:
        """Use :meth:`from_documents` or :meth:`from_files`."""
        self._keys: dict[str, dict[str, _TrustedKey]] = {
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
        entry = self._entry(domain, kid)
        return None if entry is None else entry.public_key

    def _entry(self, domain: str, kid: str) -> _TrustedKey | None:
        by_kid = self._keys.get(domain)
        return None if by_kid is None else by_kid.get(kid)

    def __repr__(self) -> str:
        counts = ", ".join(f"{d}: {len(k)} key(s)" for d, k in sorted(self._keys.items()))
        return f"TrustBundles({counts})"


def _load_bundle(domain: str, doc: Mapping[str, Any]) -> dict[str, _TrustedKey]:
    def fail(problem: str) -> TrustBundleError:
        return TrustBundleError(f"trust bundle for {domain!r}: {problem}")

    if not isinstance(domain, str):
        raise TrustBundleError(f"trust domain names are strings, got {_clip(domain)}")
    try:
        _check_trust_domain(domain)
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

    keys: dict[str, _TrustedKey] = {}
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
) -> _TrustedKey:
    curve: str | None = None
    if kty == "EC":
        crv = jwk.get("crv")
        if not isinstance(crv, str) or crv not in _EC_CURVES:
            raise fail(f"{where} uses curve {_clip(crv)}; only P-256, P-384, P-521 are allowed")
        curve, parse_alg = _EC_CURVES[crv]
    else:
        parse_alg = "RS256"  # parsing only; the token's alg is checked per verification
    alg = jwk.get("alg")
    if alg is not None:
        needs = _ALG_KEYS.get(alg) if isinstance(alg, str) else None
        if needs is None or needs != (kty, curve):
            raise fail(f"{where} declares alg {_clip(alg)}, which is not a JWT-SVID alg for it")
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
    return _TrustedKey(public_key=parsed, kty=kty, curve=curve, alg=alg)


# --------------------------------------------------------------------------- verification


class _Reject(Exception):
    """Internal: stop verification with this error code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 §2) as a float, None if absent; _Reject if not one."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Reject("authn.malformed", f"claim {name!r} must be a number (NumericDate)")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or abs(number) > _MAX_NUMERIC_DATE:
        raise _Reject("authn.malformed", f"claim {name!r} must be a finite number below 2^53")
    return number


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The unverified header and claims, needed to choose the key; _Reject if not a JWS.

    Only a pre-parse: ``jwt.decode`` parses the token again (strictly) and verifies it, and
    everything read here is either re-checked by it (alg, sub) or only selects which trusted
    key of the sub's own domain to try (kid). The single-pass regex keeps junk cheap to
    refuse (PyJWT's base64 alphabet check is a per-character Python loop).
    """
    if not _COMPACT_JWS_RE.fullmatch(token):
        raise _Reject("authn.malformed", "token is not a compact JWS (header.payload.signature)")
    encoded_header, encoded_claims, _ = token.split(".")
    parts: list[dict[str, Any]] = []
    for name, encoded in (("header", encoded_header), ("payload", encoded_claims)):
        try:
            decoded = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        except (ValueError, RecursionError):  # binascii.Error and JSONDecodeError included
            raise _Reject("authn.malformed", f"token {name} is not base64url JSON") from None
        if not isinstance(decoded, dict):
            raise _Reject("authn.malformed", f"token {name} is not a JSON object")
        parts.append(decoded)
    return parts[0], parts[1]


class SVIDVerifier:
    """Verifies JWT-SVIDs against trust bundles for one audience; caches successes.

    Cache: successful results are kept in an LRU of at most ``cache_size`` entries keyed by
    the SHA-256 of the token (32 bytes a key however long the token, and no bearer token
    kept in memory), until the token's ``exp`` (+ leeway). A hit re-checks ``exp`` against
    the clock, so cached tokens still expire. Failures are not cached: parse-level
    rejections are already cheap; caching bad-signature results would let anyone who can
    send tokens flush good entries with junk, and would make a token that was merely early
    (``nbf``) stay rejected. The cache lives and dies with the verifier, and the verifier
    with its (immutable) bundles: after a key rotation or removal build a new verifier, and
    nothing verified under the old keys survives. Not thread-safe (one asyncio loop).
    """

    def __init__(
        self,
        bundles: TrustBundles,
        audience: str,
        *,
        leeway_seconds: int = 30,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
        max_lifetime_s: float = DEFAULT_MAX_LIFETIME_S,
    ) -> None:
        if not isinstance(audience, str) or not audience:
            raise ValueError("audience must be a non-empty string")
        if leeway_seconds < 0:
            raise ValueError("leeway_seconds must be >= 0")
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self._bundles = bundles
        self._domains = bundles.domains()
        self._audience = audience
        self._leeway = leeway_seconds
        self._cache_size = cache_size
        self._clock = clock
        self._max_lifetime = max_lifetime_s
        # digest -> (identity, exp as float)
        self._cache: OrderedDict[bytes, tuple[Identity, float]] = OrderedDict()
        # Time claims are checked here against self._clock (PyJWT would use the wall clock);
        # PyJWT checks the signature, presence of sub/exp/aud, aud, and sub/jti types.
        self._options: Options = {
            "verify_signature": True,
            "require": ["sub", "exp", "aud"],
            "verify_aud": True,
            "strict_aud": False,
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_iss": False,
            "verify_sub": True,
            "verify_jti": True,
            "enforce_minimum_key_length": True,
        }

    @property
    def audience(self) -> str:
        """The audience every accepted token's ``aud`` contains."""
        return self._audience

    @property
    def bundles(self) -> TrustBundles:
        """The trust bundles tokens are verified against now."""
        return self._bundles

    def replace_bundles(self, bundles: TrustBundles, changed: set[str]) -> int:
        """Verify against ``bundles`` from now on, and forget every cached token of the
        trust domains in ``changed`` (a removed key must stop verifying at once). Returns
        how many cached tokens were dropped."""
        self._bundles = bundles
        self._domains = bundles.domains()
        doomed = [d for d, (ident, _) in self._cache.items() if ident.trust_domain in changed]
        for digest in doomed:
            del self._cache[digest]
        return len(doomed)

    def verify(self, token: str | None) -> Identity:
        """Authenticate ``token``; never raises (failures are ``Identity.failure``)."""
        try:
            return self._verify(token)
        except _Reject as rejection:
            return Identity.failure(rejection.code, rejection.message)
        except Exception as exc:  # anything unforeseen is a bug: fail closed, never raise
            return Identity.failure(
                "authn.error", f"token verification failed unexpectedly ({type(exc).__name__})"
            )

    def _verify(self, token: str | None) -> Identity:
        if token is None or token == "":
            raise _Reject("authn.token_missing", "no agent token was presented")
        if not isinstance(token, str):
            raise _Reject("authn.malformed", "the token must be a string")
        if len(token) > MAX_TOKEN_LENGTH:
            raise _Reject("authn.malformed", f"token is longer than {MAX_TOKEN_LENGTH} characters")
        if not token.isascii():
            raise _Reject("authn.malformed", "token contains non-ASCII characters")

        digest = hashlib.sha256(token.encode("ascii")).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            identity, exp = cached
            if self._clock() >= exp + self._leeway:
                del self._cache[digest]
                raise _Reject("authn.expired", "token has expired")
            self._cache.move_to_end(digest)
            return identity

        identity, exp = self._verify_uncached(token)
        if self._cache_size:
            self._cache[digest] = (identity, exp)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return identity

    def _verify_uncached(self, token: str) -> tuple[Identity, float]:
        header, claims = _peek(token)
        extra = sorted(set(header) - _ALLOWED_HEADERS)
        if extra:
            raise _Reject(
                "authn.malformed",
                f"header parameter {_clip(extra[0])} is not permitted in a JWT-SVID",
            )
        typ = header.get("typ", "JWT")
        if not isinstance(typ, str) or typ not in _ALLOWED_TYPS:
            raise _Reject("authn.malformed", f"typ {_clip(typ)} is not JWT or JOSE")
        if "alg" not in header:
            raise _Reject("authn.malformed", "token header has no alg")
        alg = header["alg"]
        needs = _ALG_KEYS.get(alg) if isinstance(alg, str) else None
        if needs is None:
            raise _Reject("authn.alg_not_allowed", f"alg {_clip(alg)} is not allowed")
        kid = header.get("kid")
        if kid is None or kid == "":
            raise _Reject("authn.unknown_kid", "token header has no kid")
        if not isinstance(kid, str):
            raise _Reject("authn.malformed", "kid must be a string")

        sub = claims.get("sub")
        if sub is None:
            raise _Reject("authn.missing_claim", "required claim 'sub' is missing")
        try:
            domain, path = parse_spiffe_id(sub)
        except ValueError as exc:
            raise _Reject(
                "authn.invalid_spiffe_id", f"sub is not a valid SPIFFE ID: {exc}"
            ) from None
        if not path:
            raise _Reject(
                "authn.invalid_spiffe_id", "sub names a trust domain, not a workload (no path)"
            )
        if domain not in self._domains:
            raise _Reject("authn.untrusted_domain", f"trust domain {domain!r} is not trusted")
        entry = self._bundles._entry(domain, kid)
        if entry is None:
            raise _Reject(
                "authn.unknown_kid",
                f"no key with kid {_clip(kid)} in the trust bundle of {domain!r}",
            )
        if needs != (entry.kty, entry.curve) or (entry.alg is not None and entry.alg != alg):
            raise _Reject(
                "authn.alg_not_allowed",
                f"alg {alg} cannot be used with key {_clip(kid)} of {domain!r}",
            )

        try:
            verified = jwt.decode(
                token,
                key=entry.public_key,
                algorithms=[alg],
                options=self._options,
                audience=self._audience,
            )
        except jwt.InvalidSignatureError:
            raise _Reject("authn.invalid_signature", "token signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _Reject(
                "authn.missing_claim", f"required claim {_clip(exc.claim)} is missing"
            ) from None
        except jwt.InvalidAudienceError:
            raise _Reject(
                "authn.audience_mismatch",
                f"token audience does not include {self._audience!r}",
            ) from None
        except (jwt.InvalidAlgorithmError, jwt.InvalidKeyError) as exc:
            raise _Reject("authn.alg_not_allowed", _shorten(str(exc))) from None
        except jwt.PyJWTError as exc:
            raise _Reject("authn.malformed", f"invalid token: {_shorten(str(exc))}") from None

        if verified.get("sub") != sub:  # same bytes, so never; but identity comes from here
            raise _Reject("authn.malformed", "sub changed between parse and verification")
        exp = _numeric_date(verified, "exp")
        if exp is None:  # required above; kept so the type is narrowed without assert
            raise _Reject("authn.missing_claim", "required claim 'exp' is missing")
        nbf = _numeric_date(verified, "nbf")
        iat = _numeric_date(verified, "iat")
        now = self._clock()
        if now >= exp + self._leeway:
            raise _Reject("authn.expired", "token has expired")
        if nbf is not None and nbf - self._leeway > now:
            raise _Reject("authn.not_yet_valid", "token is not valid yet (nbf)")
        if iat is not None and iat - self._leeway > now:
            raise _Reject("authn.issued_in_future", "token is issued in the future (iat)")
        lifetime = exp - (iat if iat is not None else now)
        if lifetime > self._max_lifetime:
            raise _Reject(
                "authn.lifetime_too_long",
                f"token lifetime {lifetime:.0f} s exceeds the maximum {self._max_lifetime:.0f} s",
            )
        jti = verified.get("jti")
        identity = Identity(
            authenticated=True,
            spiffe_id=sub,
            trust_domain=domain,
            path=path,
            expires_at=math.floor(exp),
            jti=jti if isinstance(jti, str) else None,
            kid=kid,
        )
        return identity, exp
