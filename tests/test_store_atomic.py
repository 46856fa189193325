"""State is never half-written (issue 8, sample 4): a failure in the middle of any store
write leaves nothing of it behind, and every later write still works. Failures are
injected mid-write into the real SQLite connection and the real Redis connection."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pdp.store import AgentActivity, Store, StoreError, open_store
from pdp.store.sqlite import SQLiteStore
from tests.redis_process import redis_server, redis_url  # noqa: F401  (fixtures)
from tests.test_store import BOT, NOW, OTHER, key_record

Write = Callable[[Store], Awaitable[Any]]


class FailingConnection:
    """A sqlite3 connection whose ``fail_at``-th statement (counted from BEGIN) raises."""

    def __init__(self, real: sqlite3.Connection, fail_at: int, error: Exception) -> None:
        self._real = real
        self._fail_at = fail_at
        self._error = error
        self._count = -1  # BEGIN is statement 0

    def _tick(self) -> None:
        if self._count >= 0 or self._real.in_transaction:
            self._count += 1
        if self._count == self._fail_at:
            raise self._error

    def execute(self, *args: Any) -> Any:
        result = self._real.execute(*args)  # BEGIN (and statements before the failing one) run
        self._tick()
        return result

    def executemany(self, *args: Any) -> Any:
        self._tick()
        return self._real.executemany(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def activity() -> AgentActivity:
    return AgentActivity(
        BOT,
        NOW,
        NOW,
        allowed=2,
        denied=1,
        tools={"jira.search": 1},
        credentials=[("j-9", 9_000_000_000)],
    )


# Each write, and what must read back unchanged after it failed half-way.
WRITES: list[tuple[str, Write]] = [
    ("revoke", lambda s: s.revoke("jti-x", BOT, until=9e9, now=NOW)),
    ("disable", lambda s: s.set_agent_status(BOT, "disabled", "offboarded", NOW)),
    ("enable", lambda s: s.set_agent_status(OTHER, "active", None, NOW + 5)),
    ("record_activity", lambda s: s.record_activity([activity()], NOW)),
    ("put_keys", lambda s: s.put_keys([key_record("k2"), key_record("k3")])),
    ("bump_rotation_generation", lambda s: s.bump_rotation_generation()),
]


async def snapshot(store: Store) -> Any:
    return (
        await store.credential_state("jti-x", BOT),
        await store.credential_state("j-1", OTHER),
        sorted((k, v.status) for k, v in (await store.disabled_agents()).items()),
        [r.to_json() for r in await store.list_agents(NOW)],
        [r.kid for r in await store.list_keys()],
        await store.rotation_generation(),
    )


async def seeded(store: Store) -> Store:
    """Some state to damage: a disabled agent with an outstanding credential, a key."""
    await store.record_activity(
        [AgentActivity(OTHER, NOW, NOW, allowed=1, credentials=[("j-1", 9_000_000_000)])], NOW - 10
    )
    await store.set_agent_status(OTHER, "disabled", "paused", NOW - 5)
    await store.put_keys([key_record("k1")])
    return store


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = await open_store(f"sqlite://{tmp_path / 'pdp.sqlite3'}")
    assert isinstance(store, SQLiteStore)
    yield store
    await store.close()


@pytest.mark.parametrize(
    "error",
    [
        ValueError("not SQLite's own error"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        sqlite3.OperationalError("disk I/O error"),
    ],
    ids=["ValueError", "UnicodeEncodeError", "OperationalError"],
)
@pytest.mark.parametrize(("name", "write"), WRITES, ids=[w[0] for w in WRITES])
async def test_a_sqlite_write_failing_half_way_rolls_back_and_the_next_write_works(
    sqlite_store: SQLiteStore, name: str, write: Write, error: Exception
) -> None:
    await seeded(sqlite_store)
    before = await snapshot(sqlite_store)
    real = sqlite_store._conn
    sqlite_store._conn = FailingConnection(real, 1, error)  # type: ignore[assignment]
    try:
        with pytest.raises(StoreError):
            await write(sqlite_store)
    finally:
        sqlite_store._conn = real

    assert not real.in_transaction
    assert await snapshot(sqlite_store) == before
    await write(sqlite_store)  # the same write now succeeds...
    await sqlite_store.revoke("jti-after", BOT, until=9e9, now=NOW)  # ...and so does a revoke
    assert (await sqlite_store.credential_state("jti-after", BOT))[0] is True


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_a_reason_with_a_lone_surrogate_fails_cleanly_and_revocation_still_works(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite://{tmp_path / 'pdp.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    store = await open_store(url)
    try:
        with pytest.raises(StoreError):
            await store.set_agent_status(BOT, "disabled", "r\ud800", NOW)

        assert await store.credential_state("jti-1", BOT) == (False, None)
        await store.revoke("jti-1", BOT, until=9e9, now=NOW)
        disabled = await store.set_agent_status(BOT, "disabled", "offboarded", NOW)
        assert (await store.credential_state("jti-1", BOT))[0] is True
        assert disabled.status == "disabled"
    finally:
        await store.close()


# --------------------------------------------------------------------------- Redis


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[Store]:  # noqa: F811
    store = await open_store(redis_url)
    yield store
    await store.close()


@pytest.mark.redis
@pytest.mark.parametrize(("name", "write"), WRITES, ids=[w[0] for w in WRITES])
async def test_a_redis_write_cut_off_half_way_applies_nothing_and_the_next_write_works(
    redis_store: Store, name: str, write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.asyncio.connection import Connection
    from redis.exceptions import ConnectionError as RedisConnectionError

    await seeded(redis_store)
    before = await snapshot(redis_store)
    real_send = Connection.send_packed_command
    cut = {"times": 0}
    writes = (b"MULTI", b"INCR", b"HSET")

    async def send_half(self: Connection, command: Any, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, bytes | str) else list(command)
        data = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
        if not any(w in data for w in writes):  # reads and WATCH go through
            return await real_send(self, command, check_health)
        cut["times"] += 1
        # the server gets the first half of the write, then the connection dies (every
        # time: redis-py's own retries are cut off too)
        await real_send(self, data[: len(data) // 2], check_health)
        await self.disconnect()
        raise RedisConnectionError("injected: connection lost mid-write")

    monkeypatch.setattr(Connection, "send_packed_command", send_half)
    with pytest.raises(StoreError):
        await write(redis_store)
    monkeypatch.setattr(Connection, "send_packed_command", real_send)

    assert cut["times"] >= 1
    assert await snapshot(redis_store) == before
    await write(redis_store)
    await redis_store.revoke("jti-after", BOT, until=9e9, now=NOW)
    assert (await redis_store.credential_state("jti-after", BOT))[0] is True
