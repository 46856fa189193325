"""Action-scoped credentials: minted on allow, introspected, revoked; and the background
work that keeps keys, the disabled-agent cache and agent activity in step with the store.

On every allow the PDP mints one short-lived JWT for exactly the approved action
(docs/credentials.md has the claims and their mapping to the IETF Transaction Tokens
draft)::

    header  {"alg": "ES256", "kid": <thumbprint>, "typ": "txn+jwt"}
    claims  iss, sub (agent SPIFFE ID), aud (destination or the policy's audience), iat,
            nbf, exp, jti (128-bit random), scope (<type>:<name>:<operation>), tenant,
            txn (task id, else the decision id), req_wl (the agent), tctx {decision_id,
            action, destination, sensitivity}, act {sub: on-behalf-of subject}?,
            recheck_at_target?

Lifetime: the policy's ``obligations.credential.ttl_seconds`` (``PDP_CREDENTIAL_DEFAULT_TTL_S``
when it gives none), capped at ``PDP_CREDENTIAL_MAX_TTL_S``. The token itself is returned
once, in the decision response; it is recorded and counted by ``jti`` only and never logged.

:class:`CredentialService` is the one object the decision path and the admin API use; it
owns the store, the key ring and the agent registry and runs their refresh loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web

from .agents import AgentRegistry, Status
from .bodies import header
from .config import Settings
from .errors import AuthError, ForbiddenError, RequestError
from .identity import Identity
from .keys import KeyRing, private_dir, write_private
from .normalize import DEFAULT_SENSITIVITY
from .store import Store, StoreError, open_store
from .target import CREDENTIAL_TYP, CredentialError, action_scope, verify_credential

__all__ = ["AdminAuth", "CredentialService", "IssuedCredential", "resolve_admin_token"]

log = logging.getLogger("pdp.credentials")

#: Name of the generated admin credential in the state directory.
ADMIN_TOKEN_FILE: Final = "admin-token"
#: Reason code of a decision denied because an operator disabled the agent.
AGENT_DISABLED: Final = "agent_disabled"


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


class AdminAuth:
    """Bearer-token check of the admin and introspection endpoints (constant time)."""

    def __init__(self, admin_token: str, introspection_token: str | None = None) -> None:
        self._admin = admin_token.encode()
        self._introspection = introspection_token.encode() if introspection_token else None

    def check(self, request: web.Request, *, introspection: bool = False) -> None:
        """Raise AuthError (401) without a Bearer credential, ForbiddenError (403) with a
        wrong one. ``introspection``: the introspection token is accepted too."""
        try:
            raw = header(request, "Authorization") or ""
        except RequestError:
            _log_failed_auth(request, "an Authorization header that is not visible ASCII")
            raise
        scheme, _, value = raw.partition(" ")
        presented = value.strip().encode("ascii")
        if scheme.lower() != "bearer" or not presented:
            _log_failed_auth(request, "no Bearer credential")
            raise AuthError("this endpoint requires Authorization: Bearer <admin token>")
        ok = hmac.compare_digest(presented, self._admin)
        if introspection and self._introspection is not None:
            ok = hmac.compare_digest(presented, self._introspection) or ok
        if not ok:
            _log_failed_auth(request, "a wrong Bearer credential")
            raise ForbiddenError("the presented credential is not accepted here")


def _log_failed_auth(request: web.Request, what: str) -> None:
    """One warning per failed admin authentication: who, where, what kind of failure;
    never the presented secret."""
    log.warning(
        "admin authentication failed: %s on %s %s from %s",
        what,
        request.method,
        request.path,
        request.remote,
    )


def resolve_admin_token(settings: Settings) -> str:
    """The admin credential: PDP_ADMIN_TOKEN, else the file PDP_ADMIN_TOKEN_FILE names,
    else STATE_DIR/admin-token, generated (0600) on first start. Never logged."""
    if settings.admin_token:
        log.info("admin API credential: from PDP_ADMIN_TOKEN")
        return settings.admin_token
    path = settings.admin_token_file
    if path is None:
        path = settings.state_dir / ADMIN_TOKEN_FILE
        if not path.exists():
            private_dir(settings.state_dir)
            write_private(path, secrets.token_urlsafe(32).encode() + b"\n")
            log.warning("generated an admin API credential into %s (mode 0600)", path)
    token = _read_secret(path)
    log.info("admin API credential: from %s", path)
    return token


def _read_secret(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the credential file {str(path)!r}: {exc}") from None
    if len(token) < 16:
        raise ValueError(f"the credential in {str(path)!r} is shorter than 16 characters")
    return token


class CredentialService:
    """Minting, introspection, revocation, agent lifecycle and keys, over one store."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        keyring: KeyRing,
        agents: AgentRegistry,
        auth: AdminAuth,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keyring = keyring
        self.agents = agents
        self.auth = auth
        self.clock = clock
        self.issuer = settings.issuer
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.last_refresh: float | None = None

    @classmethod
    async def start(
        cls, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> CredentialService:
        """Open the store, load or create the signing key, load the disabled set, and start
        the refresh loop and the store's change listener."""
        auth = AdminAuth(resolve_admin_token(settings), _introspection_token(settings))
        url = settings.store_url or f"sqlite://{settings.state_dir / 'pdp.sqlite3'}"
        store = await open_store(url)
        try:
            keyring = KeyRing(
                settings.state_dir / "keys",
                store,
                alg=settings.credential_alg,
                typ=CREDENTIAL_TYP,
                max_ttl_s=settings.credential_max_ttl_s,
                leeway_s=settings.clock_skew_seconds,
                clock=clock,
            )
            await keyring.start()
            agents = AgentRegistry(store, clock=clock)
            await agents.reload()
        except BaseException:
            await store.close()
            raise
        service = cls(settings, store, keyring, agents, auth, clock=clock)
        service.last_refresh = clock()
        service._tasks = [
            asyncio.create_task(service._refresh_loop(), name="pdp-store-refresh"),
            asyncio.create_task(store.listen(service._on_event), name="pdp-store-listen"),
        ]
        log.info("credential store: %s", store.kind)
        return service

    async def close(self) -> None:
        """Stop the background tasks, write pending activity, close the store."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.agents.flush()
        except StoreError as exc:
            log.warning("could not write agent activity at shutdown: %s", exc)
        await self.store.close()

    # -- decision path (memory only) --------------------------------------------------
    def agent_status(self, identity: Identity) -> Status | None:
        """input.agent.status: the lifecycle status of an authenticated agent, else None."""
        return self.agents.status(identity.spiffe_id if identity.authenticated else None)

    def after_decision(
        self,
        decision_id: str,
        request: dict[str, Any],
        identity: Identity,
        response: dict[str, Any],
    ) -> IssuedCredential | None:
        """Mint the credential of an allow (never of a deny) and count the decision."""
        if not identity.authenticated or identity.spiffe_id is None:
            return None
        allowed = response.get("allow") is True
        credential = None
        if allowed and self.agents.status(identity.spiffe_id) == "active":
            credential = self.mint(decision_id, request, identity, response.get("obligations"))
        action = request["action"]
        self.agents.observe(
            identity.spiffe_id,
            allowed=allowed,
            tool=action.get("name") or action["type"],
            credential=None if credential is None else (credential.jti, credential.exp),
        )
        return credential

    def mint(
        self,
        decision_id: str,
        request: dict[str, Any],
        identity: Identity,
        obligations: dict[str, Any] | None,
    ) -> IssuedCredential:
        """Sign the credential for one allowed, schema-valid request."""
        obligations = obligations or {}
        wanted = obligations.get("credential") or {}
        ttl = wanted.get("ttl_seconds") or self.settings.credential_default_ttl_s
        ttl = max(1, min(int(ttl), self.settings.credential_max_ttl_s))
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
        key = self.keyring.current
        token = key.sign(orjson.dumps(claims))
        self.keyring.note_exp(now + ttl)
        return IssuedCredential(token, jti, audience, scope, now + ttl, ttl, key.kid)

    # -- introspection and revocation -------------------------------------------------
    def _verify(self, token: str) -> dict[str, Any] | None:
        try:
            return verify_credential(
                token,
                self.keyring.public_key,
                issuer=self.issuer,
                audience=None,
                scope=None,
                now=self.clock(),
                leeway_s=0,
            )
        except CredentialError:
            return None

    async def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: the claims of an active credential, else ``{"active": false}`` (expired,
        revoked, forged, unknown key, agent disabled or re-enabled since)."""
        claims = self._verify(token)
        if claims is None:
            return {"active": False}
        revoked, state = await self.store.credential_state(claims["jti"], claims["sub"])
        if revoked or (state is not None and not state.active_for(claims.get("iat"))):
            return {"active": False}
        answer: dict[str, Any] = {"active": True, "token_type": "Bearer"}
        answer.update(
            {k: claims[k] for k in _INTROSPECTION_CLAIMS if k in claims},
        )
        return answer

    async def revoke(self, token: str) -> bool:
        """RFC 7009: revoke a credential this PDP signed until it expires. False (and
        nothing stored) for tokens that are not ours or already expired."""
        try:
            claims = verify_credential(
                token,
                self.keyring.public_key,
                issuer=self.issuer,
                audience=None,
                scope=None,
                leeway_s=0,
                verify_time=False,  # an expired one is simply not stored, below
            )
        except CredentialError:
            return False
        until = float(claims["exp"]) + self.settings.clock_skew_seconds
        now = self.clock()
        if until <= now:
            return False
        await self.store.revoke(claims["jti"], claims["sub"], until, now)
        log.info("revoked credential jti=%s sub=%s", claims["jti"], claims["sub"])
        return True

    # -- background -------------------------------------------------------------------
    def _on_event(self, event: str) -> None:
        self._wake.set()

    async def refresh(self) -> None:
        """One round: keys (rotation, drops), the disabled set, pending activity."""
        await self.keyring.refresh()
        await self.agents.reload()
        await self.agents.flush()
        self.last_refresh = self.clock()

    async def _refresh_loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.store_refresh_s)
            self._wake.clear()
            try:
                await self.refresh()
            except StoreError as exc:
                log.warning("store refresh failed (keeping the cached state): %s", exc)
            except Exception:
                log.exception("store refresh failed")


_INTROSPECTION_CLAIMS: Final = (
    "iss",
    "sub",
    "aud",
    "scope",
    "exp",
    "iat",
    "nbf",
    "jti",
    "tenant",
    "txn",
    "req_wl",
    "tctx",
    "act",
    "recheck_at_target",
)


def _introspection_token(settings: Settings) -> str | None:
    if settings.introspection_token:
        return settings.introspection_token
    if settings.introspection_token_file is not None:
        return _read_secret(settings.introspection_token_file)
    return None
