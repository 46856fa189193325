"""Shipping the trail to a collector: batches in OPA's decision-log upload format.

The trail on disk is the spool. The forwarder reads records the writer has made durable,
turns each decision record into an OPA-style decision event, and POSTs batches as a
gzip'd JSON array (``Content-Type: application/json``, ``Content-Encoding: gzip``), the
way OPA's decision-log plugin uploads to a service's ``/logs``. Only after a 2xx answer
does it move its cursor (``DIR/forward.cursor``, written atomically), so a collector
outage delays delivery but loses nothing, and a restart resumes after the last
acknowledged batch. A crash between the answer and the cursor write re-sends that one
batch: events carry the PDP's ``decision_id`` (and the batch an ``Idempotency-Key``) so
the collector can drop the duplicates.

Event shape (OPA's fields, plus ``audit``)::

    {"decision_id", "timestamp", "path": "pdp/decision", "input", "result": {"allow",
     "reasons", "obligations"}, "bundles": {"pdp": {"revision"}}, "labels": {"app", "id",
     "version"}, "metrics": {"timer_pdp_decision_ns"}, "audit": <the record minus input>}

``{**event["audit"], "input": event["input"]}`` is the audit record exactly as chained, so
a collector can check each record's ``hash``.

Signed checkpoints travel in the same batches, in order, as events of their own::

    {"decision_id": null, "timestamp", "path": "pdp/audit/checkpoint", "labels",
     "audit": <the checkpoint record>}

so the collector holds a signed head to check the trail against (``pdpctl audit verify
--expect-checkpoint``). Uploads authenticate with a bearer token
(``PDP_AUDIT_FORWARD_TOKEN[_FILE]``) and/or a client certificate (mTLS,
``PDP_AUDIT_FORWARD_TLS_CERT``/``_KEY``; ``_CA`` for the collector's certificate).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from ..config import Settings
from .segment import CURSOR_FILE, AuditReadError, iter_lines, list_segments, parse

log = logging.getLogger("pdp.audit.forward")

#: The decision path events name, as OPA's own decision logs do.
DECISION_PATH = "pdp/decision"
#: The path checkpoint events name.
CHECKPOINT_PATH = "pdp/audit/checkpoint"


def forward_auth(settings: Settings) -> dict[str, Any]:
    """The forwarder's ``token`` and ``ssl_context`` from the settings."""
    token = settings.audit_forward_token
    if token is None and settings.audit_forward_token_file is not None:
        token = settings.audit_forward_token_file.read_text().strip() or None
    context = None
    if settings.audit_forward_tls_ca is not None or settings.audit_forward_tls_cert is not None:
        ca = settings.audit_forward_tls_ca
        context = ssl.create_default_context(cafile=None if ca is None else str(ca))
        if settings.audit_forward_tls_cert is not None:
            key = settings.audit_forward_tls_key
            context.load_cert_chain(
                str(settings.audit_forward_tls_cert), None if key is None else str(key)
            )
    return {"token": token, "ssl_context": context}


def checkpoint_event(record: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """The event a signed checkpoint travels as."""
    return {
        "decision_id": None,
        "timestamp": record.get("time"),
        "path": CHECKPOINT_PATH,
        "labels": labels,
        "audit": record,
    }


def read_cursor(directory: Path) -> int:
    """The last seq the collector acknowledged (0 when nothing was delivered yet)."""
    try:
        doc = orjson.loads((directory / CURSOR_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return 0
    seq = doc.get("seq") if isinstance(doc, dict) else None
    return seq if isinstance(seq, int) and seq >= 0 else 0


def write_cursor(directory: Path, seq: int) -> None:
    """Record ``seq`` as acknowledged: write a temp file, fsync, rename, fsync the dir."""
    tmp = directory / (CURSOR_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, orjson.dumps({"seq": seq}) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / CURSOR_FILE)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def to_event(record: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """An OPA decision-log event for one decision record."""
    decision = record.get("decision") or {}
    revision = (record.get("policy") or {}).get("revision")
    return {
        "decision_id": record.get("decision_id"),
        "timestamp": record.get("time"),
        "path": DECISION_PATH,
        "input": record.get("input"),
        "result": {
            "allow": decision.get("allow", False),
            "reasons": decision.get("reasons", []),
            "obligations": decision.get("obligations", {}),
        },
        "bundles": {"pdp": {"revision": revision}} if revision else {},
        "labels": labels,
        "metrics": {"timer_pdp_decision_ns": int(record.get("latency_us") or 0) * 1000},
        "audit": {k: v for k, v in record.items() if k != "input"},
    }


@dataclass
class _Position:
    """Where the next unread line is: a segment and a byte offset in it."""

    segment: Path | None = None
    offset: int = 0


@dataclass
class _Batch:
    events: list[dict[str, Any]] = field(default_factory=list)
    first_seq: int = 0
    last_seq: int = 0
    end: _Position = field(default_factory=_Position)


class AuditForwarder:
    """Delivers committed records to a collector, in order, each batch until it is acked."""

    def __init__(
        self,
        directory: Path,
        url: str,
        *,
        committed: Callable[[], int],
        labels: dict[str, str],
        batch_max: int = 500,
        max_backoff_s: float = 30.0,
        timeout_s: float = 10.0,
        on_delivered: Callable[[int], None] | None = None,
        on_failure: Callable[[], None] | None = None,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.directory = directory
        #: Bearer token of the collector (never logged) and the mTLS context.
        self._token = token
        self._ssl = ssl_context
        self.url = url
        self.committed = committed
        self.labels = labels
        self.batch_max = batch_max
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.on_delivered = on_delivered
        self.on_failure = on_failure
        #: The last seq the collector acknowledged (read from disk at construction).
        self.cursor = read_cursor(directory)
        self._pos: _Position | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._down = False

    def notify(self) -> None:
        """New records are durable: look for them now."""
        self._wake.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        self._task = asyncio.create_task(self._run(), name="audit-forwarder")

    async def close(self) -> None:
        """Stop after the upload in flight (if any); undelivered records stay spooled."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, self.timeout_s + 1)
            except TimeoutError:  # pragma: no cover - bounded by the upload timeout
                pass
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        delay = 0.1
        batch: _Batch | None = None
        while not self._stopping:
            if batch is None:
                try:
                    batch = await asyncio.to_thread(self._read_batch)
                except (OSError, AuditReadError) as exc:
                    log.error("audit forwarder cannot read the trail: %s", exc)
                    self._pos = None  # find the cursor again on the next attempt
                    await self._sleep(delay)
                    delay = min(delay * 2, self.max_backoff_s)
                    continue
            if batch is None:
                await self._sleep(1.0)
                continue
            if batch.events and not await self._post(batch):
                await self._sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
                continue
            delay = 0.1
            try:
                await asyncio.to_thread(write_cursor, self.directory, batch.last_seq)
            except OSError as exc:  # pragma: no cover - the writer fails first on a bad disk
                log.error("audit forwarder cannot write its cursor: %s", exc)
            self.cursor = batch.last_seq
            self._pos = batch.end
            if self.on_delivered is not None and batch.events:
                self.on_delivered(len(batch.events))
            batch = None

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when new records arrive or on close."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _post(self, batch: _Batch) -> bool:
        assert self._session is not None
        body = await asyncio.to_thread(lambda: gzip.compress(orjson.dumps(batch.events), 6))
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Idempotency-Key": f"agent-pdp-{batch.first_seq}-{batch.last_seq}",
        }
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            async with self._session.post(
                self.url, data=body, headers=headers, ssl=self._ssl if self._ssl else True
            ) as resp:
                await resp.read()
                ok = 200 <= resp.status < 300
                problem = f"collector answered {resp.status}"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            ok, problem = False, f"collector unreachable: {type(exc).__name__}: {exc}"
        if ok:
            if self._down:
                log.warning("audit collector %s reachable again", self.url)
            self._down = False
        else:
            if not self._down:
                log.warning("audit forwarding delayed (records stay spooled): %s", problem)
            self._down = True
            if self.on_failure is not None:
                self.on_failure()
        return ok

    # ------------------------------------------------------------------ reading

    def _seek(self) -> _Position:
        """The position just after the record at the cursor."""
        segments = list_segments(self.directory)
        if not segments:
            return _Position()
        target = self.cursor + 1
        candidates = [s for s in segments if s.first_seq <= target]
        if not candidates:
            log.error(
                "audit forwarder: records %d..%d were removed before delivery",
                target,
                segments[0].first_seq - 1,
            )
            return _Position(segments[0].path, 0)
        seg = candidates[-1]
        offset = 0
        for line in iter_lines(seg.path):
            if not line.complete or parse(line.raw).get("seq", 0) > self.cursor:
                break
            offset = line.offset + len(line.raw) + 1
        return _Position(seg.path, offset)

    def _read_batch(self) -> _Batch | None:
        """The next committed records after the position (None: nothing new)."""
        limit = self.committed()
        if limit <= self.cursor:
            return None
        if self._pos is None or self._pos.segment is None or not self._pos.segment.exists():
            self._pos = self._seek()  # first read, or retention removed a delivered segment
        segment, offset = self._pos.segment, self._pos.offset
        if segment is None:
            return None
        batch = _Batch()
        while True:
            for line in iter_lines(segment, offset):
                if not line.complete:
                    break
                rec = parse(line.raw)
                seq = int(rec.get("seq", 0))
                if seq > limit:
                    break
                batch.first_seq = batch.first_seq or seq
                batch.last_seq = seq
                if rec.get("type") == "decision":
                    batch.events.append(to_event(rec, self.labels))
                elif rec.get("type") == "checkpoint":
                    batch.events.append(checkpoint_event(rec, self.labels))
                offset = line.offset + len(line.raw) + 1
                if len(batch.events) >= self.batch_max:
                    break
            if len(batch.events) >= self.batch_max or batch.last_seq >= limit:
                break
            later = [s for s in list_segments(self.directory) if s.path.name > segment.name]
            if not later:
                break
            segment, offset = later[0].path, 0
        if not batch.last_seq:
            return None
        batch.end = _Position(segment, offset)
        return batch
