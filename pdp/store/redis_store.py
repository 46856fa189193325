"""The shared store for several replicas: Redis (redis-py asyncio).

Layout (prefix ``pdp:``)::

    pdp:revoked:<jti>      "1", expiring at the credential's exp + leeway (EXAT)
    pdp:agents             set of every agent SPIFFE ID seen or changed
    pdp:agent:<id>         hash: status, reason, changed_at, not_before, allowed, denied
    pdp:disabled           hash: id -> JSON AgentState, the set replicas cache
    pdp:first_seen         sorted set id -> time (ZADD NX: the earliest wins)
    pdp:last_seen          sorted set id -> time (ZADD GT: the latest wins)
    pdp:tools:<id>         set of tools used (before tool counts; read, no longer written)
    pdp:toolcounts:<id>    hash: tool -> allowed decisions, at most MAX_TOOLS_PER_AGENT
                           names plus "(other)" (one Lua script: checked and counted at once)
    pdp:creds:<id>         sorted set jti -> exp of outstanding credentials
    pdp:keys               hash: kid -> JSON KeyRecord (public material only)
    pdp:generation         rotation generation counter
    pdp:events             pub/sub channel: "agents" or "keys" changed
    pdp:hist:<key>         JSON session/task history (pdp.sessions), expiring with its TTL;
                           updated with WATCH/MULTI (optimistic, retried on conflict)

Multi-key updates run in MULTI/EXEC transactions, so a reader never sees an agent disabled
in one place and active in another.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

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

log = logging.getLogger("pdp.store")

PREFIX = "pdp:"
CHANNEL = PREFIX + "events"
#: Optimistic transactions (WATCH) are tried this often before the write fails.
_WATCH_ATTEMPTS = 5
#: Attempts of one optimistic history update before giving up (StoreError).
_HISTORY_RETRIES = 100
#: Count tool uses (ARGV: max names, the other bucket, then tool, n pairs) into the hash
#: KEYS[1], a new name beyond the max going to the other bucket; atomic, like any script.
_COUNT_TOOLS = """
local max, other = tonumber(ARGV[1]), ARGV[2]
for i = 3, #ARGV, 2 do
  local tool, n = ARGV[i], tonumber(ARGV[i + 1])
  if tool ~= other and redis.call('HEXISTS', KEYS[1], tool) == 0 then
    local names = redis.call('HLEN', KEYS[1]) - redis.call('HEXISTS', KEYS[1], other)
    if names >= max then tool = other end
  end
  redis.call('HINCRBY', KEYS[1], tool, n)
end
return 1
"""
#: Reconnect backoff of the pub/sub listener, seconds.
_LISTEN_BACKOFF = (0.1, 5.0)


async def connect_redis(
    url: str, *, password: str | None = None, what: str = "the Redis store"
) -> aioredis.Redis:
    """A client of ``url`` whose server answered a PING (the URL is never logged: it may
    hold a password). ``password``: Redis AUTH without putting it in the URL; a
    ``rediss://`` URL speaks TLS (``?ssl_ca_certs=``, ``ssl_certfile``, ``ssl_keyfile`` for
    a private CA and client certificates). Socket and connect timeouts: 5 s. ``what`` names
    the store in the StoreError."""
    extra: dict[str, Any] = {} if password is None else {"password": password}
    try:
        client = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5.0, socket_connect_timeout=5.0, **extra
        )
    except (TypeError, ValueError) as exc:
        raise StoreError(f"the Redis store URL is unusable: {exc}") from None
    try:
        await client.ping()
    except Exception as exc:  # RedisError, OSError, or a bad TLS option in the URL
        await client.aclose()
        raise StoreError(f"cannot reach {what}: {exc}") from None
    return client


class RedisStore:
    """The :class:`~pdp.store.Store` on a Redis server shared by the replicas."""

    kind = "redis"

    def __init__(self, client: aioredis.Redis) -> None:
        """Use :meth:`open`."""
        self._r = client

    @classmethod
    async def open(cls, url: str, *, password: str | None = None) -> RedisStore:
        """Connect to ``url`` (:func:`connect_redis`)."""
        return cls(await connect_redis(url, password=password))

    @property
    def client(self) -> aioredis.Redis:
        """The store's client (its connection pool), for another concept kept in the same
        Redis (pdp.approvals) to share instead of opening a second pool."""
        return self._r

    async def close(self) -> None:
        await self._r.aclose()

    async def _do(self, coro: Any) -> Any:
        """Await one command or one MULTI/EXEC pipeline. Whatever fails (the server, the
        connection, a value that cannot be encoded), the write is all or nothing: a
        transaction not yet EXECed is discarded by Redis when its connection drops, and
        redis-py drops a connection that failed mid-command. Every failure is a StoreError."""
        try:
            return await coro
        except (asyncio.CancelledError, WatchError):
            raise  # a WatchError is retried by _watched
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis store: {exc}") from None
        except Exception as exc:
            raise StoreError(f"Redis store: {type(exc).__name__}: {exc}") from None

    # -- revocation -------------------------------------------------------------------
    async def revoke(self, jti: str, sub: str | None, until: float, now: float) -> None:
        if until <= now:
            return  # already expired: nothing can accept it any more
        pipe = self._r.pipeline(transaction=True)
        pipe.set(f"{PREFIX}revoked:{jti}", "1", exat=math.ceil(until))
        if sub is not None:
            pipe.zrem(f"{PREFIX}creds:{sub}", jti)
        await self._do(pipe.execute())

    async def credential_state(self, jti: str, sub: str) -> tuple[bool, AgentState | None]:
        pipe = self._r.pipeline(transaction=False)
        pipe.exists(f"{PREFIX}revoked:{jti}")
        pipe.hmget(f"{PREFIX}agent:{sub}", ["status", "reason", "changed_at", "not_before"])
        revoked, fields = await self._do(pipe.execute())
        return bool(revoked), _state(sub, fields)

    # -- agents -----------------------------------------------------------------------
    async def set_agent_status(
        self, spiffe_id: str, status: AgentStatus, reason: str | None, now: float
    ) -> AgentState:
        key = f"{PREFIX}agent:{spiffe_id}"
        creds = f"{PREFIX}creds:{spiffe_id}"

        async def change(pipe: Any) -> AgentState:
            # WATCHed read, then MULTI/EXEC: if another replica changes the agent (or its
            # outstanding credentials) in between, EXEC fails and redis-py runs this again.
            old_status, old_changed, old_not_before = await pipe.hmget(
                key, ["status", "changed_at", "not_before"]
            )
            outstanding = await pipe.zrange(creds, 0, -1, withscores=True)
            not_before = int(old_not_before) if old_not_before else None
            mapping: dict[Any, Any] = {"status": status, "reason": reason or "", "changed_at": now}
            pipe.multi()
            if status == "active" and old_status == "disabled":
                not_before = enable_watermark(float(old_changed) if old_changed else None, now)
                mapping["not_before"] = not_before
                # Credentials minted by a replica that had not heard of the disable yet.
                for jti, exp in outstanding:
                    until = math.ceil(exp) + REVOCATION_SLACK_S
                    if until > now:
                        pipe.set(f"{PREFIX}revoked:{jti}", "1", exat=until)
                pipe.delete(creds)
            pipe.sadd(f"{PREFIX}agents", spiffe_id)
            pipe.hset(key, mapping=mapping)
            if status == "disabled":
                cached = {"reason": reason, "changed_at": now}
                pipe.hset(f"{PREFIX}disabled", spiffe_id, orjson.dumps(cached).decode())
            else:
                pipe.hdel(f"{PREFIX}disabled", spiffe_id)
            return AgentState(spiffe_id, status, reason, now, not_before)

        state: AgentState = await self._watched(change, key, creds)
        return state

    async def _watched(self, change: Any, *keys: str) -> Any:
        """Run ``change(pipe)`` as WATCH ``keys`` / read / MULTI / EXEC, again if another
        client changed a watched key in between, at most _WATCH_ATTEMPTS times. (redis-py's
        own ``transaction()`` retries forever, also when the connection keeps failing: a
        lost connection while watching surfaces as a WatchError.)"""
        for _ in range(_WATCH_ATTEMPTS):
            async with self._r.pipeline(transaction=True) as pipe:
                try:
                    await self._do(pipe.watch(*keys))
                    result = await change(pipe)
                    await self._do(pipe.execute())
                    return result
                except WatchError:
                    continue
                except StoreError:
                    raise
                except (RedisError, OSError) as exc:
                    raise StoreError(f"Redis store: {exc}") from None
                except Exception as exc:
                    raise StoreError(f"Redis store: {type(exc).__name__}: {exc}") from None
        raise StoreError(f"Redis store: {keys[0]} kept changing; gave up after {_WATCH_ATTEMPTS}")

    async def disabled_agents(self) -> dict[str, AgentState]:
        raw: dict[str, str] = await self._do(self._r.hgetall(f"{PREFIX}disabled"))
        out: dict[str, AgentState] = {}
        for spiffe_id, doc in raw.items():
            d = orjson.loads(doc)
            out[spiffe_id] = AgentState(
                spiffe_id=spiffe_id,
                status="disabled",
                reason=d.get("reason"),
                changed_at=d.get("changed_at"),
            )
        return out

    async def record_activity(self, batch: Sequence[AgentActivity], now: float) -> None:
        if not batch:
            return
        pipe = self._r.pipeline(transaction=True)  # all of the batch or none of it
        for a in batch:
            key = f"{PREFIX}agent:{a.spiffe_id}"
            pipe.sadd(f"{PREFIX}agents", a.spiffe_id)
            # LT / GT add missing members too, and otherwise keep the earliest / latest.
            pipe.zadd(f"{PREFIX}first_seen", {a.spiffe_id: a.first_seen}, lt=True)
            pipe.zadd(f"{PREFIX}last_seen", {a.spiffe_id: a.last_seen}, gt=True)
            if a.allowed:
                pipe.hincrby(key, "allowed", a.allowed)
            if a.denied:
                pipe.hincrby(key, "denied", a.denied)
            if a.tools:
                args: list[Any] = [MAX_TOOLS_PER_AGENT, OTHER_TOOLS]
                for tool, n in sorted(a.tools.items()):
                    args += [tool, n]
                pipe.eval(_COUNT_TOOLS, 1, f"{PREFIX}toolcounts:{a.spiffe_id}", *args)
            creds = f"{PREFIX}creds:{a.spiffe_id}"
            if a.credentials:
                pipe.zadd(creds, {jti: exp for jti, exp in a.credentials})
                pipe.expireat(creds, max(exp for _, exp in a.credentials), gt=True)
                pipe.expireat(creds, max(exp for _, exp in a.credentials), nx=True)
            pipe.zremrangebyscore(creds, "-inf", now)
        await self._do(pipe.execute())

    async def list_agents(self, now: float) -> list[AgentRecord]:
        ids = sorted(await self._do(self._r.smembers(f"{PREFIX}agents")))
        pipe = self._r.pipeline(transaction=False)
        for spiffe_id in ids:
            pipe.hmget(
                f"{PREFIX}agent:{spiffe_id}",
                ["status", "reason", "changed_at", "allowed", "denied"],
            )
            pipe.zscore(f"{PREFIX}first_seen", spiffe_id)
            pipe.zscore(f"{PREFIX}last_seen", spiffe_id)
            pipe.smembers(f"{PREFIX}tools:{spiffe_id}")
            pipe.zcount(f"{PREFIX}creds:{spiffe_id}", f"({now}", "+inf")
            pipe.hgetall(f"{PREFIX}toolcounts:{spiffe_id}")
        results = await self._do(pipe.execute())
        records = []
        for i, spiffe_id in enumerate(ids):
            fields, first, last, legacy, outstanding, counted = results[i * 6 : i * 6 + 6]
            counts = {tool: 0 for tool in legacy} | {t: int(n) for t, n in counted.items()}
            status: AgentStatus = "disabled" if fields[0] == "disabled" else "active"
            records.append(
                AgentRecord(
                    spiffe_id=spiffe_id,
                    status=status,
                    reason=fields[1] or None,
                    status_changed_at=float(fields[2]) if fields[2] else None,
                    first_seen=first,
                    last_seen=last,
                    decisions_allowed=int(fields[3] or 0),
                    decisions_denied=int(fields[4] or 0),
                    tools_used=sorted(counts),
                    credentials_outstanding=int(outstanding) if status == "active" else 0,
                    tool_counts=counts,
                )
            )
        return records

    # -- keys -------------------------------------------------------------------------
    async def list_keys(self) -> list[KeyRecord]:
        raw: dict[str, str] = await self._do(self._r.hgetall(f"{PREFIX}keys"))
        return [KeyRecord.loads(raw[kid]) for kid in sorted(raw)]

    async def put_keys(self, records: Sequence[KeyRecord]) -> None:
        if records:
            mapping: dict[Any, Any] = {r.kid: r.dumps() for r in records}
            await self._do(self._r.hset(f"{PREFIX}keys", mapping=mapping))

    async def delete_key(self, kid: str) -> None:
        await self._do(self._r.hdel(f"{PREFIX}keys", kid))

    async def rotation_generation(self) -> int:
        value = await self._do(self._r.get(f"{PREFIX}generation"))
        return int(value) if value else 0

    async def bump_rotation_generation(self) -> int:
        return int(await self._do(self._r.incr(f"{PREFIX}generation")))

    # -- session histories ------------------------------------------------------------
    async def session_histories(self, keys: Sequence[str], now: float) -> dict[str, Any]:
        if not keys:
            return {}
        values = await self._do(self._r.mget([f"{PREFIX}hist:{k}" for k in keys]))
        return {k: orjson.loads(v) for k, v in zip(keys, values, strict=True) if v is not None}

    async def update_session_histories(
        self,
        keys: Sequence[str],
        merge: Callable[[str, dict[str, Any] | None], dict[str, Any]],
        *,
        ttl_s: float,
        now: float,
    ) -> None:
        for key in keys:
            await self._do(self._update_history(key, merge, ttl_s))

    async def _update_history(
        self,
        key: str,
        merge: Callable[[str, dict[str, Any] | None], dict[str, Any]],
        ttl_s: float,
    ) -> None:
        """Read, merge and write one history in a WATCH/MULTI transaction: a concurrent
        update by another replica aborts ours, which is then retried on the new value."""
        name = f"{PREFIX}hist:{key}"
        for attempt in range(_HISTORY_RETRIES):
            if attempt:
                # Jittered backoff: contenders (replicas deciding calls of one task at the
                # same moment) spread out instead of colliding again.
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * attempt)))
            async with self._r.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(name)
                    raw = await pipe.get(name)
                    doc = merge(key, orjson.loads(raw) if raw is not None else None)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(name, orjson.dumps(doc).decode(), px=max(1, int(ttl_s * 1000)))
                    await pipe.execute()
                    return
                except WatchError:
                    continue
        raise StoreError(f"Redis store: history {key!r} kept changing under us")

    # -- events -----------------------------------------------------------------------
    async def publish(self, event: str) -> None:
        await self._do(self._r.publish(CHANNEL, event))

    async def listen(self, on_event: Callable[[str], None]) -> None:
        """Subscribe to the events channel; reconnect with backoff until cancelled. After a
        reconnect every event is replayed as "changed", since messages may have been lost."""
        delay = _LISTEN_BACKOFF[0]
        reconnected = False
        while True:
            pubsub = self._r.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                if reconnected:
                    for event in ("agents", "keys"):
                        on_event(event)
                delay = _LISTEN_BACKOFF[0]
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message.get("type") == "message":
                        on_event(str(message["data"]))
            except (RedisError, OSError) as exc:
                log.warning("store events: %s; reconnecting in %.1f s", exc, delay)
                reconnected = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, _LISTEN_BACKOFF[1])
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]


def _state(spiffe_id: str, fields: list[Any]) -> AgentState | None:
    status, reason, changed_at, not_before = fields
    if status is None:
        return None
    return AgentState(
        spiffe_id=spiffe_id,
        status=status,
        reason=reason or None,
        changed_at=float(changed_at) if changed_at else None,
        credentials_not_before=int(not_before) if not_before else None,
    )
