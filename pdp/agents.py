"""Agent lifecycle and activity: who was seen, what they did, who is disabled.

The decision path only touches memory here: :meth:`AgentRegistry.status` is a dict lookup
in the cached disabled set, :meth:`AgentRegistry.observe` adds to a pending batch. The
batch is written behind to the store (:meth:`flush`, about once a second) and the disabled
set is reloaded from the store on every change event and on every periodic refresh, which
bounds how stale a replica can be (docs/credentials.md, "Staleness").

Only authenticated agents (verified SPIFFE IDs) are recorded, so the table is bounded by
the identities the trust domains issue, not by what callers send.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Final, Literal

from .store import (
    OTHER_TOOLS,
    AgentActivity,
    AgentRecord,
    AgentState,
    Store,
    StoreError,
    count_tool,
)

log = logging.getLogger("pdp.agents")

#: Credentials kept per agent in a pending batch while the store is unreachable.
MAX_PENDING_CREDENTIALS: Final = 10_000

Status = Literal["active", "disabled"]

#: The documented character set of action and tool names (policies/pdp/lib/defaults.rego).
_TOOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class AgentRegistry:
    """The cached lifecycle state of agents plus their write-behind activity."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._disabled: dict[str, AgentState] = {}
        self._pending: dict[str, AgentActivity] = {}
        #: Told "cache:agent:<spiffe id>" when this replica disables or enables an agent.
        self.listeners: list[Callable[[str], None]] = []

    # -- hot path ---------------------------------------------------------------------
    def status(self, spiffe_id: str | None) -> Status | None:
        """ "disabled" or "active" for an authenticated agent; None without one."""
        if spiffe_id is None:
            return None
        return "disabled" if spiffe_id in self._disabled else "active"

    def observe(
        self,
        spiffe_id: str,
        *,
        allowed: bool,
        tool: str | None,
        credential: tuple[str, int] | None,
    ) -> None:
        """Count one decision for an authenticated agent (and the credential it got)."""
        now = self.clock()
        activity = self._pending.get(spiffe_id)
        if activity is None:
            activity = self._pending[spiffe_id] = AgentActivity(spiffe_id, now, now)
        else:
            activity.last_seen = now
        if allowed:
            activity.allowed += 1
            if tool:
                # Only names of the documented form are kept as given (policies refuse the
                # others, but a policy without that rule must not grow the registry either).
                count_tool(activity.tools, tool if _TOOL_NAME.fullmatch(tool) else OTHER_TOOLS)
        else:
            activity.denied += 1
        if credential is not None and len(activity.credentials) < MAX_PENDING_CREDENTIALS:
            activity.credentials.append(credential)

    # -- store side -------------------------------------------------------------------
    async def flush(self) -> None:
        """Write the pending activity to the store; keep it for the next try on failure."""
        if not self._pending:
            return
        batch, self._pending = list(self._pending.values()), {}
        now = self.clock()
        try:
            await self.store.record_activity(batch, now)
        except StoreError:
            for a in batch:
                self._merge_back(a, now)
            raise

    def _merge_back(self, a: AgentActivity, now: float) -> None:
        live = [(jti, exp) for jti, exp in a.credentials if exp > now]
        current = self._pending.get(a.spiffe_id)
        if current is None:
            a.credentials = live
            self._pending[a.spiffe_id] = a
            return
        current.first_seen = min(current.first_seen, a.first_seen)
        current.last_seen = max(current.last_seen, a.last_seen)
        current.allowed += a.allowed
        current.denied += a.denied
        for tool, n in a.tools.items():
            count_tool(current.tools, tool, n)
        room = MAX_PENDING_CREDENTIALS - len(current.credentials)
        current.credentials = live[: max(room, 0)] + current.credentials

    async def reload(self) -> None:
        """Replace the cached disabled set with the store's."""
        self._disabled = await self.store.disabled_agents()

    async def set_status(self, spiffe_id: str, status: Status, reason: str | None) -> AgentState:
        """Disable or enable an agent: in the store, in this replica at once, and tell the
        other replicas."""
        state = await self.store.set_agent_status(spiffe_id, status, reason, self.clock())
        if status == "disabled":
            self._disabled[spiffe_id] = state
        else:
            self._disabled.pop(spiffe_id, None)
        for listener in self.listeners:
            listener(f"cache:agent:{spiffe_id}")
        try:
            await self.store.publish("agents")
        except StoreError as exc:  # the others still pick it up on their refresh
            log.warning("could not announce the status change of %s: %s", spiffe_id, exc)
        return state

    async def list(self) -> list[AgentRecord]:
        """Every agent the store knows, after writing this replica's pending activity."""
        await self.flush()
        return await self.store.list_agents(self.clock())
