"""JWT-SVID verification: a compact JWS from the gateway -> an :class:`Identity`.

Checks that must precede signature verification (alg, kid, sub -> trust domain -> key) use
the unverified header and claims; everything else (exp, nbf, aud, the sub again) is judged
only on a token whose signature has verified, so forged tokens report invalid_signature.
The error codes are listed in :mod:`pdp.identity`.
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
from typing import Any, Final

import jwt
from jwt.types import Options

from .bundles import JWT_SVID_ALGS, TrustBundles
from .result import Identity
from .spiffeid import clip, parse_spiffe_id, shorten

__all__ = ["MAX_TOKEN_LENGTH", "SVIDVerifier"]

#: Tokens longer than this (characters) are rejected before any parsing.
MAX_TOKEN_LENGTH: Final = 16 * 1024
#: JWS compact serialization: three unpadded base64url parts (RFC 7515 §3.1, §2).
_COMPACT_JWS_RE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
#: JWT-SVID spec §2: "Any header not described here ... MUST NOT be included".
_ALLOWED_HEADERS: Final = frozenset({"alg", "kid", "typ"})
_ALLOWED_TYPS: Final = frozenset({"JWT", "JOSE"})
#: NumericDates beyond this are refused: not exact as a double, and no real token's.
_MAX_NUMERIC_DATE: Final = 2**53 - 1
#: Default longest lifetime (exp - iat) of an accepted JWT-SVID, seconds.
DEFAULT_MAX_LIFETIME_S: Final = 86400


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
    (``nbf``) stay rejected. When the bundles change (:meth:`replace_bundles`, called by
    pdp.trustwatch on a bundle file change) every cached token of a changed trust domain
    is forgotten, so nothing verified under a removed key survives. A token's lifetime is
    bounded (``max_lifetime_s``), so neither is its time in the cache. Not thread-safe (one
    asyncio loop).
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
        """The trust bundles tokens are verified against now (replaced on a bundle file
        change, :meth:`replace_bundles`)."""
        return self._bundles

    @property
    def leeway_seconds(self) -> int:
        """Clock skew tolerated on exp/nbf, seconds."""
        return self._leeway

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
        except Exception as exc:  # boundary: anything unforeseen is a bug; fail closed
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
                f"header parameter {clip(extra[0])} is not permitted in a JWT-SVID",
            )
        typ = header.get("typ", "JWT")
        if not isinstance(typ, str) or typ not in _ALLOWED_TYPS:
            raise _Reject("authn.malformed", f"typ {clip(typ)} is not JWT or JOSE")
        if "alg" not in header:
            raise _Reject("authn.malformed", "token header has no alg")
        alg = header["alg"]
        needs = JWT_SVID_ALGS.get(alg) if isinstance(alg, str) else None
        if needs is None:
            raise _Reject("authn.alg_not_allowed", f"alg {clip(alg)} is not allowed")
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
        entry = self._bundles.trusted_key(domain, kid)
        if entry is None:
            raise _Reject(
                "authn.unknown_kid",
                f"no key with kid {clip(kid)} in the trust bundle of {domain!r}",
            )
        if needs != (entry.kty, entry.curve) or (entry.alg is not None and entry.alg != alg):
            raise _Reject(
                "authn.alg_not_allowed",
                f"alg {alg} cannot be used with key {clip(kid)} of {domain!r}",
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
                "authn.missing_claim", f"required claim {clip(exc.claim)} is missing"
            ) from None
        except jwt.InvalidAudienceError:
            raise _Reject(
                "authn.audience_mismatch",
                f"token audience does not include {self._audience!r}",
            ) from None
        except (jwt.InvalidAlgorithmError, jwt.InvalidKeyError) as exc:
            raise _Reject("authn.alg_not_allowed", shorten(str(exc))) from None
        except jwt.PyJWTError as exc:
            raise _Reject("authn.malformed", f"invalid token: {shorten(str(exc))}") from None

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
