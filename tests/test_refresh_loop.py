"""pdp.credentials.refresh: the refresh loop on its own, with a key ring and an agent registry
that record their calls (and fail on demand) and a store that only hands over its event
callback. The order of a reload and the event it announces is tests/test_refresh_order.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from pdp.credentials.refresh import RefreshLoop
from pdp.errors import StoreError


class _State:
    """Stands in for the key ring and the agent registry."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.fail: BaseException | None = None

    async def refresh(self) -> None:
        self.log.append("keys")
        if self.fail is not None:
            raise self.fail

    async def reload(self) -> None:
        self.log.append("agents")

    async def flush(self) -> None:
        self.log.append("flush")


class _Store:
    def __init__(self) -> None:
        self.on_event: Callable[[str], None] | None = None

    async def listen(self, on_event: Callable[[str], None]) -> None:
        self.on_event = on_event
        await asyncio.Event().wait()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition never became true")


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def make(interval_s: float = 3600.0) -> tuple[RefreshLoop, _State, list[str], _Clock]:
    log: list[str] = []
    state = _State(log)
    clock = _Clock()
    loop = RefreshLoop(state, state, interval_s=interval_s, clock=clock)  # type: ignore[arg-type]
    loop.listeners.append(lambda event: log.append(f"told {event}"))
    return loop, state, log, clock


async def started(loop: RefreshLoop) -> _Store:
    store = _Store()
    loop.start(store)  # type: ignore[arg-type]
    await until(lambda: store.on_event is not None)
    return store


def test_the_default_clock_is_wall_time_and_nothing_was_refreshed_before_start() -> None:
    log: list[str] = []
    loop = RefreshLoop(_State(log), _State(log), interval_s=5)  # type: ignore[arg-type]
    assert loop.clock is time.time
    assert loop.interval_s == 5
    assert loop.last_refresh is None
    assert loop.listeners == []


async def test_start_notes_the_time_and_runs_two_named_tasks_that_stop_cancels() -> None:
    loop, _, log, clock = make()
    await started(loop)
    assert loop.last_refresh == clock.now
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert {"pdp-store-refresh", "pdp-store-listen"} <= names
    tasks = list(loop._tasks)
    await asyncio.wait_for(loop.stop(), 5)
    assert all(task.cancelled() for task in tasks)
    assert log == []  # no refresh before the interval or an event


async def test_stop_before_start_is_a_no_op() -> None:
    loop, _, log, _ = make()
    await asyncio.wait_for(loop.stop(), 5)
    assert log == []


async def test_one_round_refreshes_keys_then_agents_then_activity_and_notes_the_time() -> None:
    loop, _, log, clock = make()
    clock.now = 2000.0
    await loop.refresh()
    assert log == ["keys", "agents", "flush"]
    assert loop.last_refresh == 2000.0


async def test_the_loop_refreshes_every_interval_without_any_event() -> None:
    loop, _, log, _ = make(interval_s=0.005)
    await started(loop)
    try:
        await until(lambda: log.count("flush") >= 3)
    finally:
        await asyncio.wait_for(loop.stop(), 5)
    assert not [entry for entry in log if entry.startswith("told")]


async def test_a_state_event_wakes_one_round_and_is_told_once_after_it() -> None:
    loop, _, log, clock = make()
    store = await started(loop)
    assert store.on_event is not None
    try:
        clock.now = 3000.0
        store.on_event("agents")
        store.on_event("keys")
        store.on_event("agents")  # heard twice before the round: told once
        assert log == []
        await until(lambda: "told keys" in log)
        await settle()
        # one round (the wake-up is cleared), then each event once, in the order heard
        assert log == ["keys", "agents", "flush", "told agents", "told keys"]
        assert loop.last_refresh == 3000.0
        store.on_event("keys")
        await until(lambda: log.count("told keys") == 2)
        await settle()
        assert log[5:] == ["keys", "agents", "flush", "told keys"]
    finally:
        await asyncio.wait_for(loop.stop(), 5)


async def test_other_events_are_told_at_once_without_a_round() -> None:
    loop, _, log, _ = make()
    store = await started(loop)
    assert store.on_event is not None
    try:
        store.on_event("cache:session")
        assert log == ["told cache:session"]
        await settle()
        assert log == ["told cache:session"]
    finally:
        await asyncio.wait_for(loop.stop(), 5)


def test_a_failing_listener_is_logged_and_the_next_one_still_hears(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop, _, log, _ = make()

    def broken(event: str) -> None:
        raise RuntimeError("listener bug")

    loop.listeners.insert(0, broken)
    loop.tell("keys")
    assert log == ["told keys"]
    [record] = caplog.records
    assert record.name == "pdp.credentials"
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "store event listener failed on 'keys'"
    assert record.exc_info is not None


@pytest.mark.parametrize(
    ("failure", "level", "message"),
    [
        (
            StoreError("redis down"),
            logging.WARNING,
            "store refresh failed (keeping the cached state): redis down",
        ),
        (RuntimeError("a bug"), logging.ERROR, "store refresh failed"),
    ],
)
async def test_a_failed_round_is_logged_its_events_still_told_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture, failure: Exception, level: int, message: str
) -> None:
    caplog.set_level(logging.WARNING, logger="pdp.credentials")
    loop, state, log, clock = make()
    store = await started(loop)
    assert store.on_event is not None
    start_time = loop.last_refresh
    state.fail = failure
    try:
        clock.now = 4000.0
        store.on_event("keys")
        await until(lambda: "told keys" in log)
        assert log == ["keys", "told keys"]  # dropping cached answers is always safe
        assert loop.last_refresh == start_time  # not refreshed
        assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(level, message)]
        assert (caplog.records[0].exc_info is not None) == (level == logging.ERROR)
        state.fail = None
        store.on_event("agents")
        await until(lambda: "told agents" in log)
        assert log[2:] == ["keys", "agents", "flush", "told agents"]
        assert loop.last_refresh == 4000.0
    finally:
        await asyncio.wait_for(loop.stop(), 5)
