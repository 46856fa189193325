"""The embedded store: one SQLite file in the state directory (the default).

Every statement runs on one dedicated worker thread, so the event loop never blocks on a
disk write (commits are fsynced: ``synchronous=FULL`` in WAL mode, so an answered revoke
or disable survives a crash). Expired revocations and credentials are purged on every
activity flush, so the file stays bounded by what is live.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from . import (
    MAX_TOOLS_PER_AGENT,
    OTHER_TOOLS,
    REVOCATION_SLACK_S,
    AgentActivity,
    AgentRecord,
    AgentState,
    AgentStatus,
    KeyRecord,
    StoreError,
    enable_watermark,
)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS revocations (jti TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS agents (
    spiffe_id TEXT PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'active',
    reason TEXT,
    changed_at REAL,
    not_before INTEGER,
    first_seen REAL,
    last_seen REAL,
    allowed INTEGER NOT NULL DEFAULT 0,
    denied INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS agent_tools (
    spiffe_id TEXT NOT NULL, tool TEXT NOT NULL, uses INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (spiffe_id, tool)
);
CREATE TABLE IF NOT EXISTS credentials (
    jti TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL, exp INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS credentials_agent ON credentials (spiffe_id, exp);
CREATE TABLE IF NOT EXISTS signing_keys (kid TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS session_history (
    key TEXT PRIMARY KEY, doc TEXT NOT NULL, expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS session_history_expires ON session_history (expires);
"""


class SQLiteStore:
    """The :class:`~pdp.store.Store` on one SQLite file."""

    kind = "sqlite"

    def __init__(self, path: Path, conn: sqlite3.Connection, executor: ThreadPoolExecutor):
        """Use :meth:`open`."""
        self.path = path
        self._conn = conn
        self._executor = executor

    @classmethod
    async def open(cls, path: str | Path) -> SQLiteStore:
        """Open (creating, 0600) the database at ``path``."""
        path = Path(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdp-sqlite")

        def connect() -> sqlite3.Connection:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)
            path.chmod(0o600)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(agent_tools)")}
            if "uses" not in columns:  # a store from before tool counts
                conn.execute("ALTER TABLE agent_tools ADD COLUMN uses INTEGER NOT NULL DEFAULT 0")
            return conn

        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, connect)
        except (OSError, sqlite3.Error) as exc:
            executor.shutdown(wait=False)
            raise StoreError(f"cannot open the SQLite store at {str(path)!r}: {exc}") from None
        return cls(path, conn, executor)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            try:
                return fn(self._conn)
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StoreError(f"SQLite store {str(self.path)!r}: {exc}") from None

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one IMMEDIATE transaction (one fsynced commit)."""

        def tx(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            result = fn(conn)
            conn.execute("COMMIT")
            return result

        return await self._run(tx)

    async def close(self) -> None:
        await self._run(lambda conn: conn.close())
        self._executor.shutdown(wait=True)

    # -- revocation -------------------------------------------------------------------
    async def revoke(self, jti: str, sub: str | None, until: float, now: float) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO revocations (jti, until) VALUES (?, ?) "
                "ON CONFLICT (jti) DO UPDATE SET until = max(until, excluded.until)",
                (jti, until),
            )
            conn.execute("DELETE FROM credentials WHERE jti = ?", (jti,))

        await self._write(tx)

    async def credential_state(self, jti: str, sub: str) -> tuple[bool, AgentState | None]:
        def read(conn: sqlite3.Connection) -> tuple[bool, AgentState | None]:
            revoked = conn.execute("SELECT 1 FROM revocations WHERE jti = ?", (jti,)).fetchone()
            row = conn.execute(
                "SELECT spiffe_id, status, reason, changed_at, not_before FROM agents "
                "WHERE spiffe_id = ?",
                (sub,),
            ).fetchone()
            return revoked is not None, None if row is None else _state(row)

        return await self._run(read)

    # -- agents -----------------------------------------------------------------------
    async def set_agent_status(
        self, spiffe_id: str, status: AgentStatus, reason: str | None, now: float
    ) -> AgentState:
        def tx(conn: sqlite3.Connection) -> AgentState:
            row = conn.execute(
                "SELECT status, changed_at, not_before FROM agents WHERE spiffe_id = ?",
                (spiffe_id,),
            ).fetchone()
            not_before = row[2] if row else None
            if status == "active" and row is not None and row[0] == "disabled":
                not_before = enable_watermark(row[1], now)
                # Credentials minted by a replica that had not heard of the disable yet.
                conn.execute(
                    "INSERT INTO revocations (jti, until) SELECT jti, exp + ? FROM credentials "
                    "WHERE spiffe_id = ? ON CONFLICT (jti) DO NOTHING",
                    (REVOCATION_SLACK_S, spiffe_id),
                )
                conn.execute("DELETE FROM credentials WHERE spiffe_id = ?", (spiffe_id,))
            conn.execute(
                "INSERT INTO agents (spiffe_id, status, reason, changed_at, not_before) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (spiffe_id) DO UPDATE SET "
                "status = excluded.status, reason = excluded.reason, "
                "changed_at = excluded.changed_at, not_before = excluded.not_before",
                (spiffe_id, status, reason, now, not_before),
            )
            return AgentState(spiffe_id, status, reason, now, not_before)

        return await self._write(tx)

    async def disabled_agents(self) -> dict[str, AgentState]:
        def read(conn: sqlite3.Connection) -> dict[str, AgentState]:
            rows = conn.execute(
                "SELECT spiffe_id, status, reason, changed_at, not_before FROM agents "
                "WHERE status = 'disabled'"
            ).fetchall()
            return {row[0]: _state(row) for row in rows}

        return await self._run(read)

    async def record_activity(self, batch: Sequence[AgentActivity], now: float) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            for a in batch:
                conn.execute(
                    "INSERT INTO agents (spiffe_id, first_seen, last_seen, allowed, denied) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (spiffe_id) DO UPDATE SET "
                    "first_seen = min(coalesce(first_seen, excluded.first_seen), "
                    "excluded.first_seen), "
                    "last_seen = max(coalesce(last_seen, excluded.last_seen), "
                    "excluded.last_seen), "
                    "allowed = allowed + excluded.allowed, denied = denied + excluded.denied",
                    (a.spiffe_id, a.first_seen, a.last_seen, a.allowed, a.denied),
                )
                for tool, n in sorted(a.tools.items()):
                    _count_tool(conn, a.spiffe_id, tool, n)
                conn.executemany(
                    "INSERT OR IGNORE INTO credentials (jti, spiffe_id, exp) VALUES (?, ?, ?)",
                    [(jti, a.spiffe_id, exp) for jti, exp in a.credentials],
                )
            conn.execute("DELETE FROM credentials WHERE exp <= ?", (now,))
            conn.execute("DELETE FROM revocations WHERE until <= ?", (now,))

        await self._write(tx)

    async def list_agents(self, now: float) -> list[AgentRecord]:
        def read(conn: sqlite3.Connection) -> list[AgentRecord]:
            tools: dict[str, dict[str, int]] = {}
            for spiffe_id, tool, uses in conn.execute(
                "SELECT spiffe_id, tool, uses FROM agent_tools ORDER BY spiffe_id, tool"
            ):
                tools.setdefault(spiffe_id, {})[tool] = uses
            outstanding = dict(
                conn.execute(
                    "SELECT spiffe_id, count(*) FROM credentials WHERE exp > ? GROUP BY spiffe_id",
                    (now,),
                ).fetchall()
            )
            rows = conn.execute(
                "SELECT spiffe_id, status, reason, changed_at, first_seen, last_seen, "
                "allowed, denied FROM agents ORDER BY spiffe_id"
            ).fetchall()
            return [
                AgentRecord(
                    spiffe_id=r[0],
                    status=r[1],
                    reason=r[2],
                    status_changed_at=r[3],
                    first_seen=r[4],
                    last_seen=r[5],
                    decisions_allowed=r[6],
                    decisions_denied=r[7],
                    tools_used=sorted(tools.get(r[0], {})),
                    credentials_outstanding=outstanding.get(r[0], 0) if r[1] == "active" else 0,
                    tool_counts=tools.get(r[0], {}),
                )
                for r in rows
            ]

        return await self._run(read)

    # -- keys -------------------------------------------------------------------------
    async def list_keys(self) -> list[KeyRecord]:
        rows = await self._run(
            lambda conn: conn.execute("SELECT record FROM signing_keys ORDER BY kid").fetchall()
        )
        return [KeyRecord.loads(row[0]) for row in rows]

    async def put_keys(self, records: Sequence[KeyRecord]) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO signing_keys (kid, record) VALUES (?, ?) "
                "ON CONFLICT (kid) DO UPDATE SET record = excluded.record",
                [(r.kid, r.dumps()) for r in records],
            )

        await self._write(tx)

    async def delete_key(self, kid: str) -> None:
        await self._write(
            lambda conn: conn.execute("DELETE FROM signing_keys WHERE kid = ?", (kid,))
        )

    async def rotation_generation(self) -> int:
        row = await self._run(
            lambda conn: conn.execute("SELECT value FROM meta WHERE name = 'generation'").fetchone()
        )
        return int(row[0]) if row else 0

    async def bump_rotation_generation(self) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO meta (name, value) VALUES ('generation', 1) "
                "ON CONFLICT (name) DO UPDATE SET value = value + 1"
            )
            row = conn.execute("SELECT value FROM meta WHERE name = 'generation'").fetchone()
            return int(row[0])

        return await self._write(tx)

    # -- session histories ------------------------------------------------------------
    async def session_histories(self, keys: Sequence[str], now: float) -> dict[str, Any]:
        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            marks = ",".join("?" * len(keys))
            rows = conn.execute(
                f"SELECT key, doc FROM session_history WHERE key IN ({marks}) AND expires > ?",
                (*keys, now),
            ).fetchall()
            return {key: json.loads(doc) for key, doc in rows}

        if not keys:
            return {}
        return await self._run(read)

    async def update_session_histories(
        self,
        keys: Sequence[str],
        merge: Callable[[str, dict[str, Any] | None], dict[str, Any]],
        *,
        ttl_s: float,
        now: float,
    ) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            # Expired histories go first (bounded file); then read-merge-write, all in one
            # IMMEDIATE transaction: no other writer can interleave.
            conn.execute("DELETE FROM session_history WHERE expires <= ?", (now,))
            for key in keys:
                row = conn.execute(
                    "SELECT doc FROM session_history WHERE key = ?", (key,)
                ).fetchone()
                doc = merge(key, json.loads(row[0]) if row else None)
                conn.execute(
                    "INSERT INTO session_history (key, doc, expires) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET doc = excluded.doc, "
                    "expires = excluded.expires",
                    (key, json.dumps(doc, separators=(",", ":")), now + ttl_s),
                )

        await self._write(tx)

    # -- events -----------------------------------------------------------------------
    async def publish(self, event: str) -> None:
        """Nothing to do: processes sharing the file pick changes up on their refresh."""

    async def listen(self, on_event: Callable[[str], None]) -> None:
        """No push notifications in SQLite: wait (the periodic refresh does the work)."""
        await asyncio.Event().wait()


def _state(row: Any) -> AgentState:
    return AgentState(
        spiffe_id=row[0],
        status=row[1],
        reason=row[2],
        changed_at=row[3],
        credentials_not_before=row[4],
    )


def _count_tool(conn: sqlite3.Connection, spiffe_id: str, tool: str, n: int) -> None:
    """Add ``n`` uses of ``tool``; a new name beyond MAX_TOOLS_PER_AGENT counts as OTHER_TOOLS."""
    known = conn.execute(
        "SELECT 1 FROM agent_tools WHERE spiffe_id = ? AND tool = ?", (spiffe_id, tool)
    ).fetchone()
    if known is None and tool != OTHER_TOOLS:
        (names,) = conn.execute(
            "SELECT count(*) FROM agent_tools WHERE spiffe_id = ? AND tool != ?",
            (spiffe_id, OTHER_TOOLS),
        ).fetchone()
        if names >= MAX_TOOLS_PER_AGENT:
            tool = OTHER_TOOLS
    conn.execute(
        "INSERT INTO agent_tools (spiffe_id, tool, uses) VALUES (?, ?, ?) "
        "ON CONFLICT (spiffe_id, tool) DO UPDATE SET uses = uses + excluded.uses",
        (spiffe_id, tool, n),
    )
