"""A step run every few seconds in the background, for the life of the app.

The pollers (OPA's bundle status, the trust bundle files) share this one loop: start it,
sleep, run the step, and keep going whatever one step raised (logged), until closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["Periodic"]


class Periodic:
    """Runs ``step`` every ``interval_s`` seconds (first after one interval) until
    :meth:`close`; an exception of one step is logged to ``log`` and the loop goes on."""

    def __init__(
        self,
        step: Callable[[], Awaitable[object]],
        interval_s: float,
        *,
        name: str,
        log: logging.Logger,
    ) -> None:
        self.step = step
        self.interval_s = interval_s
        self.name = name
        self.log = log
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def close(self) -> None:
        """Cancel the loop and wait until it has stopped."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.step()
            except Exception:  # the loop must outlive any one bad step
                self.log.exception("%s failed", self.name)
