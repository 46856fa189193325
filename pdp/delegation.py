"""Delegation chains: who asked whom, as an RFC 8693 ``act`` nesting, verified.

When an agent acts for a user, possibly through other agents, the gateway passes the
*delegation assertion* it was given (``agent.delegation`` in the decision request; the
MCP gateway takes it from the ``X-PDP-Delegation`` header or ``_meta``). It is a JWT
signed by a key of a configured trust domain (the same bundles as JWT-SVIDs)::

    header  {"alg": "ES256", "kid": <kid in the issuing domain's bundle>, "typ": "JWT"}
    claims  iss   "spiffe://<trust domain>"   the issuer; its bundle verifies the signature
            sub   the user (or service) the chain acts for, e.g. "user:alice@acme.example"
            aud   contains the PDP's audience (PDP_AUDIENCE)
            exp   required; nbf/iat optional; exp - iat (or exp - now) at most the SVID
                  lifetime bound (PDP_SVID_MAX_LIFETIME_S, 24 h), iat not in the future
            tenant  optional: the user's tenant
            act   {"sub": <current agent>, "act": {"sub": <the agent that delegated>, ...}}

The outermost ``act`` is the current actor (RFC 8693 §4.1), so ``actors[0]`` must be the
verified agent itself. Policies see ``input.chain`` (pdp/schemas/opa-input.schema.json)::

    {"present": bool, "verified": bool, "error": {"code", "message"} | null,
     "subject": str | null, "subject_tenant": str | null, "issuer": str | null,
     "actors": [{"sub": str, "trust_domain": str | null}, ...],   outermost first
     "depth": int}

Nothing here raises: a bad assertion is ``verified: false`` with a ``delegation.*`` error
code, which the library denies (fail closed). An absent assertion is ``present: false``.
Nesting deeper than :data:`MAX_PARSED_DEPTH` is refused outright; the policy's own limit
(``data.delegation.max_depth``) is lower.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import jwt

from .identity import TrustBundles, parse_spiffe_id
from .identity.svid import DEFAULT_MAX_LIFETIME_S
from .normalize import NO_CHAIN

__all__ = ["MAX_PARSED_DEPTH", "DelegationVerifier", "absent_chain"]

#: Deepest ``act`` nesting parsed at all; policies set a lower limit.
MAX_PARSED_DEPTH: Final = 16
MAX_ASSERTION_LENGTH: Final = 16 * 1024
_ALGS: Final = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_MAX_SUB: Final = 2048


def absent_chain() -> dict[str, Any]:
    """``input.chain`` when the request carries no delegation assertion."""
    return dict(NO_CHAIN, actors=[])


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


class DelegationVerifier:
    """Verifies delegation assertions against the trust bundles, for one audience."""

    def __init__(
        self,
        bundles: TrustBundles,
        audience: str,
        *,
        leeway_seconds: int = 30,
        clock: Callable[[], float] = time.time,
        max_lifetime_s: float = DEFAULT_MAX_LIFETIME_S,
    ) -> None:
        self.bundles = bundles
        self.audience = audience
        self.leeway = leeway_seconds
        self.clock = clock
        #: Longest ``exp - iat`` (or ``exp - now``) accepted, as for JWT-SVIDs: an assertion
        #: signed by the same keys must not outlive what an SVID may.
        self.max_lifetime_s = max_lifetime_s

    @staticmethod
    def refused(message: str) -> dict[str, Any]:
        """``input.chain`` for an assertion this PDP cannot verify at all."""
        doc = absent_chain()
        doc.update(present=True, error={"code": "delegation.unverifiable", "message": message})
        return doc

    def chain(self, assertion: str | None) -> dict[str, Any]:
        """``input.chain`` for ``assertion`` (None: no chain). Never raises."""
        if assertion is None:
            return absent_chain()
        doc = absent_chain()
        doc["present"] = True
        try:
            claims = self._verify(assertion)
            actors = _actors(claims.get("act"))
        except _Refused as exc:
            doc["error"] = {"code": exc.code, "message": exc.message}
            return doc
        except Exception as exc:  # a bug: still a refusal, never an exception
            doc["error"] = {"code": "delegation.error", "message": type(exc).__name__}
            return doc
        tenant = claims.get("tenant")
        doc.update(
            verified=True,
            subject=claims["sub"],
            subject_tenant=tenant if isinstance(tenant, str) else None,
            issuer=claims["iss"],
            actors=actors,
            depth=len(actors),
        )
        return doc

    def _verify(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or not token or len(token) > MAX_ASSERTION_LENGTH:
            raise _Refused("delegation.malformed", "the assertion is empty or too long")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _Refused("delegation.malformed", "the assertion is not a JWT") from None
        alg, kid, iss = header.get("alg"), header.get("kid"), unverified.get("iss")
        if alg not in _ALGS:
            raise _Refused("delegation.alg_not_allowed", f"alg {str(alg)[:20]!r} is not allowed")
        if not isinstance(iss, str) or not iss.startswith("spiffe://"):
            raise _Refused("delegation.untrusted_issuer", "iss is not a SPIFFE trust domain")
        try:
            domain, path = parse_spiffe_id(iss)
        except ValueError:
            raise _Refused("delegation.untrusted_issuer", "iss is not a SPIFFE ID") from None
        if path or domain not in self.bundles.domains():
            raise _Refused("delegation.untrusted_issuer", f"issuer {iss[:100]!r} is not trusted")
        key = self.bundles.key(domain, kid) if isinstance(kid, str) else None
        if key is None:
            raise _Refused("delegation.unknown_kid", f"no key {str(kid)[:40]!r} for {domain!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.audience,
                options={
                    "require": ["iss", "sub", "exp", "aud"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise _Refused("delegation.invalid_signature", "signature does not verify") from None
        except jwt.InvalidAudienceError:
            raise _Refused(
                "delegation.audience_mismatch", f"aud does not contain {self.audience!r}"
            ) from None
        except jwt.PyJWTError as exc:
            raise _Refused("delegation.malformed", str(exc)[:160]) from None
        now = self.clock()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int | float) or not _number(exp) or now >= exp + self.leeway:
            raise _Refused("delegation.expired", "the assertion has expired")
        if nbf is not None and (not _number(nbf) or float(nbf) - self.leeway > now):
            raise _Refused("delegation.not_yet_valid", "the assertion is not valid yet")
        iat = claims.get("iat")
        if iat is not None and (not _number(iat) or float(iat) - self.leeway > now):
            raise _Refused("delegation.issued_in_future", "the assertion is issued in the future")
        lifetime = float(exp) - (float(iat) if iat is not None else now)
        if lifetime > self.max_lifetime_s:
            raise _Refused(
                "delegation.lifetime_too_long",
                f"the assertion's lifetime {lifetime:.0f} s exceeds the maximum "
                f"{self.max_lifetime_s:.0f} s",
            )
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > _MAX_SUB:
            raise _Refused("delegation.malformed", "sub must be a non-empty string")
        return claims


def _number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _actors(act: object) -> list[dict[str, Any]]:
    """The ``act`` nesting as a list, outermost (current) actor first."""
    if act is None:
        raise _Refused("delegation.no_actor", "the assertion names no actor (act)")
    actors: list[dict[str, Any]] = []
    node: object = act
    while node is not None:
        if not isinstance(node, Mapping):
            raise _Refused("delegation.malformed", "act must be an object")
        if len(actors) >= MAX_PARSED_DEPTH:
            raise _Refused("delegation.too_deep", f"act is nested deeper than {MAX_PARSED_DEPTH}")
        sub = node.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > _MAX_SUB:
            raise _Refused("delegation.malformed", "every act needs a sub")
        try:
            domain: str | None = parse_spiffe_id(sub)[0]
        except ValueError:
            domain = None
        actors.append({"sub": sub, "trust_domain": domain})
        node = node.get("act")
    return actors
