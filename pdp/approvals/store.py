"""Approvals in the shared store: SQLite (one file, the default) or Redis (replicas).

Both keep the same JSON document per approval and make every change atomic: opening (one
pending approval per bound call), deciding (only a pending, unexpired one) and using (only
a granted, unexpired, bound one with uses left: two replicas can never both use the last
use). SQLite does it in IMMEDIATE transactions on its own connection to the store file;
Redis in WATCH/MULTI transactions (retried on a concurrent change).

Redis layout (prefix ``pdp:``)::

    pdp:approval:<id>          JSON Approval, expiring a week after its last deadline
    pdp:approvals              sorted set id -> created_at (listing)
    pdp:approval-call:<digest> id of the pending approval of a bound call
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from ..errors import StoreError
from ..store import Store
from ..store.redis_store import RedisStore, connect_redis
from .model import Approval, Binding

__all__ = ["ApprovalConflict", "ApprovalStore", "open_approval_store"]

T = TypeVar("T")

#: How long a decided or expired approval is kept for listing and audit lookups, seconds.
KEEP_S = 7 * 24 * 3600
PREFIX = "pdp:"


class ApprovalConflict(Exception):
    """The approval is not in a state that allows the change (carries its current state)."""

    def __init__(self, approval: Approval | None, status: str) -> None:
        super().__init__(status)
        self.approval = approval
        self.status = status


class ApprovalStore(Protocol):
    """Approvals shared by the replicas; every method may raise StoreError."""

    async def close(self) -> None: ...

    async def open_pending(self, approval: Approval, now: float) -> Approval:
        """Store ``approval`` (pending), unless the same call already has a pending,
        unexpired approval: then return that one."""

    async def get(self, approval_id: str) -> Approval | None: ...

    async def list(self, now: float, limit: int = 500) -> list[Approval]:
        """The newest approvals first."""

    async def decide(
        self, approval_id: str, change: Callable[[Approval], Approval], now: float
    ) -> Approval:
        """Apply ``change`` to a pending, unexpired approval; ApprovalConflict otherwise."""

    async def use(self, approval_id: str, binding: Binding, now: float) -> Approval:
        """Take one use of a granted approval bound to ``binding``; ApprovalConflict (with
        the approval_* code as status) otherwise."""


def _check_decide(current: Approval | None, now: float) -> Approval:
    if current is None:
        raise ApprovalConflict(None, "unknown")
    state = current.effective(now)
    if state != "pending":
        raise ApprovalConflict(current, state)
    return current


def _check_use(current: Approval | None, binding: Binding, now: float) -> Approval:
    if current is None:
        raise ApprovalConflict(None, "approval_unknown")
    refusal = current.refusal(binding, now)
    if refusal is not None:
        raise ApprovalConflict(current, refusal)
    return current


async def open_approval_store(
    url: str, *, password: str | None = None, shared: Store | None = None
) -> ApprovalStore:
    """The approval store of the PDP store URL (sqlite://path or redis[s]://, unix://);
    ``password``: Redis AUTH (PDP_STORE_PASSWORD_FILE). ``shared``: the credential store
    already open on that URL; a Redis one lends its client (no second pool)."""
    if url.startswith("sqlite://"):
        return await SQLiteApprovals.connect(Path(url[len("sqlite://") :]))
    if isinstance(shared, RedisStore):
        return RedisApprovals.sharing(shared)
    return await RedisApprovals.connect(url, password=password)


class SQLiteApprovals:
    """Approvals in the store's SQLite file (own connection, own worker thread)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, executor: ThreadPoolExecutor):
        self.path = path
        self._conn = conn
        self._executor = executor

    @classmethod
    async def connect(cls, path: Path) -> SQLiteApprovals:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdp-approvals")

        def connect() -> sqlite3.Connection:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(
                "CREATE TABLE IF NOT EXISTS approvals (id TEXT PRIMARY KEY, call TEXT NOT NULL,"
                " status TEXT NOT NULL, created_at REAL NOT NULL, keep_until REAL NOT NULL,"
                " doc TEXT NOT NULL);"
                "CREATE INDEX IF NOT EXISTS approvals_call ON approvals (call, status);"
            )
            return conn

        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except (OSError, sqlite3.Error) as exc:
            executor.shutdown(wait=False)
            raise StoreError(f"cannot open the approvals in {str(path)!r}: {exc}") from None
        return cls(path, conn, executor)

    async def _tx(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        def call() -> T:
            conn = self._conn
            try:
                if write:
                    conn.execute("BEGIN IMMEDIATE")
                result = fn(conn)
                if write:
                    conn.execute("COMMIT")
                return result
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"approvals in {str(self.path)!r}: {exc}") from None
                raise

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def close(self) -> None:
        await self._tx(lambda conn: conn.close(), write=False)
        self._executor.shutdown(wait=True)

    @staticmethod
    def _put(conn: sqlite3.Connection, a: Approval) -> None:
        keep = max(a.expires_at, a.grant_expires_at or 0) + KEEP_S
        conn.execute(
            "INSERT INTO approvals (id, call, status, created_at, keep_until, doc) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
            " keep_until = excluded.keep_until, doc = excluded.doc",
            (a.id, a.binding.digest(), a.status, a.created_at, keep, a.dumps()),
        )

    @staticmethod
    def _get(conn: sqlite3.Connection, approval_id: str) -> Approval | None:
        row = conn.execute("SELECT doc FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        return None if row is None else Approval.loads(row[0])

    async def open_pending(self, approval: Approval, now: float) -> Approval:
        def tx(conn: sqlite3.Connection) -> Approval:
            conn.execute("DELETE FROM approvals WHERE keep_until <= ?", (now,))
            for (doc,) in conn.execute(
                "SELECT doc FROM approvals WHERE call = ? AND status = 'pending'",
                (approval.binding.digest(),),
            ).fetchall():
                existing = Approval.loads(doc)
                if existing.effective(now) == "pending":
                    return existing
            self._put(conn, approval)
            return approval

        return await self._tx(tx)

    async def get(self, approval_id: str) -> Approval | None:
        return await self._tx(lambda conn: self._get(conn, approval_id), write=False)

    async def list(self, now: float, limit: int = 500) -> list[Approval]:
        rows = await self._tx(
            lambda conn: conn.execute(
                "SELECT doc FROM approvals WHERE keep_until > ? ORDER BY created_at DESC LIMIT ?",
                (now, limit),
            ).fetchall(),
            write=False,
        )
        return [Approval.loads(r[0]) for r in rows]

    async def decide(
        self, approval_id: str, change: Callable[[Approval], Approval], now: float
    ) -> Approval:
        def tx(conn: sqlite3.Connection) -> Approval:
            updated = change(_check_decide(self._get(conn, approval_id), now))
            self._put(conn, updated)
            return updated

        return await self._tx(tx)

    async def use(self, approval_id: str, binding: Binding, now: float) -> Approval:
        def tx(conn: sqlite3.Connection) -> Approval:
            updated = _check_use(self._get(conn, approval_id), binding, now).used_once()
            self._put(conn, updated)
            return updated

        return await self._tx(tx)


class RedisApprovals:
    """Approvals in the Redis store shared by the replicas."""

    def __init__(self, client: aioredis.Redis, *, owned: bool = True) -> None:
        """``owned``: close the client with this store (not when it is the credential
        store's, shared: :meth:`sharing`)."""
        self._r = client
        self._owned = owned

    @classmethod
    async def connect(cls, url: str, *, password: str | None = None) -> RedisApprovals:
        """A client of its own (tests, tools); the service shares the store's."""
        what = "the Redis store for approvals"
        return cls(await connect_redis(url, password=password, what=what))

    @classmethod
    def sharing(cls, store: RedisStore) -> RedisApprovals:
        """Approvals on the credential store's client and connection pool (one pool per
        process, one TLS/AUTH set-up); closing the approvals leaves it open."""
        return cls(store.client, owned=False)

    @property
    def client(self) -> aioredis.Redis:
        return self._r

    async def close(self) -> None:
        if self._owned:
            await self._r.aclose()

    @staticmethod
    def _key(approval_id: str) -> str:
        return f"{PREFIX}approval:{approval_id}"

    async def _atomic(
        self, keys: list[str], body: Callable[[aioredis.client.Pipeline], object]
    ) -> object:
        """Run ``body`` (reads, then pipe.multi() and writes) watching ``keys``; retried
        when another replica changed one of them meanwhile."""
        for _ in range(50):
            try:
                async with self._r.pipeline(transaction=True) as pipe:
                    await pipe.watch(*keys)
                    result = await body(pipe)  # type: ignore[misc]
                    await pipe.execute()
                    return result
            except WatchError:
                continue
            except (RedisError, OSError) as exc:
                raise StoreError(f"Redis store (approvals): {exc}") from None
        raise StoreError("Redis store (approvals): too much contention")

    def _write(self, pipe: aioredis.client.Pipeline, a: Approval) -> None:
        keep = int(max(a.expires_at, a.grant_expires_at or 0) + KEEP_S)
        pipe.set(self._key(a.id), a.dumps(), exat=keep)
        pipe.zadd(f"{PREFIX}approvals", {a.id: a.created_at})

    async def open_pending(self, approval: Approval, now: float) -> Approval:
        call = f"{PREFIX}approval-call:{approval.binding.digest()}"

        async def body(pipe: aioredis.client.Pipeline) -> Approval:
            existing_id = await pipe.get(call)
            if existing_id:
                raw = await pipe.get(self._key(str(existing_id)))
                if raw:
                    existing = Approval.loads(raw)
                    if existing.effective(now) == "pending":
                        pipe.multi()  # type: ignore[no-untyped-call]
                        return existing
            pipe.multi()  # type: ignore[no-untyped-call]
            self._write(pipe, approval)
            pipe.set(call, approval.id, exat=int(approval.expires_at) + 1)
            pipe.zremrangebyscore(f"{PREFIX}approvals", "-inf", now - KEEP_S)
            return approval

        result = await self._atomic([call], body)
        assert isinstance(result, Approval)
        return result

    async def get(self, approval_id: str) -> Approval | None:
        try:
            raw = await self._r.get(self._key(approval_id))
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis store (approvals): {exc}") from None
        return None if raw is None else Approval.loads(raw)

    async def list(self, now: float, limit: int = 500) -> list[Approval]:
        try:
            ids = await self._r.zrevrange(f"{PREFIX}approvals", 0, limit - 1)
            raws = await self._r.mget([self._key(str(i)) for i in ids]) if ids else []
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis store (approvals): {exc}") from None
        return [Approval.loads(r) for r in raws if r]

    async def _change(
        self, approval_id: str, check: Callable[[Approval | None], Approval]
    ) -> Approval:
        key = self._key(approval_id)

        async def body(pipe: aioredis.client.Pipeline) -> Approval:
            raw = await pipe.get(key)
            updated = check(None if raw is None else Approval.loads(raw))
            pipe.multi()  # type: ignore[no-untyped-call]
            self._write(pipe, updated)
            return updated

        result = await self._atomic([key], body)
        assert isinstance(result, Approval)
        return result

    async def decide(
        self, approval_id: str, change: Callable[[Approval], Approval], now: float
    ) -> Approval:
        return await self._change(approval_id, lambda a: change(_check_decide(a, now)))

    async def use(self, approval_id: str, binding: Binding, now: float) -> Approval:
        return await self._change(approval_id, lambda a: _check_use(a, binding, now).used_once())
