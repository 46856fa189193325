"""pdp.periodic: the one background loop of the pollers (bundle status, trust bundles)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pdp.periodic import Periodic


async def test_a_failing_step_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    third = asyncio.Event()

    async def step() -> None:
        calls.append(len(calls))
        if len(calls) == 3:
            third.set()
        if len(calls) == 1:
            raise RuntimeError("one bad step")

    poller = Periodic(step, 0.001, name="test-poller", log=logging.getLogger("pdp.test"))
    with caplog.at_level(logging.ERROR, logger="pdp.test"):
        poller.start()
        assert poller.running
        await asyncio.wait_for(third.wait(), 10)
        await poller.close()

    assert not poller.running
    assert [r.getMessage() for r in caplog.records] == ["test-poller failed"]
    stopped_at = len(calls)
    await asyncio.sleep(0.01)
    assert len(calls) == stopped_at  # closed: no step after close


async def test_the_first_step_waits_one_interval_and_close_before_it_runs_none() -> None:
    calls: list[None] = []

    async def step() -> None:
        calls.append(None)

    poller = Periodic(step, 3600, name="slow", log=logging.getLogger("pdp.test"))
    poller.start()
    await asyncio.sleep(0)
    await poller.close()
    await poller.close()  # twice is harmless
    assert calls == []
