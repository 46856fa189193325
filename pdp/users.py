"""User assertions: a JWT from a configured OIDC issuer that verifies a delegation.

A gateway that knows which user an agent acts for passes that user's ID token (or any JWT
its OIDC issuer signed for the PDP) as ``agent.user_assertion``. It is checked like an
agent's SVID: the header names an allowed asymmetric ``alg`` and a ``kid`` of the issuer's
JWKS (a file, read at start), the signature verifies, ``iss`` is the configured issuer,
``aud`` names the PDP, ``exp`` is in the future (with the clock leeway) and ``sub`` is a
string. Its claims reach policy as ``input.user``; ``agent.on_behalf_of.verified`` is true
only when the assertion names the delegation's subject. An assertion that does not verify
is simply not a verification: the delegation stays unverified (it never widens access).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import jwt

from .errors import ConfigError

__all__ = ["UserAssertionVerifier"]

log = logging.getLogger("pdp.users")

#: Asymmetric algorithms only: a shared secret could be used to forge assertions.
ALGORITHMS: Final = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "EdDSA")


class UserAssertionVerifier:
    """Verifies user assertions of one issuer against its JWKS."""

    def __init__(
        self,
        issuer: str,
        jwks: dict[str, Any],
        audience: str,
        *,
        leeway_s: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            keyset = jwt.PyJWKSet.from_dict(jwks)
        except jwt.PyJWTError as exc:
            raise ConfigError(f"user assertion JWKS of {issuer!r} is unusable: {exc}") from None
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.clock = clock
        self._keys = {k.key_id: k for k in keyset.keys if k.key_id}

    @classmethod
    def from_file(
        cls, issuer: str, path: Path, audience: str, *, leeway_s: int = 30
    ) -> UserAssertionVerifier:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the user assertion JWKS {str(path)!r}: {exc}") from None
        return cls(issuer, doc, audience, leeway_s=leeway_s)

    def verify(self, token: str) -> dict[str, Any] | None:
        """``input.user`` for a valid assertion ({iss, sub, tenant?, expires_at, claims}),
        else None (logged at debug level: a bad assertion is not an error)."""
        try:
            header = jwt.get_unverified_header(token)
            alg, kid = header.get("alg"), header.get("kid")
            if alg not in ALGORITHMS or not isinstance(kid, str) or kid not in self._keys:
                raise jwt.InvalidTokenError(f"alg {alg!r} / kid not accepted")
            claims = jwt.decode(
                token,
                self._keys[kid].key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            log.debug("user assertion rejected: %s", exc)
            return None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            return None
        user: dict[str, Any] = {
            "iss": claims["iss"],
            "sub": claims["sub"],
            "expires_at": int(claims["exp"]),
            "claims": claims,
        }
        if isinstance(claims.get("tenant"), str):
            user["tenant"] = claims["tenant"]
        return user
