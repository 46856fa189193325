"""The target library, a PEP (policy enforcement point) where the call lands: verify an
agent-pdp credential at the tool or API itself.

A tool or API behind the gateway checks every call's credential itself, so a caller that
bypasses the gateway (or replays a credential for another tool or operation) is refused:

* **offline**, on every call: signature against the PDP's JWKS (cached; fetched again on
  an unknown ``kid``, at most once per ``min_refresh_interval_s``), ``typ`` is
  ``txn+jwt``, ``iss`` is the PDP, ``aud`` is this service, ``scope`` covers the operation
  being served, ``exp``/``nbf`` with a small leeway;
* **online**, when the credential carries ``"recheck_at_target": true`` (the policy's
  obligation for high-risk actions): the PDP's introspection endpoint must also say
  ``active`` (not revoked, agent not disabled). If it cannot be asked, the call is refused.

Three ways in:

* :func:`verify_credential` — a plain, synchronous function over a key lookup (no I/O);
* :class:`CredentialVerifier` — async: JWKS cache plus introspection;
* :func:`credential_middleware` — an aiohttp middleware that answers 401/403 (RFC 6750)
  and puts the verified claims in ``request[CLAIMS]``.

Error codes (:attr:`CredentialError.code`)::

    missing             no Authorization: Bearer credential            401
    malformed           not a compact JWS, bad base64/JSON, bad claim types
    wrong_type          typ is not txn+jwt (e.g. an agent's JWT-SVID)
    alg_not_allowed     alg is not ES256/384/512 or not the key's alg
    unknown_kid         kid not in the PDP's JWKS (after a refresh)
    invalid_signature   signature does not verify
    wrong_issuer        iss is not the PDP
    expired             exp + leeway <= now
    not_yet_valid       nbf - leeway > now
    wrong_audience      aud is not this service                        401
    insufficient_scope  scope does not cover the operation             403
    inactive            introspection says revoked / agent disabled    401
    recheck_unavailable introspection required but not configured or not reachable   401
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aiohttp
import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from jwt.exceptions import PyJWTError

from .credential_token import (
    CREDENTIAL_TYP,
    MAX_CREDENTIAL_LENGTH,
    CredentialError,
    KeyLookup,
    action_scope,
    peek_header,
    verify_credential,
)
from .jws import ALGORITHMS

__all__ = [
    "CLAIMS",
    "MAX_CREDENTIAL_LENGTH",
    "OUTCOME_CREDENTIAL_HEADER",
    "KeyLookup",
    "peek_header",
    "CREDENTIAL_TYP",
    "CredentialError",
    "CredentialVerifier",
    "JWKSCache",
    "action_scope",
    "credential_middleware",
    "verify_credential",
]

log = logging.getLogger("pdp.target")

#: Where credential_middleware puts the verified claims.
CLAIMS: Final = web.RequestKey("pdp_credential_claims", dict)


class JWKSCache:
    """The PDP's JWKS, fetched on demand: on an unknown kid (at most once per
    ``min_refresh_interval_s``, so junk kids cannot make a target hammer the PDP) and when
    older than ``max_age_s``."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        min_refresh_interval_s: float = 1.0,
        max_age_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.session = session
        self.min_refresh_interval_s = min_refresh_interval_s
        self.max_age_s = max_age_s
        self.clock = clock
        self.fetches = 0
        self._keys: dict[str, tuple[str, ec.EllipticCurvePublicKey]] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    def lookup(self, kid: str) -> tuple[str, ec.EllipticCurvePublicKey] | None:
        return self._keys.get(kid)

    async def ensure(self, kid: str) -> None:
        """Make sure ``kid`` is loaded if the PDP has it (within the rate limit)."""
        now = self.clock()
        fresh = self._fetched_at is not None and now - self._fetched_at < self.max_age_s
        if kid in self._keys and fresh:
            return
        async with self._lock:
            now = self.clock()
            if (
                kid in self._keys
                and self._fetched_at is not None
                and (now - self._fetched_at < self.max_age_s)
            ):
                return
            if (
                self._fetched_at is not None
                and now - self._fetched_at < self.min_refresh_interval_s
            ):
                return  # fetched very recently: an unknown kid stays unknown for now
            await self._fetch()

    async def _fetch(self) -> None:
        self._fetched_at = self.clock()
        self.fetches += 1
        try:
            async with self.session.get(self.url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                doc = orjson.loads(await resp.read())
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            log.warning("cannot fetch the PDP JWKS from %s: %s", self.url, exc)
            return  # keep the keys we have
        keys: dict[str, tuple[str, ec.EllipticCurvePublicKey]] = {}
        for jwk in doc.get("keys", []) if isinstance(doc, dict) else []:
            if not isinstance(jwk, dict) or jwk.get("alg") not in ALGORITHMS:
                continue
            kid = jwk.get("kid")
            try:
                parsed = ECAlgorithm.from_jwk(jwk)
            except (PyJWTError, ValueError, TypeError, KeyError):  # an unusable key: ignored
                continue
            if isinstance(kid, str) and isinstance(parsed, ec.EllipticCurvePublicKey):
                keys[kid] = (jwk["alg"], parsed)
        self._keys = keys


class CredentialVerifier:
    """Offline verification with a cached JWKS, plus introspection when the credential
    asks for a recheck. One instance per target service; close it on shutdown."""

    def __init__(
        self,
        *,
        pdp_url: str,
        audience: str,
        issuer: str = "agent-pdp",
        introspection_token: str | None = None,
        leeway_s: float = 30,
        min_refresh_interval_s: float = 1.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        base = pdp_url.rstrip("/")
        self.audience = audience
        self.issuer = issuer
        self.leeway_s = leeway_s
        self.introspect_url = base + "/v1/credentials/introspect"
        self.introspection_token = introspection_token
        self._own_session = session is None
        self.session = session or aiohttp.ClientSession()
        self.jwks = JWKSCache(
            base + "/.well-known/jwks.json",
            self.session,
            min_refresh_interval_s=min_refresh_interval_s,
        )

    async def close(self) -> None:
        if self._own_session:
            await self.session.close()

    async def verify(self, token: str, scope: str | None) -> dict[str, Any]:
        """Verify ``token`` for ``scope``; introspect when it carries recheck_at_target."""
        kid = peek_header(token).get("kid")
        if isinstance(kid, str) and kid:
            await self.jwks.ensure(kid)
        claims = verify_credential(
            token,
            self.jwks.lookup,
            issuer=self.issuer,
            audience=self.audience,
            scope=scope,
            leeway_s=self.leeway_s,
        )
        if claims.get("recheck_at_target") is True and not await self.introspect(token):
            raise CredentialError("inactive", "the PDP says the credential is no longer active")
        return claims

    async def introspect(self, token: str) -> bool:
        """Ask the PDP (RFC 7662) whether ``token`` is active; fail closed."""
        if not self.introspection_token:
            raise CredentialError(
                "recheck_unavailable",
                "the credential requires a recheck but no introspection token is configured",
            )
        headers = {"Authorization": f"Bearer {self.introspection_token}"}
        try:
            async with self.session.post(
                self.introspect_url,
                data={"token": token},
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=2),
            ) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                body = orjson.loads(await resp.read())
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise CredentialError(
                "recheck_unavailable", f"the PDP could not be asked ({exc})"
            ) from None
        return isinstance(body, dict) and body.get("active") is True


#: The header a PEP reports an outcome's credential in (POST /v1/decisions/{id}/outcome),
#: leaving Authorization to its caller key (pdp.outcomes, pdp.mcp.pdp_client).
OUTCOME_CREDENTIAL_HEADER: Final = "X-PDP-Credential"


def bearer_token(request: web.Request) -> str | None:
    """The credential of ``Authorization: Bearer <token>``, or None: also when the header
    is sent more than once (a proxy reading the last value and this target the first
    would disagree on who is calling) or is not visible ASCII."""
    values = request.headers.getall("Authorization", [])
    if len(values) != 1 or not values[0].isascii() or not values[0].isprintable():
        return None
    scheme, _, value = values[0].partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def credential_middleware(
    verifier: CredentialVerifier, scope_for: Callable[[web.Request], str | None]
) -> Middleware:
    """An aiohttp middleware requiring a valid credential on every route for which
    ``scope_for(request)`` names a scope (None: the route is open, e.g. a health check).

    401 ``invalid_token`` for a missing or bad credential, 403 ``insufficient_scope`` when
    it does not cover the route, each with a ``WWW-Authenticate: Bearer`` header (RFC 6750).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        scope = scope_for(request)
        if scope is None:
            return await handler(request)
        token = bearer_token(request)
        try:
            if token is None:
                raise CredentialError("missing", "no Authorization: Bearer credential")
            claims = await verifier.verify(token, scope)
        except CredentialError as exc:
            status = 403 if exc.code == "insufficient_scope" else 401
            error = "insufficient_scope" if status == 403 else "invalid_token"
            challenge = f'Bearer error="{error}", error_description="{exc.code}"'
            if status == 403:
                challenge += f', scope="{scope}"'
            return web.json_response(
                {"error": error, "reason": exc.code, "message": exc.message},
                status=status,
                headers={"WWW-Authenticate": challenge},
            )
        request[CLAIMS] = claims
        return await handler(request)

    return middleware
