"""Session and task history: what an agent already did in this task, for chain-aware policy.

Per task (``task.id``) and per session (``task.session``, the MCP session when the call came
through ``pdpctl mcp-gateway``) the PDP keeps a *bounded* history of the calls it allowed:
how many, how many changed state, which action types, tools and destinations, the highest
data sensitivity touched, first and last time, the distinct call shapes in the order first
seen and the last few calls. Policies see it as ``input.session`` (see
:func:`SessionHistory.snapshot` and ``pdp/schemas/opa-input.schema.json``)::

    {"available": true, "origin": "sqlite" | "redis", "error": null,
     "read_at_ns": <when the snapshot was read, before the decision>,
     "task": <history> | null, "session": <history> | null}

    history = {"id", "calls", "state_changing", "first_at_ns", "last_at_ns", "age_s",
               "max_sensitivity", "max_sensitivity_rank", "action_types": {type: count},
               "tools": [...], "destinations": [...], "steps": [<shape>...],
               "recent": [<shape + at_ns>...], "truncated": bool}

Histories are keyed by tenant and id (an id in one tenant never reads another tenant's
history) and expire ``PDP_SESSION_TTL_S`` after their last call. They are updated in the
store **after** an allowed decision is recorded, atomically (one SQLite transaction; a
WATCH/MULTI transaction in Redis, retried on conflict), so every replica on a shared Redis
sees the same history. Within one process the decisions of one task are serialized (read
history, decide, record, update) so two concurrent calls cannot both see the history
before the other; across replicas two calls of the same task in flight at the same moment
may both decide on the history before either (documented in docs/mcp.md, "Limits").

Reading the history fails closed: when the store cannot be read, ``available`` is false
and the library denies every call that names a task or session (``session_unavailable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final

from .normalize import DEFAULT_SENSITIVITY, SENSITIVITY_RANKS
from .store import Store, StoreError

__all__ = [
    "MAX_RECENT",
    "MAX_STEPS",
    "SessionHistory",
    "empty_history",
    "merge_call",
    "session_keys",
    "state_changing",
]

#: The last calls kept in order (``recent``).
MAX_RECENT: Final = 16
#: Distinct call shapes kept (``steps``); past this ``truncated`` turns true and stays.
MAX_STEPS: Final = 128
#: Distinct tools and destinations kept.
MAX_NAMES: Final = 128
#: Distinct action types counted (the schema has 7; a bound all the same).
MAX_ACTION_TYPES: Final = 32

#: Action types that change state whatever the operation says.
STATE_CHANGING_TYPES: Final = frozenset({"data.write", "data.export"})
_RANK_NAMES: Final = {rank: name for name, rank in SENSITIVITY_RANKS.items()}


def state_changing(action: Mapping[str, Any]) -> bool:
    """Whether a call changes state: any operation but an explicit ``read``, and every
    data.write and data.export. The Rego library (``pdp.facts.state_changing``, which the
    budget rule judges the current call by) applies the same definition."""
    return action.get("operation") != "read" or action.get("type") in STATE_CHANGING_TYPES


def session_keys(request: Mapping[str, Any]) -> dict[str, str]:
    """``{"task": key, "session": key}`` for the ids the request names (tenant-scoped)."""
    tenant = request.get("tenant", "")
    task = request.get("task") or {}
    keys = {}
    if task.get("id"):
        keys["task"] = f"task/{tenant}/{task['id']}"
    if task.get("session"):
        keys["session"] = f"session/{tenant}/{task['session']}"
    return keys


def empty_history(history_id: str) -> dict[str, Any]:
    """A history with no calls yet."""
    return {
        "id": history_id,
        "calls": 0,
        "state_changing": 0,
        "first_at_ns": None,
        "last_at_ns": None,
        "max_sensitivity": None,
        "max_sensitivity_rank": -1,
        "action_types": {},
        "tools": [],
        "destinations": [],
        "steps": [],
        "recent": [],
        "truncated": False,
    }


def call_shape(request: Mapping[str, Any], input_doc: Mapping[str, Any]) -> dict[str, Any]:
    """The call as a history keeps it: action, destination and sensitivity (no arguments)."""
    action = request["action"]
    dest = input_doc.get("destination") or request["destination"]
    data = input_doc.get("data") or {}
    sensitivity = data.get("sensitivity", DEFAULT_SENSITIVITY)
    return {
        "type": action["type"],
        "name": action.get("name"),
        "operation": action.get("operation"),
        "destination": dest["name"],
        "destination_type": dest["type"],
        "sensitivity_rank": SENSITIVITY_RANKS.get(sensitivity, 3),
        "categories": list(data.get("categories", [])),
        "state_changing": state_changing(action),
    }


def merge_call(
    history: Mapping[str, Any] | None, history_id: str, shape: Mapping[str, Any], at_ns: int
) -> dict[str, Any]:
    """The history with one more allowed call (pure; every list stays bounded)."""
    doc = dict(history) if history else empty_history(history_id)
    doc["calls"] = int(doc.get("calls", 0)) + 1
    if shape["state_changing"]:
        doc["state_changing"] = int(doc.get("state_changing", 0)) + 1
    if doc.get("first_at_ns") is None:
        doc["first_at_ns"] = at_ns
    doc["last_at_ns"] = max(at_ns, int(doc.get("last_at_ns") or 0))
    rank = int(shape["sensitivity_rank"])
    if rank > int(doc.get("max_sensitivity_rank", -1)):
        doc["max_sensitivity_rank"] = rank
        doc["max_sensitivity"] = _RANK_NAMES[rank]
    types = dict(doc.get("action_types") or {})
    if shape["type"] in types or len(types) < MAX_ACTION_TYPES:
        types[shape["type"]] = int(types.get(shape["type"], 0)) + 1
    else:
        doc["truncated"] = True
    doc["action_types"] = types
    doc["tools"] = _add_name(doc, "tools", shape["name"])
    doc["destinations"] = _add_name(doc, "destinations", shape["destination"])
    keys = ("type", "name", "operation", "destination", "destination_type", "categories")
    step = {k: shape.get(k, [] if k == "categories" else None) for k in keys}
    step["sensitivity_rank"] = rank
    steps = list(doc.get("steps") or [])
    if step not in steps:
        if len(steps) < MAX_STEPS:
            steps.append(step)
        else:
            doc["truncated"] = True
    doc["steps"] = steps
    recent = list(doc.get("recent") or [])
    recent.append({**step, "at_ns": at_ns})
    doc["recent"] = recent[-MAX_RECENT:]
    return doc


def _add_name(doc: dict[str, Any], key: str, name: str | None) -> list[str]:
    names = list(doc.get(key) or [])
    if name and name not in names:
        if len(names) < MAX_NAMES:
            names.append(name)
        else:
            doc["truncated"] = True
    return names


def _with_age(history: Mapping[str, Any] | None, now_ns: int) -> dict[str, Any] | None:
    if history is None:
        return None
    last = history.get("last_at_ns")
    age = None if last is None else round(max(0, now_ns - int(last)) / 1e9, 3)
    return {**history, "age_s": age}


class SessionHistory:
    """Reads the snapshot policies see and records allowed calls, over one store."""

    def __init__(
        self,
        store: Store,
        *,
        ttl_s: float,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.clock_ns = clock_ns
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @contextlib.asynccontextmanager
    async def serialized(self, request: Mapping[str, Any]) -> AsyncIterator[None]:
        """Hold the per-task/session locks of ``request`` (in key order, so no deadlock)."""
        keys = sorted(session_keys(request).values())
        if not keys:  # most decisions name no task or session: nothing to hold
            yield
            return
        locks = []
        for key in keys:
            lock = self._locks.get(key)
            if lock is None:
                lock = asyncio.Lock()
                self._locks[key] = lock
            locks.append(lock)
        async with contextlib.AsyncExitStack() as stack:
            for lock in locks:
                await stack.enter_async_context(lock)
            yield

    async def snapshot(self, request: Mapping[str, Any], now_ns: int) -> dict[str, Any]:
        """``input.session`` for ``request``: its task's and session's histories as stored
        now; ``available: false`` (never an exception) when the store cannot be read."""
        keys = session_keys(request)
        doc: dict[str, Any] = {
            "available": True,
            "origin": self.store.kind,
            "error": None,
            "read_at_ns": now_ns,
            "task": None,
            "session": None,
        }
        if not keys:
            return doc
        try:
            found = await self.store.session_histories(list(keys.values()), now_ns / 1e9)
        except StoreError as exc:
            doc.update(available=False, error=str(exc))
            return doc
        for scope, key in keys.items():
            doc[scope] = _with_age(found.get(key), now_ns)
        return doc

    async def record(
        self, request: Mapping[str, Any], input_doc: Mapping[str, Any], at_ns: int
    ) -> None:
        """Add one allowed call to its task's and session's histories (atomically per
        key). Raises :class:`StoreError` when the store cannot be written."""
        keys = session_keys(request)
        if not keys:
            return
        shape = call_shape(request, input_doc)
        ids = {key: _id_of(key) for key in keys.values()}

        def merge(key: str, history: dict[str, Any] | None) -> dict[str, Any]:
            return merge_call(history, ids[key], shape, at_ns)

        await self.store.update_session_histories(
            list(keys.values()), merge, ttl_s=self.ttl_s, now=at_ns / 1e9
        )


def _id_of(key: str) -> str:
    return key.split("/", 2)[2]


def unavailable_snapshot(now_ns: int, error: str) -> dict[str, Any]:
    """``input.session`` when the PDP keeps no history (no store): fails closed."""
    return {
        "available": False,
        "origin": None,
        "error": error,
        "read_at_ns": now_ns,
        "task": None,
        "session": None,
    }
