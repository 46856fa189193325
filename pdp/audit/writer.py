"""The one writer task: :class:`AuditWriter`, the asyncio side of the trail.

Callers ``await append(record)`` and are released only once their record is durable. The
task takes every record queued so far as one batch, chains it, writes it to the segment
(a write to the page cache, on the event loop) and hands the ``fdatasync`` to a helper
thread; records that arrive meanwhile form the next batch (group commit). While records
arrive faster than one per ``2 * commit_delay_s`` on average, a batch waits up to
``commit_delay_s`` (``PDP_AUDIT_COMMIT_DELAY_MS``, 1 ms) for more before it is written,
so that one sync serves more decisions; sparse traffic is synced at once. A sync that
returns makes durable everything written before it, so batches are released in order.
Rotation, retention, start, recovery and stop run on a helper thread once no sync is in
flight.

Durability modes (``PDP_AUDIT_FSYNC``):

- ``batch``  (default) write the batch, ``fdatasync``, then release its callers;
- ``always`` one record per write and ``fdatasync``, one at a time (no grouping);
- ``off``    write the batch to the page cache and release at once: survives a crash of
  the process, not of the machine.

Any write, sync or rotation error makes the writer *unavailable*: the callers of the
failed batch and all later callers get :class:`~pdp.errors.AuditUnavailableError` (a 503)
until a recovery, tried with backoff, has cut the trail back to its last durable record
and written a marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import AuditUnavailableError, PDPError
from ..timefmt import rfc3339
from .chain import canonical
from .checkpoint import AuditSigner
from .log import AuditError, AuditLog, Prepared, Written

log = logging.getLogger("pdp.audit")

T = TypeVar("T")
#: A queued record and the future its caller awaits.
Pending = tuple[dict[str, Any], "asyncio.Future[None]"]


def _describe(exc: BaseException) -> tuple[str, str]:
    """(full, short) descriptions of a failure: the short one names no path."""
    full = f"{type(exc).__name__}: {exc}"[:500]
    if isinstance(exc, OSError) and exc.errno is not None:
        short = f"{errno.errorcode.get(exc.errno, exc.errno)} ({exc.strerror})"
    elif isinstance(exc, AuditError):
        short = exc.short
    else:
        short = type(exc).__name__
    return full, short


class AuditWriter:
    """The one writer task: group commit, fail closed, recover with backoff."""

    def __init__(
        self,
        audit_log: AuditLog,
        *,
        batch_max: int = 512,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
        on_commit: Callable[[int, int], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
        commit_delay_s: float = 0.0,
        max_in_flight: int = 1,
        signer: AuditSigner | None = None,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 60.0,
    ) -> None:
        self.log = audit_log
        #: Signs checkpoints (docs/audit.md#checkpoints); None: the trail is not signed.
        self.signer = signer
        #: A checkpoint after this many records...
        self.checkpoint_every = checkpoint_every
        #: ...or once records have waited this long unsealed, seconds (0: only by count).
        self.checkpoint_interval_s = checkpoint_interval_s
        #: seq of the last record a checkpoint sealed (0: none since this writer started).
        self.sealed_seq = 0
        #: The last checkpoint record written (for the collector and the admin API).
        self.last_checkpoint: dict[str, Any] | None = None
        self._checkpoint_wanted = False
        self._ticker: asyncio.Task[None] | None = None
        always = audit_log.fsync == "always"
        self.batch_max = 1 if always else batch_max
        #: Syncs that may run at once (with 2, the next batch is written and synced while
        #: the last one's sync still runs: lower latency, more syncs).
        self.in_flight_max = 1 if always else max_in_flight
        #: batch mode: how long a batch may wait for more records while they keep coming.
        self.commit_delay_s = commit_delay_s if audit_log.fsync == "batch" else 0.0
        #: ...unless this many are queued already.
        self.gather_max = 16
        #: How many decisions are being decided, records waiting here included (set by the
        #: app from the decision service): a batch waits for more only while some of them
        #: have not appended yet. None: not known (the arrival rate alone decides).
        self.expecting: Callable[[], int] | None = None
        self._last_arrival = 0.0
        #: Moving average of the gap between records, seconds (the arrival rate).
        self._gap = 0.05
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.on_commit = on_commit
        self.on_state = on_state
        #: True while records can be appended.
        self.available = False
        #: Why the trail is unavailable (None while available): for logs and /readyz.
        self.error: str | None = "the audit trail has not started"
        #: The same, without paths: what a client's 503 body says.
        self.reason = "the audit trail has not started"
        #: seq of the last durable record, as seen by the event loop.
        self.committed_seq = 0
        self._pending: list[Pending] = []
        self._in_flight: list[_InFlight] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            max(1, self.in_flight_max), thread_name_prefix="pdp-audit"
        )
        self._task: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._closing = False

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        """Open the trail (an error leaves it unavailable and retrying); start the task."""
        try:
            await self._call(self.log.open)
        except (OSError, AuditError) as exc:
            self._fail(exc)
        else:
            self._set_available(True)
            self.committed_seq = self.log.durable_seq
            log.info("audit trail %s open at seq %d", self.log.directory, self.log.seq)
        self._task = asyncio.create_task(self._run(), name="audit-writer")
        if self.signer is not None and self.checkpoint_interval_s > 0:
            self._ticker = asyncio.create_task(self._tick(), name="audit-checkpoints")

    async def _tick(self) -> None:
        """Ask for a checkpoint whenever records have waited the interval unsealed."""
        while not self._closing:
            await asyncio.sleep(self.checkpoint_interval_s)
            if self.available:
                self.request_checkpoint()

    def request_checkpoint(self) -> None:
        """Seal the trail as it is now with a checkpoint (written by the writer task);
        nothing when every record is sealed already."""
        if self.signer is not None and self.log.seq > self.sealed_seq:
            self._checkpoint_wanted = True
            self._wake.set()

    async def append(self, record: dict[str, Any]) -> None:
        """Queue ``record`` and return once it is durable (raises when unavailable)."""
        if self._closing:
            raise AuditUnavailableError("audit trail unavailable: the service is stopping")
        if not self.available:
            raise AuditUnavailableError(f"audit trail unavailable: {self.reason}")
        self.arrived(time.monotonic())
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, fut))
        self._wake.set()
        await fut

    # ------------------------------------------------------------------ the task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await self._gather()
            self._wake.clear()
            while (
                (self._pending or self._checkpoint_wanted)
                and self.available
                and len(self._in_flight) < self.in_flight_max
            ):
                batch = self._pending[: self.batch_max]
                del self._pending[: self.batch_max]
                try:
                    await self._write(batch)
                except Exception as exc:  # the task's boundary: never leave callers waiting
                    log.exception("audit writer: unexpected error")
                    self._fail(exc, batch)
            if self._closing and not self._pending and not self._in_flight:
                return

    def arrived(self, now: float) -> None:
        """Track the arrival rate (a moving average of the gap between records)."""
        self._gap += 0.2 * (min(now - self._last_arrival, 1.0) - self._gap)
        self._last_arrival = now

    def gathering(self) -> bool:
        """Should the next batch wait ``commit_delay_s`` for more records?

        Only when records arrive at least every ``2 * commit_delay_s`` on average (so the
        wait is likely to bring more in), fewer than ``gather_max`` are queued, and (when the
        app says) some decision still being decided will append: one ``fdatasync`` then
        serves more decisions. Sparse traffic, and a single caller waiting for each answer
        before it asks again, are synced at once.
        """
        return (
            self.commit_delay_s > 0
            and 0 < len(self._pending) < self.gather_max
            and self._gap <= 2 * self.commit_delay_s
            and (self.expecting is None or self.expecting() > self._queued())
        )

    def _queued(self) -> int:
        """Records appended and not yet released: pending plus those being synced."""
        return len(self._pending) + sum(len(item.batch) for item in self._in_flight)

    async def _gather(self) -> None:
        if self.gathering():
            await asyncio.sleep(self.commit_delay_s)

    async def _write(self, batch: list[Pending]) -> None:
        """Chain and write one batch; hand its sync to a helper thread."""
        started = time.perf_counter()
        try:
            prepared = self._prepare([rec for rec, _ in batch])
        except TypeError:
            # A record that is not JSON is a bug: fail that decision alone (500).
            batch = self._drop_unserialisable(batch)
            if not batch and not self._checkpoint_wanted:
                return
            prepared = self._prepare([rec for rec, _ in batch])
        if prepared.rotate is not None:
            # Opening a segment closes the old one: only once no sync is in flight.
            await self._drain()
            if not self.available:
                self._fail_all(batch)
                return
            try:
                await self._call(self.log.commit, prepared)
            except (OSError, AuditError) as exc:
                self._fail(exc, batch)
                return
            self._committed(batch, started)
            if self.log.retention_due:
                try:
                    await self._call(self.log.retain)
                except (OSError, AuditError) as exc:
                    self._fail(exc)
                    return
                self.committed_seq = self.log.durable_seq
            return
        try:
            written = self.log.write(prepared)
        except (OSError, AuditError) as exc:
            self._fail(exc, batch)
            return
        if self.log.fsync == "off":
            self.log.mark_durable(written)
            self._committed(batch, started)
            return
        sync = asyncio.ensure_future(self._call(self.log.sync, written))
        item = _InFlight(written, batch, started, sync)
        self._in_flight.append(item)
        sync.add_done_callback(lambda _: self._synced(item))

    def _prepare(self, records: list[dict[str, Any]]) -> Prepared:
        """Chain ``records``; end the batch with a checkpoint when one is due."""
        due = self._checkpoint_wanted or (
            self.checkpoint_every > 0
            and self.log.seq + len(records) - self.sealed_seq >= self.checkpoint_every
        )
        if self.signer is None or not due:
            return self.log.prepare(records)
        self._checkpoint_wanted = False
        return self.sealed(records)

    def sealed(self, records: list[dict[str, Any]], *, final: bool = False) -> Prepared:
        """``records`` chained and followed by a checkpoint over the last of them."""
        signer = self.signer
        assert signer is not None
        made: list[dict[str, Any]] = []

        def seal(seq: int, digest: str) -> dict[str, Any]:
            checkpoint = signer.checkpoint(seq, digest)
            if final:  # seals the stop marker: the run ended cleanly
                checkpoint["final"] = True
            made.append(checkpoint)
            return checkpoint

        prepared = self.log.prepare(records, seal_with=seal)
        self.sealed_seq = prepared.seq
        self.last_checkpoint = {**made[0], "seq": prepared.seq, "hash": prepared.head}
        return prepared

    def _close_log(self) -> None:
        """Write the stop marker (sealed by a last checkpoint when signing) and release."""
        if self.signer is None:
            self.log.close()
            return
        try:
            stop = [{"type": "stop", "time": rfc3339(time.time_ns())}]
            self.log.commit(self.sealed(stop, final=True))
        finally:
            self.log.release()

    def _synced(self, item: _InFlight) -> None:
        """A sync returned: release, in order, every batch it made durable."""
        self._wake.set()
        if item.failed:  # the trail failed meanwhile: this batch was already refused
            self._in_flight.remove(item)
            return
        exc = item.sync.exception()
        if exc is None:
            try:
                self.log.mark_durable(item.written)
            except OSError as err:
                exc = err
        if exc is not None:
            self._fail(exc)  # refuses every batch in flight, this one included
            self._in_flight.remove(item)
            return
        while self._in_flight and self._in_flight[0].written.seq <= self.log.durable_seq:
            done = self._in_flight.pop(0)
            self._committed(done.batch, done.started)

    def _committed(self, batch: list[Pending], started: float) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_result(None)
        self.committed_seq = self.log.durable_seq
        if self.on_commit is not None:
            self.on_commit(len(batch), int((time.perf_counter() - started) * 1e9))

    async def _drain(self) -> None:
        """Wait until no sync is in flight."""
        while self._in_flight:
            await asyncio.wait([item.sync for item in self._in_flight])
            await asyncio.sleep(0)  # let the done callbacks run

    def _drop_unserialisable(self, batch: list[Pending]) -> list[Pending]:
        kept = []
        for rec, fut in batch:
            try:
                canonical(rec)
            except TypeError:
                log.exception("audit writer: a decision record is not JSON-serialisable")
                if not fut.done():
                    fut.set_exception(PDPError("the decision could not be recorded"))
            else:
                kept.append((rec, fut))
        return kept

    # ------------------------------------------------------------------ failing closed

    def _set_available(self, available: bool) -> None:
        self.available = available
        if available:
            self.error = None
        if self.on_state is not None:
            self.on_state(available)

    def _fail_all(self, batch: list[Pending]) -> None:
        err = AuditUnavailableError(f"audit trail unavailable: {self.reason}")
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(err)

    def _fail(self, exc: BaseException, batch: list[Pending] | None = None) -> None:
        """Stop accepting records; fail everything not durable; start recovering."""
        self.error, self.reason = _describe(exc)
        log.error("audit trail unavailable, decisions fail closed: %s", self.error)
        self._set_available(False)
        not_durable = []
        for item in self._in_flight:
            if not item.failed:
                item.failed = True
                not_durable.extend(item.batch)
        self._fail_all([*(batch or ()), *not_durable, *self._pending])
        self._pending.clear()
        # What recovery cuts was never sealed: forget a checkpoint of it.
        self.sealed_seq = min(self.sealed_seq, self.log.durable_seq)
        if self.last_checkpoint is not None and self.last_checkpoint["seq"] > self.sealed_seq:
            self.last_checkpoint = None
        if self._recovery is None and not self._closing:
            self._recovery = asyncio.create_task(self._recover(), name="audit-recovery")

    async def _recover(self) -> None:
        delay = self.retry_initial_s
        try:
            await self._drain()  # no sync may run while the trail is cut back
            while not self._closing:
                await asyncio.sleep(delay)
                error = self.error or ""
                try:
                    if self.log.is_open or self.log.seq:
                        await self._call(self.log.recover, error)
                    else:
                        await self._call(self.log.open)
                except (OSError, AuditError) as exc:
                    self.error, self.reason = _describe(exc)
                    delay = min(delay * 2, self.retry_max_s)
                    continue
                self.committed_seq = self.log.durable_seq
                self._set_available(True)
                log.warning("audit trail recovered at seq %d", self.log.seq)
                self._wake.set()
                return
        finally:
            self._recovery = None

    async def close(self) -> None:
        """Finish the queued records, write the stop marker, release the directory."""
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        waiting = [fut for _, fut in self._pending]
        self._wake.set()
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)
        if self._task is not None:
            await self._task
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        await self._drain()
        try:
            if self.available:
                await self._call(self._close_log)
            else:
                await self._call(self.log.release)
        except (OSError, AuditError) as exc:
            log.error("audit trail: could not write the stop marker: %s", exc)
            await self._call(self.log.release)
        finally:
            self._set_available(False)
            self.error = self.reason = "the audit trail is closed"
            self._executor.shutdown(wait=True)


@dataclass(eq=False)
class _InFlight:
    """A written batch whose sync is running."""

    written: Written
    batch: list[Pending]
    started: float
    sync: asyncio.Future[None]
    #: The trail failed while this sync ran: its batch was refused, it proves nothing.
    failed: bool = False
