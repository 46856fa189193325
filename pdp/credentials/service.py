""":class:`CredentialService`: the one object the decision path and the admin API use for
credentials. It owns the store, the key ring, the agent registry and the refresh loop;
minting is delegated to :class:`~pdp.credentials.minting.Minter`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

from ..agents import AgentRegistry, Status
from ..config import Settings
from ..credential_token import CREDENTIAL_TYP, CredentialError, verify_credential
from ..errors import StoreError
from ..identity import Identity
from ..keys import KeyRing
from ..store import Store, open_store
from .adminauth import AdminAuth
from .minting import IssuedCredential, Minter
from .refresh import RefreshLoop
from .tokenfiles import approver_token, introspection_token, resolve_admin_token

__all__ = ["CredentialService"]

log = logging.getLogger("pdp.credentials")

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
    "approval_id",
)


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
        self.minter = Minter(
            keyring=keyring,
            issuer=settings.issuer,
            default_ttl_s=settings.credential_default_ttl_s,
            max_ttl_s=settings.credential_max_ttl_s,
            clock=clock,
        )
        #: Sign the credential for one allowed, schema-valid request (no status check, no
        #: counting: :meth:`after_decision` is the decision path's way).
        self.mint = self.minter.mint
        self.refresher = RefreshLoop(
            keyring, agents, interval_s=settings.store_refresh_s, clock=clock
        )
        #: Called with every store event, this replica's own included (see announce).
        self.listeners = self.refresher.listeners
        agents.listeners.append(self.refresher.tell)

    @classmethod
    async def start(
        cls, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> CredentialService:
        """Open the store, load or create the signing key, load the disabled set, and start
        the refresh loop and the store's change listener."""
        auth = AdminAuth(
            resolve_admin_token(settings), introspection_token(settings), approver_token(settings)
        )
        url = settings.store_url or f"sqlite://{settings.state_dir / 'pdp.sqlite3'}"
        store = await open_store(url, password=settings.store_password())
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
        service.refresher.start(store)
        log.info("credential store: %s", store.kind)
        return service

    async def close(self) -> None:
        """Stop the background tasks, write pending activity, close the store."""
        await self.refresher.stop()
        try:
            await self.agents.flush()
        except StoreError as exc:
            log.warning("could not write agent activity at shutdown: %s", exc)
        await self.store.close()

    async def announce(self, event: str) -> None:
        """Tell this replica's listeners about ``event`` at once, and the other replicas
        through the store's channel (best effort: they also refresh periodically)."""
        self.refresher.tell(event)
        try:
            await self.store.publish(event)
        except StoreError as exc:
            log.warning("could not announce %r to the other replicas: %s", event, exc)

    @property
    def last_refresh(self) -> float | None:
        """When the store state was last refreshed."""
        return self.refresher.last_refresh

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
        *,
        mint: bool = True,
        approval_id: str | None = None,
    ) -> IssuedCredential | None:
        """Mint the credential of an allow (never of a deny, nor when ``mint`` is false)
        and count the decision. ``approval_id``: the grant the allow used, as a claim."""
        if not identity.authenticated or identity.spiffe_id is None:
            return None
        allowed = response.get("allow") is True
        credential = None
        if allowed and mint and self.agents.status(identity.spiffe_id) == "active":
            credential = self.minter.mint(
                decision_id, request, identity, response.get("obligations"), approval_id
            )
        action = request["action"]
        self.agents.observe(
            identity.spiffe_id,
            allowed=allowed,
            tool=action.get("name") or action["type"],
            credential=None if credential is None else (credential.jti, credential.exp),
        )
        return credential

    # -- introspection and revocation -------------------------------------------------
    async def _claims(self, token: str, *, verify_time: bool) -> dict[str, Any] | None:
        """The verified claims of a credential this PDP (any replica) signed, else None.

        A key another replica created a moment ago may not have reached this one yet (its
        refresh or pub/sub message still on the way): on an unknown ``kid`` the key set is
        read from the store once more before the token is judged. A StoreError then
        propagates (503): this replica cannot tell, so it must not answer as if it could.
        """
        for attempt in (1, 2):
            try:
                return verify_credential(
                    token,
                    self.keyring.public_key,
                    issuer=self.issuer,
                    audience=None,
                    scope=None,
                    now=self.clock(),
                    leeway_s=0,
                    verify_time=verify_time,
                )
            except CredentialError as exc:
                if exc.code != "unknown_kid" or attempt == 2:
                    return None
                await self.keyring.reload()
        return None  # pragma: no cover - the loop always returns

    async def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: the claims of an active credential, else ``{"active": false}`` (expired,
        revoked, forged, unknown key, agent disabled or re-enabled since)."""
        claims = await self._claims(token, verify_time=True)
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
        nothing stored) for tokens that no replica would accept anyway: not ours (no key in
        the shared key set, after re-reading it), forged, or already expired. True only
        once the revocation is in the store every replica's introspection reads."""
        # an expired one is simply not stored, below
        claims = await self._claims(token, verify_time=False)
        if claims is None:
            return False
        until = float(claims["exp"]) + self.settings.clock_skew_seconds
        now = self.clock()
        if until <= now:
            return False
        await self.store.revoke(claims["jti"], claims["sub"], until, now)
        log.info("revoked credential jti=%s sub=%s", claims["jti"], claims["sub"])
        return True

    async def refresh(self) -> None:
        """One round: keys (rotation, drops), the disabled set, pending activity."""
        await self.refresher.refresh()
