"""State that survives restarts and is shared by replicas: the store interface.

Two implementations behind one :class:`Store` protocol:

* :class:`~pdp.store.sqlite.SQLiteStore` (default): one SQLite file in the state directory,
  for a single PDP (or a few on one host sharing the file);
* :class:`~pdp.store.redis_store.RedisStore` (``PDP_STORE_URL=redis://...``): several
  replicas share revocations, agent lifecycle, agent activity and key metadata, and hear
  each other's changes over pub/sub.

What lives here, and why each is safe to keep in it:

    revocations        jti -> exp; an entry expires with its credential (bounded memory)
    agents             lifecycle status (active/disabled, reason, since), activity counters,
                       tools used, outstanding credential ids (jti + exp, never the token)
    keys               metadata and *public* JWKs of the signing keys; private keys stay in
                       each replica's state directory (0600) and never enter the store
    rotation           a generation counter: bumping it asks every replica to rotate
    session histories  per task / session (tenant-scoped key) -> bounded JSON history of the
                       allowed calls (pdp.sessions), expiring PDP_SESSION_TTL_S after the last

The decision path never waits on the store: it reads in-memory caches that the store
refreshes (pub/sub, plus a periodic refresh as the staleness bound); activity is written
behind in batches. Introspection and revocation do go to the store, so they see a
revocation or a disable at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from ..errors import StoreError

__all__ = [
    "MAX_TOOLS_PER_AGENT",
    "OTHER_TOOLS",
    "count_tool",
    "AgentActivity",
    "AgentRecord",
    "AgentState",
    "KeyRecord",
    "Store",
    "StoreError",
    "open_store",
]

AgentStatus = Literal["active", "disabled"]
#: Events replicas publish to each other: the disabled-agent set or the key set changed.
EVENTS = ("agents", "keys")


#: How long past its exp a credential revoked in bulk (on enable) stays listed, seconds:
#: more than any verifier's clock leeway.
REVOCATION_SLACK_S = 300


def enable_watermark(disabled_at: float | None, now: float) -> int:
    """``credentials_not_before`` of an agent enabled at ``now`` after a disable at
    ``disabled_at``: the first whole second after the disable. A credential's ``iat`` is a
    whole second, so every credential issued in or before the disable's second stays
    inactive (and one minted in that same second after an immediate enable, too: fail
    closed for at most a second)."""
    return int(disabled_at if disabled_at is not None else now) + 1


@dataclass(frozen=True, slots=True)
class AgentState:
    """An agent's lifecycle state as an operator set it."""

    spiffe_id: str
    status: AgentStatus
    reason: str | None = None
    #: When the status last changed (seconds since the epoch), None if it never did.
    changed_at: float | None = None
    #: Credentials issued before this time (their iat) are inactive, even once the agent is
    #: enabled again: set on enable (see enable_watermark), so nothing minted before or
    #: during a disable revives.
    credentials_not_before: int | None = None

    def active_for(self, iat: int | float | None) -> bool:
        """Whether a credential issued at ``iat`` to this agent is still acceptable."""
        if self.status != "active":
            return False
        if self.credentials_not_before is None:
            return True
        return iat is not None and iat >= self.credentials_not_before


#: Distinct tool names kept per agent; further names are counted under OTHER_TOOLS, so an
#: agent (or a caller naming tools at random) cannot grow the registry without bound.
MAX_TOOLS_PER_AGENT = 64
#: The bucket of tool names beyond MAX_TOOLS_PER_AGENT, and of names outside the documented
#: character set (never stored as given).
OTHER_TOOLS = "(other)"


def count_tool(counts: dict[str, int], tool: str, n: int = 1) -> None:
    """Add ``n`` uses of ``tool`` to ``counts``, keeping at most MAX_TOOLS_PER_AGENT names
    (plus OTHER_TOOLS)."""
    if tool not in counts and len(counts.keys() - {OTHER_TOOLS}) >= MAX_TOOLS_PER_AGENT:
        tool = OTHER_TOOLS
    counts[tool] = counts.get(tool, 0) + n


@dataclass(slots=True)
class AgentActivity:
    """What one replica saw of one agent since its last write-behind flush."""

    spiffe_id: str
    first_seen: float
    last_seen: float
    allowed: int = 0
    denied: int = 0
    #: Allowed decisions per tool name (bounded, see count_tool).
    tools: dict[str, int] = field(default_factory=dict)
    #: (jti, exp) of credentials minted for the agent.
    credentials: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """One row of GET /v1/agents."""

    spiffe_id: str
    status: AgentStatus
    reason: str | None
    status_changed_at: float | None
    first_seen: float | None
    last_seen: float | None
    decisions_allowed: int
    decisions_denied: int
    tools_used: list[str]
    credentials_outstanding: int
    #: Allowed decisions per tool name; at most MAX_TOOLS_PER_AGENT names plus "(other)".
    tool_counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """Metadata and public JWK of one credential-signing key (never the private key)."""

    kid: str
    alg: str
    #: Public JWK with kid, use "sig" and alg.
    jwk: dict[str, Any]
    #: The replica whose state directory holds the private key.
    node: str
    created_at: float
    #: "current": the node signs with it; "retired": kept for verification only.
    state: Literal["current", "retired"]
    #: Rotation generation the key was created for (see Store.rotation_generation).
    generation: int
    retired_at: float | None = None
    #: When a retired key may leave the JWKS: the last exp it signed, plus clock leeway.
    drop_after: float | None = None

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str | bytes) -> KeyRecord:
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise StoreError("key record is not a JSON object")
        try:
            return cls(**doc)
        except TypeError as exc:
            raise StoreError(f"key record is malformed: {exc}") from None

    def public_view(self) -> dict[str, Any]:
        """What `pdpctl keys list` shows."""
        return {
            "kid": self.kid,
            "alg": self.alg,
            "node": self.node,
            "state": self.state,
            "created_at": self.created_at,
            "retired_at": self.retired_at,
            "drop_after": self.drop_after,
            "generation": self.generation,
        }


class Store(Protocol):
    """The state agent-pdp keeps outside a single process. Every method may raise
    :class:`StoreError`; callers on the decision path never call it directly."""

    #: "sqlite" or "redis", for logs and metrics.
    kind: str

    async def close(self) -> None: ...

    # -- revocation (RFC 7009) --------------------------------------------------------
    async def revoke(self, jti: str, sub: str | None, until: float, now: float) -> None:
        """Remember ``jti`` as revoked until ``until`` (its exp plus leeway); drop it from
        ``sub``'s outstanding credentials."""

    async def credential_state(self, jti: str, sub: str) -> tuple[bool, AgentState | None]:
        """(is ``jti`` revoked, ``sub``'s lifecycle state or None if never changed)."""

    # -- agent lifecycle --------------------------------------------------------------
    async def set_agent_status(
        self, spiffe_id: str, status: AgentStatus, reason: str | None, now: float
    ) -> AgentState: ...

    async def disabled_agents(self) -> dict[str, AgentState]: ...

    async def record_activity(self, batch: Sequence[AgentActivity], now: float) -> None: ...

    async def list_agents(self, now: float) -> list[AgentRecord]: ...

    # -- signing keys -----------------------------------------------------------------
    async def list_keys(self) -> list[KeyRecord]: ...

    async def put_keys(self, records: Sequence[KeyRecord]) -> None: ...

    async def delete_key(self, kid: str) -> None: ...

    async def rotation_generation(self) -> int: ...

    async def bump_rotation_generation(self) -> int: ...

    # -- session histories (pdp.sessions) ---------------------------------------------
    async def session_histories(self, keys: Sequence[str], now: float) -> dict[str, Any]:
        """The unexpired histories stored under ``keys`` (missing keys are left out)."""

    async def update_session_histories(
        self,
        keys: Sequence[str],
        merge: Callable[[str, dict[str, Any] | None], dict[str, Any]],
        *,
        ttl_s: float,
        now: float,
    ) -> None:
        """Replace each key's history by ``merge(key, current)`` atomically per key (no
        update is lost to a concurrent one); each expires ``ttl_s`` after ``now``."""

    # -- change notification ----------------------------------------------------------
    async def publish(self, event: str) -> None: ...

    async def listen(self, on_event: Callable[[str], None]) -> None:
        """Call ``on_event`` for every event another replica publishes, until cancelled."""


async def open_store(url: str) -> Store:
    """Open the store a ``PDP_STORE_URL`` names: ``sqlite:///path`` or ``redis://...``."""
    if url.startswith("sqlite://"):
        from .sqlite import SQLiteStore

        return await SQLiteStore.open(url.removeprefix("sqlite://"))
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis_store import RedisStore

        return await RedisStore.open(url)
    raise StoreError(f"unsupported store URL scheme in {url.split('://')[0]!r}")
