"""The audit trail of a running service: the one writer, the optional forwarder, metrics.

The app opens it in its own ``cleanup_ctx`` (before the decision path starts, closed
after it stops) and wraps its recorder in :class:`AuditRecorder`, so every decision from
every front door is made durable before its answer is sent.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..config import Settings
from .checkpoint import AuditSigner
from .forward import AuditForwarder, forward_auth
from .log import AuditLog, pdp_version
from .record import Recorder
from .writer import AuditWriter

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_COMMIT_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class AuditMetrics:
    """The trail's metrics, registered in the app's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.records = Counter("pdp_audit_records", "Decision records made durable.", registry=r)
        self.batch = Histogram(
            "pdp_audit_batch_records", "Records per commit.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.commit = Histogram(
            "pdp_audit_commit_seconds",
            "Time to write and sync one batch.",
            buckets=_COMMIT_BUCKETS,
            registry=r,
        )
        self.available = Gauge(
            "pdp_audit_available", "1 while records can be made durable.", registry=r
        )
        self.failures = Counter(
            "pdp_audit_failures", "Times the trail became unavailable.", registry=r
        )
        self.forwarded = Counter(
            "pdp_audit_forwarded_records", "Records the collector acknowledged.", registry=r
        )
        self.forward_failures = Counter(
            "pdp_audit_forward_failures", "Failed uploads to the collector.", registry=r
        )
        self.checkpoints = Counter(
            "pdp_audit_checkpoints", "Signed checkpoints written to the trail.", registry=r
        )
        self.checkpoint_seq = Gauge(
            "pdp_audit_checkpoint_seq", "seq of the record the last checkpoint sealed.", registry=r
        )


class AuditTrail:
    """What the app holds: the writer (always) and the forwarder (when configured)."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.directory = settings.audit_path
        self.metrics = AuditMetrics(registry)
        self.forwarder: AuditForwarder | None = None
        if settings.audit_forward_url is not None:
            self.forwarder = AuditForwarder(
                self.directory,
                settings.audit_forward_url,
                committed=lambda: self.writer.committed_seq,
                labels={"app": "agent-pdp", "id": socket.gethostname(), "version": pdp_version()},
                batch_max=settings.audit_forward_batch,
                max_backoff_s=settings.audit_forward_max_backoff_s,
                on_delivered=self.metrics.forwarded.inc,
                on_failure=self.metrics.forward_failures.inc,
                **forward_auth(settings),
            )
        forwarder = self.forwarder
        self.log = AuditLog(
            self.directory,
            fsync=settings.audit_fsync,
            segment_max_bytes=settings.audit_segment_max_bytes,
            segment_max_age_s=settings.audit_segment_max_age_s,
            retention_max_age_s=settings.audit_retention_days * 86400,
            retention_max_bytes=settings.audit_retention_max_bytes,
            # Never delete what the collector has not acknowledged.
            keep_from=None if forwarder is None else (lambda: forwarder.cursor + 1),
        )
        self._available = False
        self._closing = False
        #: Signs checkpoints with the audit-signing key (None: PDP_AUDIT_SIGNING=false).
        self.signer = AuditSigner(settings.audit_keys_path) if settings.audit_signing else None
        self._sealed = 0
        self.writer = AuditWriter(
            self.log,
            on_commit=self._committed,
            on_state=self._state_changed,
            commit_delay_s=settings.audit_commit_delay_ms / 1000,
            signer=self.signer,
            checkpoint_every=settings.audit_checkpoint_every,
            checkpoint_interval_s=settings.audit_checkpoint_interval_s,
        )

    @property
    def available(self) -> bool:
        return self.writer.available

    @property
    def error(self) -> str | None:
        return self.writer.error

    def _committed(self, records: int, duration_ns: int) -> None:
        if records:
            self.metrics.records.inc(records)
            self.metrics.batch.observe(records)
            self.metrics.commit.observe(duration_ns / 1e9)
        if self.writer.sealed_seq > self._sealed:
            self._sealed = self.writer.sealed_seq
            self.metrics.checkpoints.inc()
            self.metrics.checkpoint_seq.set(self.writer.sealed_seq - 1)
        if self.forwarder is not None:
            self.forwarder.notify()

    def _state_changed(self, available: bool) -> None:
        if self._available and not available and not self._closing:
            self.metrics.failures.inc()
        self._available = available
        self.metrics.available.set(1 if available else 0)

    async def start(self) -> None:
        if self.signer is not None:
            await asyncio.to_thread(self.signer.open)
        await self.writer.start()
        if self.forwarder is not None:
            await self.forwarder.start()

    async def close(self) -> None:
        self._closing = True
        await self.writer.close()
        if self.forwarder is not None:
            await self.forwarder.close()

    async def append(self, record: dict[str, Any]) -> None:
        await self.writer.append(record)


class AuditRecorder:
    """The app's recorder with the trail on: durable first, then the log line."""

    def __init__(self, trail: AuditTrail, then: Recorder) -> None:
        self.trail = trail
        self.then = then

    async def record(self, record: dict[str, Any]) -> None:
        await self.trail.append(record)
        await self.then.record(record)
