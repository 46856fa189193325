"""The refresh loop: keys (rotation, drops), the disabled set and pending agent activity,
kept in step with the store every ``PDP_STORE_REFRESH_S`` and at once on a store event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from ..agents import AgentRegistry
from ..errors import StoreError
from ..keys import KeyRing
from ..store import EVENTS, Store

__all__ = ["RefreshLoop"]

log = logging.getLogger("pdp.credentials")


class RefreshLoop:
    """Two background tasks: the periodic refresh and the store's change listener."""

    def __init__(
        self,
        keyring: KeyRing,
        agents: AgentRegistry,
        *,
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keyring = keyring
        self.agents = agents
        self.interval_s = interval_s
        self.clock = clock
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: Store events ("agents", "keys") heard but not yet passed on: listeners (the
        #: decision cache) hear them only after the refresh that loads the new state, so a
        #: decision between the two cannot re-cache an answer made on the old state.
        self._held: list[str] = []
        #: When the last refresh round finished (seconds since the epoch).
        self.last_refresh: float | None = None
        #: Called with every store event, this replica's own announcements included: the
        #: decision cache hears its invalidations here.
        self.listeners: list[Callable[[str], None]] = []

    def start(self, store: Store) -> None:
        """Start the loop and the listener (the state was loaded just before)."""
        self.last_refresh = self.clock()
        self._tasks = [
            asyncio.create_task(self._loop(), name="pdp-store-refresh"),
            asyncio.create_task(store.listen(self._on_event), name="pdp-store-listen"),
        ]

    async def stop(self) -> None:
        """Cancel both tasks and wait for them."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_event(self, event: str) -> None:
        if event in EVENTS:
            self._held.append(event)
            self._wake.set()
            return
        self.tell(event)

    def tell(self, event: str) -> None:
        """Pass ``event`` to every listener (one listener's bug does not stop the others)."""
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a listener's outermost boundary: log, tell the next
                log.exception("store event listener failed on %r", event)

    async def refresh(self) -> None:
        """One round: keys (rotation, drops), the disabled set, pending activity."""
        await self.keyring.refresh()
        await self.agents.reload()
        await self.agents.flush()
        self.last_refresh = self.clock()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            held, self._held = self._held, []
            try:
                await self.refresh()
            except StoreError as exc:
                log.warning("store refresh failed (keeping the cached state): %s", exc)
            except Exception:  # the task's outermost boundary: log, keep refreshing
                log.exception("store refresh failed")
            # Told even when the refresh failed: dropping cached decisions is always safe.
            for event in dict.fromkeys(held):
                self.tell(event)
