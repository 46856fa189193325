"""The decision cache: step 4 of the decision path (DESIGN §2), honouring the policy's
``cache.ttl_seconds``.

A decision the policy declares cacheable (``cache.ttl_seconds`` > 0) is kept for that long
(capped by ``PDP_DECISION_CACHE_MAX_TTL_S``) under a key that is the canonical OPA input
without what is unique to one request (``now`` and ``request``: its id and arrival time),
plus the bundle generation it was decided under. A hit skips the OPA round trip only: the
decision path still re-applies the PDP's own guards, mints a fresh credential and writes
its own audit record, marked as a hit with the id of the decision it reuses.

Never cached, whatever the policy says:

- errors (OPA unreachable, policy errors, an undefined or ill-formed decision);
- unauthenticated requests and decisions carrying an ``authn.*`` reason;
- decisions with approval involved (``obligations.approval`` set, an ``approval_id`` in the
  request, an ``approval*`` reason or rule) or session rules involved (session history in the
  input, a ``session*`` reason or rule).

Dropped (``evictions`` metric, by reason):

- ``expired`` / ``capacity``: the entry's TTL passed, or the LRU bound was reached;
- ``bundle``: a new bundle was activated (new revision or etag), seen by the bundle watch,
  which asks OPA every ``PDP_DECISION_CACHE_BUNDLE_CHECK_MS`` (the staleness bound) and at
  once when a miss came back with a revision it does not know;
- ``agent``: an agent was disabled or enabled; ``trust_bundle``: the trust bundles changed;
  ``approval`` / ``session``: approval state or a task's session history changed. Replicas
  hear these over the store's invalidation channel (:data:`EVENT_PREFIX` events);
- ``policy``: the new policy reads the clock or another per-request field and declares a TTL
  (see :mod:`pdp.cache_safety`), or a bundle's contents are named by its revision string
  alone (:func:`pdp.cache_safety.unidentified`): its TTLs are ignored until a safe policy
  is active.

One asyncio loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from . import cache_safety
from .errors import EngineUnavailableError
from .opa import OPAClient, OPAResult, provenance_revision

log = logging.getLogger("pdp.cache")

#: Members of the OPA input that differ on every request and never enter the key.
PER_REQUEST_FIELDS: Final = frozenset({"now", "request"})
#: Store events (pub/sub) that concern the cache: "cache:<scope>" or "cache:<scope>:<value>".
EVENT_PREFIX: Final = "cache:"
#: Deadline of one bundle check (GET data.system.bundles), seconds.
BUNDLE_CHECK_TIMEOUT_S: Final = 2.0
#: Invalidation scopes: what changed.
SCOPES: Final = ("all", "agent", "trust_bundle", "approval", "session")


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A cached decision: the policy's answer and the decision that first got it."""

    result: OPAResult
    #: The decision id of the miss that stored the entry (recorded in every hit's record).
    decision_id: str
    #: Seconds the policy declared (after the cap).
    ttl_seconds: int
    #: Monotonic deadline.
    expires_at: float
    agent: str | None
    task: str | None
    session: str | None


class CacheMetrics:
    """hits, misses, evictions (by reason) and the number of entries."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.hits = Counter(
            "pdp_decision_cache_hits", "Decisions answered from the cache.", registry=registry
        )
        self.misses = Counter(
            "pdp_decision_cache_misses",
            "Cache lookups that went to OPA (cacheable or not).",
            registry=registry,
        )
        self.evictions = Counter(
            "pdp_decision_cache_evictions",
            "Entries dropped, by reason (expired, capacity, bundle, agent, trust_bundle, "
            "approval, session, policy).",
            ["reason"],
            registry=registry,
        )
        self.entries = Gauge(
            "pdp_decision_cache_entries", "Decisions held in the cache.", registry=registry
        )


class DecisionCache:
    """A bounded LRU of policy-declared cacheable decisions."""

    def __init__(
        self,
        *,
        max_entries: int,
        max_ttl_s: int,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1 (leave the cache out to disable it)")
        self.max_entries = max_entries
        self.max_ttl_s = max_ttl_s
        self.metrics = CacheMetrics(registry)
        self._clock = clock
        self._entries: OrderedDict[bytes, CacheEntry] = OrderedDict()
        #: Identifies the active bundle(s): revision and etag; part of every key.
        self.generation: str | None = None
        #: The active bundle revision as OPA's provenance reports it (set by the watch;
        #: nothing is stored before the watch has seen the active bundle).
        self.revision: str | None = None
        #: Set when a miss saw another revision: the bundle watch checks at once.
        self.check_bundle = asyncio.Event()
        #: False while the active policy may not declare TTLs (reads the clock): nothing
        #: is stored. Set by the bundle watch (pdp.cache_safety on OPA's own AST).
        self.policy_safe = True
        self.policy_problems: list[str] = []

    def __len__(self) -> int:
        return len(self._entries)

    # -- key --------------------------------------------------------------------------
    def key(self, input_doc: dict[str, Any], generation: str | None = None) -> bytes:
        """The cache key of an OPA input under a bundle generation (default: the current).

        Canonical JSON (keys sorted at every level) of the input without ``now`` and
        ``request``, hashed with BLAKE2b (32 bytes, so no input is kept in memory twice).
        """
        stable = {k: v for k, v in input_doc.items() if k not in PER_REQUEST_FIELDS}
        session = stable.get("session")
        if isinstance(session, dict):
            # When the history was read is per request too (pdp.sessions); a decision with
            # any history in its input is never stored (_uncacheable), so no age matters.
            stable["session"] = {k: v for k, v in session.items() if k != "read_at_ns"}
        gen = self.generation if generation is None else generation
        digest = hashlib.blake2b(digest_size=32)
        digest.update((gen or "").encode())
        digest.update(b"\0")
        digest.update(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS))
        return digest.digest()

    # -- lookup and store -------------------------------------------------------------
    def get(self, key: bytes) -> CacheEntry | None:
        """The live entry under ``key`` (a hit), else None (a miss)."""
        entry = self._entries.get(key)
        if entry is not None:
            if self._clock() < entry.expires_at:
                self._entries.move_to_end(key)
                self.metrics.hits.inc()
                return entry
            self._drop(key, "expired")
        self.metrics.misses.inc()
        return None

    def put(
        self,
        key: bytes,
        generation: str | None,
        input_doc: dict[str, Any],
        request: dict[str, Any],
        result: OPAResult,
        decision_id: str,
    ) -> int:
        """Store ``result`` under ``key`` (computed under ``generation``) if the policy
        declared a TTL and no never-cache rule applies; return the TTL (0: not stored).
        """
        if generation != self.generation or generation is None:
            return 0  # a bundle was activated while this decision was in flight
        if result.revision != self.revision:
            # Decided under a bundle the watch has not seen yet (or an old one, answered
            # while it was replaced): not stored; the watch looks again at once.
            self.check_bundle.set()
            return 0
        ttl = self._ttl(input_doc, request, result)
        if ttl <= 0:
            return 0
        agent = (input_doc.get("identity") or {}).get("spiffe_id")
        task = request.get("task") or {}
        self._entries[key] = CacheEntry(
            result=result,
            decision_id=decision_id,
            ttl_seconds=ttl,
            expires_at=self._clock() + ttl,
            agent=agent,
            task=task.get("id"),
            session=task.get("session"),
        )
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            self._drop(oldest, "capacity")
        self.metrics.entries.set(len(self._entries))
        return ttl

    def _ttl(self, input_doc: dict[str, Any], request: dict[str, Any], result: OPAResult) -> int:
        """The TTL to store ``result`` for: the policy's, capped; 0 when it must not be."""
        decision = result.decision
        if decision is None or not self.policy_safe:
            return 0
        cache = decision.get("cache")
        ttl = cache.get("ttl_seconds") if isinstance(cache, dict) else None
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
            return 0
        if uncacheable(input_doc, request, decision) is not None:
            return 0
        return min(ttl, self.max_ttl_s)

    # -- invalidation -----------------------------------------------------------------
    def bundle_activated(self, revision: str | None, generation: str) -> None:
        """A bundle is active (``generation``: its revision and etag, as the bundle watch
        or a miss saw it): drop everything decided under another one."""
        if generation == self.generation:
            return
        self.revision, self.generation = revision, generation
        self.clear("bundle")

    def bundle_unknown(self, why: str) -> None:
        """OPA could not say which bundle is active: serve and store nothing until it can."""
        if self.generation is not None:
            log.warning("decision cache: active bundle unknown (%s); cache emptied", why)
        self.revision = self.generation = None
        self.clear("bundle")

    @property
    def serving(self) -> bool:
        """True once the active bundle is known (before that every lookup misses)."""
        return self.generation is not None

    def clear(self, reason: str) -> int:
        """Drop every entry; returns how many."""
        n = len(self._entries)
        if n:
            self._entries.clear()
            self.metrics.evictions.labels(reason).inc(n)
            self.metrics.entries.set(0)
            log.info("decision cache: dropped %d entries (%s)", n, reason)
        return n

    def invalidate(self, scope: str, value: str | None = None) -> int:
        """Drop what a change of ``scope`` may affect: the entries of agent / task-or-session
        ``value``, else (no value, or scope all / trust_bundle) every entry."""
        if scope not in SCOPES:
            scope, value = "all", None
        if value is None or scope in {"all", "trust_bundle"}:
            return self.clear(scope)
        if scope == "agent":
            doomed = [k for k, e in self._entries.items() if e.agent == value]
        elif scope == "session":
            doomed = [k for k, e in self._entries.items() if value in {e.task, e.session}]
        else:  # approval: bound to an agent
            doomed = [k for k, e in self._entries.items() if e.agent == value]
        for key in doomed:
            self._drop(key, scope)
        return len(doomed)

    def on_event(self, event: str) -> None:
        """A store event from this or another replica (pub/sub channel)."""
        if event == "agents":  # lifecycle change; the event does not say whose
            self.clear("agent")
            return
        if not event.startswith(EVENT_PREFIX):
            return
        scope, _, value = event.removeprefix(EVENT_PREFIX).partition(":")
        self.invalidate(scope, value or None)

    def _drop(self, key: bytes, reason: str) -> None:
        if self._entries.pop(key, None) is not None:
            self.metrics.evictions.labels(reason).inc()
            self.metrics.entries.set(len(self._entries))


def event(scope: str, value: str | None = None) -> str:
    """The store event that asks every replica to invalidate ``scope`` (``value``)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown cache invalidation scope {scope!r}")
    return EVENT_PREFIX + scope + ("" if value is None else ":" + value)


def uncacheable(
    input_doc: dict[str, Any], request: dict[str, Any], decision: dict[str, Any]
) -> str | None:
    """Why a decision must never be cached (a never-cache rule), or None."""
    identity = input_doc.get("identity") or {}
    if identity.get("authenticated") is not True:
        return "unauthenticated"
    if request.get("approval_id") is not None:
        return "approval"
    obligations = decision.get("obligations") or {}
    if obligations.get("approval") is not None:
        return "approval"
    session = input_doc.get("session") or {}
    if session.get("task") or session.get("session") or session.get("available") is False:
        return "session"  # decided on a task's history (pdp.sessions), or fail-closed
    if input_doc.get("approval"):
        return "approval"
    for reason in decision.get("reasons") or ():
        code = str(reason.get("code", ""))
        rule = str(reason.get("rule", ""))
        if code.startswith("authn."):
            return "authn"
        if code.startswith("approval") or rule.startswith("pdp.rules.approval"):
            return "approval"
        if code.startswith("session") or rule.startswith("pdp.rules.session"):
            return "session"
    return None


async def check_bundles(cache: DecisionCache, opa: OPAClient) -> None:
    """Ask OPA which bundles are active; on a change, check the new policy's TTLs are safe
    (:mod:`pdp.cache_safety`, on OPA's own AST) and drop every entry.

    Raises :class:`~pdp.errors.EngineUnavailableError` when OPA cannot tell; the caller
    then forgets the bundle (nothing is stored or served until a check succeeds).
    """
    # Not the decision deadline: a saturated OPA still answers within a second, and a
    # failed check empties the cache.
    doc = await opa.data("system/bundles", timeout_s=BUNDLE_CHECK_TIMEOUT_S)
    if not isinstance(doc, dict) or not doc:
        cache.bundle_unknown("no active bundle")
        return
    manifests = {n: (b or {}).get("manifest") or {} for n, b in doc.items() if isinstance(b, dict)}
    revision = provenance_revision({"bundles": manifests})
    generation = hashlib.blake2b(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    if generation == cache.generation:
        return
    modules = await opa.policies()
    found = cache_safety.unidentified(doc)
    found += cache_safety.problems((str(m.get("id")), m.get("ast") or {}) for m in modules)
    cache.policy_safe, cache.policy_problems = not found, found
    shown = revision if revision is not None else "(no revision)"
    if found:
        log.warning("decision cache: ignoring the TTLs of bundle %s: %s", shown, "; ".join(found))
    cache.bundle_activated(revision, generation)
    log.info("decision cache: bundle %s active", shown)


async def watch_bundles(cache: DecisionCache, opa: OPAClient, interval_s: float) -> None:
    """Check the active bundle every ``interval_s`` and whenever a miss saw an unknown
    revision, until cancelled."""
    while True:
        cache.check_bundle.clear()
        try:
            await check_bundles(cache, opa)
        except EngineUnavailableError as exc:
            cache.bundle_unknown(exc.message)
        except Exception:  # a bug here must not end the watch: forget, log, go on
            log.exception("decision cache: bundle check failed")
            cache.bundle_unknown("bundle check failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cache.check_bundle.wait(), interval_s)
        # at most one check per 50 ms, however many misses ask
        await asyncio.sleep(min(0.05, interval_s))
