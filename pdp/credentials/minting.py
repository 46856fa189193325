"""Minting: one short-lived JWT for exactly the approved action (docs/credentials.md has
the claims and their mapping to the IETF Transaction Tokens draft)::

    header  {"alg": "ES256", "kid": <thumbprint>, "typ": "txn+jwt"}
    claims  iss, sub (agent SPIFFE ID), aud (destination or the policy's audience), iat,
            nbf, exp, jti (128-bit random), scope (<type>:<name>:<operation>), tenant,
            txn (task id, else the decision id), req_wl (the agent), tctx {decision_id,
            action, destination, sensitivity}, act {sub: on-behalf-of subject}?,
            recheck_at_target?

Lifetime: the policy's ``obligations.credential.ttl_seconds`` (``PDP_CREDENTIAL_DEFAULT_TTL_S``
when it gives none), capped at ``PDP_CREDENTIAL_MAX_TTL_S``. The token itself is returned
once, in the decision response; it is recorded and counted by ``jti`` only and never logged.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..credential_token import action_scope
from ..identity import Identity
from ..keys import KeyRing
from ..normalize import DEFAULT_SENSITIVITY

__all__ = ["IssuedCredential", "Minter"]


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """A minted credential: the token goes to the caller, the rest to the record."""

    token: str
    jti: str
    audience: str
    scope: str
    exp: int
    expires_in: int
    kid: str

    def response(self) -> dict[str, Any]:
        """The ``credential`` member of the decision response (DESIGN §3.4)."""
        return {
            "token": self.token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "audience": self.audience,
            "scope": self.scope,
            "jti": self.jti,
        }

    def record(self) -> dict[str, Any]:
        """What the decision record keeps: never the token."""
        return {"jti": self.jti, "aud": self.audience, "scope": self.scope, "exp": self.exp}


@dataclass(kw_only=True)
class Minter:
    """Signs the credential of one allowed action with the key ring's current key."""

    keyring: KeyRing
    issuer: str
    #: Lifetime when the policy's credential obligation names none, and the cap, seconds.
    default_ttl_s: int
    max_ttl_s: int
    clock: Callable[[], float] = time.time

    def mint(
        self,
        decision_id: str,
        request: dict[str, Any],
        identity: Identity,
        obligations: dict[str, Any] | None,
        approval_id: str | None = None,
    ) -> IssuedCredential:
        """Sign the credential for one allowed, schema-valid request (``approval_id``: the
        human approval the allow used, carried as the ``approval_id`` claim)."""
        obligations = obligations or {}
        wanted = obligations.get("credential") or {}
        ttl = wanted.get("ttl_seconds") or self.default_ttl_s
        ttl = max(1, min(int(ttl), self.max_ttl_s))
        action = request["action"]
        destination = request["destination"]
        audience = wanted.get("audience") or destination["name"]
        scope = action_scope(action)
        now = int(self.clock())
        jti = secrets.token_urlsafe(16)  # 128 random bits
        task = request.get("task") or {}
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": identity.spiffe_id,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": jti,
            "scope": scope,
            "tenant": request["tenant"],
            "txn": task.get("id") or decision_id,
            "req_wl": identity.spiffe_id,
            "tctx": {
                "decision_id": decision_id,
                "action": {
                    "type": action["type"],
                    "name": action.get("name"),
                    "operation": action.get("operation"),
                },
                "destination": {"type": destination["type"], "name": destination["name"]},
                "sensitivity": (request.get("data") or {}).get("sensitivity", DEFAULT_SENSITIVITY),
            },
        }
        on_behalf_of = (request.get("agent") or {}).get("on_behalf_of")
        if on_behalf_of:
            # RFC 8693 §4.1 shape; see docs/credentials.md on why sub stays the agent.
            claims["act"] = {"sub": on_behalf_of["subject"]}
            if "tenant" in on_behalf_of:
                claims["act"]["tenant"] = on_behalf_of["tenant"]
        if obligations.get("recheck_at_target") is True:
            claims["recheck_at_target"] = True
        if approval_id is not None:
            claims["approval_id"] = approval_id
        key = self.keyring.current
        token = key.sign(orjson.dumps(claims))
        self.keyring.note_exp(now + ttl)
        return IssuedCredential(token, jti, audience, scope, now + ttl, ttl, key.kid)
