"""Shadow evaluation: every live decision also evaluated, off the answer path, by a second
OPA holding a candidate bundle; differences logged, never enforced.

``pdpctl serve --shadow-bundle FILE|oci://HOST/REPO:TAG`` starts a second OPA sidecar
(``STATE_DIR/run/shadow.sock``) with the candidate. After a decision is answered and
recorded, the decision service hands :meth:`ShadowEvaluator.submit` the decision id, the
OPA input and the live answer; ``submit`` reduces the answer to its outcome (allow, reason
codes, obligations — never the credential) and puts it on a bounded queue without waiting
(when the queue is full the evaluation is dropped and counted). Workers evaluate the input
on the shadow OPA with the decision path's own answer rules (:func:`pdp.answer.answer`),
compare, and append one line per evaluation to the shadow log beside the audit trail
(``<audit dir>/../shadow/shadow.jsonl``)::

    {"time", "decision_id", "kind": null | "deny_to_allow" | "allow_to_deny" | "reasons"
     | "obligations", "live": {allow, reasons, obligations}, "shadow": {...},
     "live_revision", "shadow_revision", "agent", "tenant", "action", "destination"}

``kind`` null: the candidate agrees (then only time, id and revisions are written). Evaluation
errors are lines with ``"error"``; drops are counted in ``"tally"`` lines (every 10 s when
they changed, and at shutdown). The log holds no input, no prompt, no token.
``pdpctl shadow report`` reads it (:mod:`pdpctl.shadow`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from .answer import answer
from .bundlesign import verify_bundle
from .config import Settings
from .errors import ConfigError, EngineUnavailableError
from .oci import OCIError, Reference, pull
from .opa import OPAClient
from .replay import identity_of, outcome_of
from .sidecar import OPASidecar
from .timefmt import rfc3339

log = logging.getLogger("pdp.shadow")

SHADOW_FILE = "shadow.jsonl"
_TALLY_EVERY_S = 10.0


def shadow_dir(settings: Settings) -> Path:
    """Where the shadow log goes: beside the audit trail (``<audit dir>/../shadow``)."""
    return settings.audit_path.absolute().parent / "shadow"


class ShadowMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.evaluations = Counter(
            "pdp_shadow_evaluations",
            "Live decisions evaluated by the shadow bundle, by result (same, changed, error).",
            ["result"],
            registry=registry,
        )
        self.dropped = Counter(
            "pdp_shadow_dropped",
            "Shadow evaluations dropped because the queue was full.",
            registry=registry,
        )
        self.queue = Gauge(
            "pdp_shadow_queue_depth", "Shadow evaluations waiting.", registry=registry
        )


class ShadowEvaluator:
    """The bounded queue, its workers, the shadow OPA client and the shadow log."""

    def __init__(
        self,
        opa: OPAClient,
        log_path: Path,
        metrics: ShadowMetrics,
        *,
        queue_max: int = 1000,
        workers: int = 2,
    ) -> None:
        self.opa = opa
        self.log_path = log_path
        self.metrics = metrics
        self.queue: asyncio.Queue[tuple[str, dict[str, Any], dict[str, Any], str]] = asyncio.Queue(
            maxsize=queue_max
        )
        self.dropped = 0
        self.run_id = uuid.uuid4().hex[:12]
        self._workers_n = workers
        self._workers: list[asyncio.Task[None]] = []
        self._file: IO[bytes] | None = None
        self._tallied = 0
        self._tally_task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "ab")
        self._workers = [
            asyncio.create_task(self._work(), name=f"shadow-{i}") for i in range(self._workers_n)
        ]
        self._tally_task = asyncio.create_task(self._tally_loop(), name="shadow-tally")

    async def close(self) -> None:
        """Stop the workers (what is still queued is not evaluated), write the tally."""
        for task in [*self._workers, *([self._tally_task] if self._tally_task else [])]:
            task.cancel()
        for task in [*self._workers, *([self._tally_task] if self._tally_task else [])]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tally(force=True)
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- the answer path's side: O(1), never waits ----------------------------------------
    def submit(self, decision_id: str, input_doc: dict[str, Any], response: dict[str, Any]) -> None:
        """Queue a live decision for the shadow (drop and count when the queue is full)."""
        live = outcome_of(response).to_json()
        revision = str((response.get("policy") or {}).get("revision"))
        try:
            self.queue.put_nowait((decision_id, input_doc, live, revision))
        except asyncio.QueueFull:
            self.dropped += 1
            self.metrics.dropped.inc()

    # -- workers ---------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            decision_id, input_doc, live, live_revision = await self.queue.get()
            self.metrics.queue.set(self.queue.qsize())
            try:
                await self._evaluate(decision_id, input_doc, live, live_revision)
            except Exception:  # a shadow bug must never touch the live service
                log.exception("shadow evaluation of %s failed", decision_id)
            finally:
                self.queue.task_done()

    async def _evaluate(
        self, decision_id: str, input_doc: dict[str, Any], live: dict[str, Any], live_rev: str
    ) -> None:
        now = rfc3339(time.time_ns())
        try:
            result = await self.opa.evaluate(input_doc)
        except EngineUnavailableError as exc:
            self.metrics.evaluations.labels("error").inc()
            self._write({"time": now, "decision_id": decision_id, "error": exc.message})
            return
        shadow = answer(
            decision_id,
            {},
            identity_of(input_doc.get("identity") or {}),
            result,
            agent_status=(input_doc.get("agent") or {}).get("status"),
            asserted=(input_doc.get("subject") or {}).get("asserted") is True,
        )
        out = outcome_of(shadow).to_json()
        kind = _kind(live, out)
        line: dict[str, Any] = {
            "time": now,
            "decision_id": decision_id,
            "kind": kind,
            "live_revision": live_rev,
            "shadow_revision": result.revision,
        }
        if kind is not None:
            action = input_doc.get("action") or {}
            line.update(
                live=live,
                shadow=out,
                agent=(input_doc.get("identity") or {}).get("spiffe_id"),
                tenant=input_doc.get("tenant"),
                action=" ".join(
                    str(action[k]) for k in ("type", "name", "operation") if action.get(k)
                ),
                destination=(input_doc.get("destination") or {}).get("name"),
            )
        self.metrics.evaluations.labels("same" if kind is None else "changed").inc()
        self._write(line)

    def _write(self, line: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(orjson.dumps(line) + b"\n")
            self._file.flush()

    async def _tally_loop(self) -> None:
        while True:
            await asyncio.sleep(_TALLY_EVERY_S)
            self._tally()

    def _tally(self, *, force: bool = False) -> None:
        """A cumulative count of drops for this run (the report adds the runs up)."""
        if self.dropped != self._tallied or (force and self.dropped):
            self._write(
                {
                    "time": rfc3339(time.time_ns()),
                    "tally": {"run": self.run_id, "dropped": self.dropped},
                }
            )
            self._tallied = self.dropped


def _kind(live: dict[str, Any], shadow: dict[str, Any]) -> str | None:
    """The replay change kinds: allow gained or lost, reasons, obligations."""
    if live["allow"] != shadow["allow"]:
        return "deny_to_allow" if shadow["allow"] else "allow_to_deny"
    if live["reasons"] != shadow["reasons"]:
        return "reasons"
    if live["obligations"] != shadow["obligations"]:
        return "obligations"
    return None


# ------------------------------------------------------------------------ the candidate


def fetch_candidate(settings: Settings, into: Path) -> Path:
    """The candidate bundle file: ``--shadow-bundle`` FILE as is, or oci://… pulled into
    ``into`` (HTTPS; plain HTTP only for a loopback registry). With
    ``--bundle-verification-key`` its signature must verify (OPA's check)."""
    source = settings.shadow_bundle
    assert source is not None
    if source.startswith("oci://"):
        try:
            ref = Reference.parse(source)
            bundle = pull(ref, into, plain_http=ref.loopback)
        except OCIError as exc:
            raise ConfigError(f"PDP_SHADOW_BUNDLE={source!r}: {exc.message}") from None
    else:
        bundle = Path(source)
        if not bundle.is_file():
            raise ConfigError(f"PDP_SHADOW_BUNDLE={source!r}: no such bundle file")
    if settings.bundle_verification_key is not None:
        from .tools import find_opa

        verify_bundle(
            find_opa(settings.opa_binary),
            bundle,
            verification_key=settings.bundle_verification_key,
        )
    return bundle.absolute()


async def start_shadow(
    settings: Settings, registry: CollectorRegistry
) -> tuple[OPASidecar, OPAClient, ShadowEvaluator]:
    """Start the shadow OPA on the candidate and the evaluator over it."""
    from .sidecar import socket_path
    from .tools import find_opa

    workdir = settings.state_dir / "shadow"
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    bundle = await asyncio.to_thread(fetch_candidate, settings, workdir)
    sock = socket_path(settings.state_dir).with_name("shadow.sock")
    if len(str(sock)) > 100:
        sock = Path(tempfile.mkdtemp(prefix="pdp-opa-")) / "shadow.sock"
    sidecar = OPASidecar(
        find_opa(settings.opa_binary), bundle, sock, start_timeout_s=settings.opa_start_timeout_s
    )
    await sidecar.start()
    # Off the answer path: a generous deadline (a slow shadow only delays the shadow log).
    client = OPAClient(sidecar.url, timeout_s=max(settings.opa_timeout_ms / 1000, 5.0))
    await client.start()
    evaluator = ShadowEvaluator(
        client,
        shadow_dir(settings) / SHADOW_FILE,
        ShadowMetrics(registry),
        queue_max=settings.shadow_queue_max,
    )
    await evaluator.start()
    log.warning(
        "shadow evaluation on %s (%s): differences go to %s, never enforced",
        settings.shadow_bundle,
        bundle,
        evaluator.log_path,
    )
    return sidecar, client, evaluator
