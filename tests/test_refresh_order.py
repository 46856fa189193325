"""The refresh loop passes a store event on only after loading the state it announces."""

from __future__ import annotations

import asyncio
from typing import Any

from pdp.credentials.refresh import RefreshLoop


class _Recorder:
    """Stands in for the key ring and the agent registry; logs each call in order."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def refresh(self) -> None:
        self.log.append("keys refreshed")

    async def reload(self) -> None:
        await asyncio.sleep(0.01)  # the store answers later than the event arrives
        self.log.append("agents reloaded")

    async def flush(self) -> None:
        self.log.append("activity flushed")


class _Store:
    def __init__(self) -> None:
        self.on_event: Any = None

    async def listen(self, on_event: Any) -> None:
        self.on_event = on_event
        await asyncio.Event().wait()


async def test_a_lifecycle_event_reaches_listeners_only_after_the_reload() -> None:
    log: list[str] = []
    fake = _Recorder(log)
    loop = RefreshLoop(fake, fake, interval_s=3600)  # type: ignore[arg-type]
    loop.listeners.append(lambda event: log.append(f"told {event}"))
    store = _Store()
    loop.start(store)  # type: ignore[arg-type]
    try:
        for _ in range(100):
            if store.on_event is not None and "activity flushed" in log:
                break
            await asyncio.sleep(0.01)
        log.clear()
        store.on_event("agents")
        assert log == []  # not told before the new disabled set is loaded
        for _ in range(100):
            if "told agents" in log:
                break
            await asyncio.sleep(0.01)
        assert log.index("agents reloaded") < log.index("told agents")
        store.on_event("cache:session")  # not a state the loop loads: told at once
        assert log[-1] == "told cache:session"
    finally:
        await asyncio.wait_for(loop.stop(), 5)
