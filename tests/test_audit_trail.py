"""The audit trail on disk: chaining, tamper detection, recovery, rotation, retention,
and the writer task (group commit, fsync modes, durability before release, failing closed).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pdp.audit import log as log_module
from pdp.audit.chain import GENESIS, canonical, record_hash
from pdp.audit.log import PREALLOCATE_BYTES, AuditError, AuditLog
from pdp.audit.segment import HEAD_FILE, list_segments, read_head, segment_name, writer_running
from pdp.audit.verify import Problem, verify
from pdp.audit.writer import AuditWriter
from pdp.errors import AuditUnavailableError, PDPError

from .audit_helpers import decision, delete, edit, make_trail, records, swap

N = 30


def last_seq(d: Path) -> int:
    seq: int = records(d)[-1]["seq"]
    return seq


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    """A closed trail of N decisions over several segments."""
    d = tmp_path / "audit"
    make_trail(d, N)
    assert len(list_segments(d)) >= 3
    return d


# --------------------------------------------------------------------------- the chain


def test_a_trail_is_one_chain_from_genesis_through_every_segment(trail: Path) -> None:
    recs = records(trail)

    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert [r["type"] for r in recs if r["type"] != "segment"] == ["start"] + ["decision"] * N + [
        "stop"
    ]
    assert recs[0]["prev"] == GENESIS
    assert all(r["prev"] == p["hash"] for p, r in zip(recs, recs[1:], strict=False))
    assert all(r["hash"] == record_hash(r) for r in recs)
    for seg in list_segments(trail):
        first = json.loads(seg.path.read_bytes().splitlines()[0])
        assert seg.name == segment_name(first["seq"])
        assert first["type"] in {"start", "segment"}


def test_hash_is_sha256_of_sorted_compact_json_without_the_hash_member(trail: Path) -> None:
    line = list_segments(trail)[0].path.read_bytes().splitlines()[3]
    rec = json.loads(line)
    body = {k: v for k, v in rec.items() if k != "hash"}
    # Independent of orjson: sorted keys at every level, no whitespace, UTF-8.
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    assert rec["hash"] == hashlib.sha256(text.encode()).hexdigest()
    assert line == canonical(rec)  # the line on disk is itself canonical JSON


def test_verify_passes_on_an_intact_trail(trail: Path) -> None:
    result = verify(trail)

    assert result.problem is None
    last = last_seq(trail)
    assert (result.records, result.first_seq, result.last_seq) == (last, 1, last)
    assert result.head_hash == records(trail)[-1]["hash"] == read_head(trail)[1]  # type: ignore[index]


# --------------------------------------------------------------------------- tampering


def _positions(trail: Path) -> dict[str, int]:
    segs = list_segments(trail)
    return {
        "first record": 1,
        "a middle record": 5,
        "last of a segment": segs[1].first_seq - 1,
        "first of a segment": segs[1].first_seq,
        "last record": last_seq(trail),
    }


def _expected(action: str, seq: int, last: int) -> tuple[int, str]:
    if action == "modify":
        return seq, "modified"
    if action == "delete":
        return seq, "truncated" if seq == last else "deleted"
    return min(seq, last - 1), "reordered"


@pytest.mark.parametrize("position", ["first record", "a middle record", "last of a segment",
                                      "first of a segment", "last record"])  # fmt: skip
@pytest.mark.parametrize("action", ["modify", "delete", "reorder"])
def test_tampering_with_any_record_is_detected_naming_the_first_bad_seq(
    trail: Path, action: str, position: str
) -> None:
    seq, last = _positions(trail)[position], last_seq(trail)
    if action == "modify":
        edit(trail, seq, lambda r: r.update(time="2030-01-01T00:00:00.000000Z"))
    elif action == "delete":
        delete(trail, seq)
    else:
        swap(trail, min(seq, last - 1))

    problem = verify(trail).problem

    assert problem is not None
    assert (problem.seq, problem.kind) == _expected(action, seq, last)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (lambda d: edit(d, 7, lambda r: r.update(time="x")),
         Problem(7, "modified", "hash mismatch (record modified)", "", 0)),
        (lambda d: delete(d, 7),
         Problem(7, "deleted", "missing (seq 7 deleted)", "", 0)),
        (lambda d: delete(d, 7, count=2),
         Problem(7, "deleted", "missing (seqs 7..8 deleted)", "", 0)),
        (lambda d: swap(d, 7),
         Problem(7, "reordered", "out of order (found seq 8 in its place; records reordered)",
                 "", 0)),
    ],
    ids=["modified", "deleted", "two deleted", "reordered"],
)  # fmt: skip
def test_problem_messages_say_what_happened(
    trail: Path, tamper: Callable[[Path], Any], expected: Problem
) -> None:
    tamper(trail)

    problem = verify(trail).problem

    assert problem is not None
    assert (problem.seq, problem.kind, problem.message) == (
        expected.seq,
        expected.kind,
        expected.message,
    )
    assert problem.segment == list_segments(trail)[0].name and problem.line is not None


def test_a_record_rehashed_after_editing_still_breaks_the_link_to_the_next(trail: Path) -> None:
    edit(trail, 7, lambda r: r.update(time="x", hash=record_hash({**r, "time": "x"})))

    problem = verify(trail).problem

    assert problem is not None
    assert (problem.seq, problem.kind) == (8, "broken")
    assert problem.message == "prev is not the hash of seq 7 (chain broken)"


def test_the_last_record_rehashed_after_editing_differs_from_head(trail: Path) -> None:
    last = last_seq(trail)
    edit(trail, last, lambda r: r.update(time="x", hash=record_hash({**r, "time": "x"})))

    problem = verify(trail).problem

    assert problem is not None
    assert (problem.seq, problem.kind) == (last, "modified")
    assert problem.message == "hash differs from the one HEAD holds"


def test_a_deleted_middle_segment_is_detected(trail: Path) -> None:
    seg = list_segments(trail)[1]
    seg.path.unlink()

    problem = verify(trail).problem

    assert problem is not None
    assert (problem.seq, problem.kind) == (seg.first_seq, "deleted")


def test_a_deleted_first_segment_is_detected_without_a_retention_record(trail: Path) -> None:
    list_segments(trail)[0].path.unlink()

    problem = verify(trail).problem

    assert problem is not None
    assert (problem.seq, problem.kind) == (1, "truncated")
    assert "no retention record accounts for them" in problem.message


def test_records_cut_from_the_end_are_detected_through_head(trail: Path) -> None:
    n = last_seq(trail)
    last = list_segments(trail)[-1].path
    lines = last.read_bytes().splitlines(keepends=True)
    last.write_bytes(b"".join(lines[:-2]))

    problem = verify(trail).problem

    assert problem is not None
    assert (problem.seq, problem.kind) == (n - 1, "truncated")
    assert problem.message == (
        f"missing at the end: HEAD names seq {n} but the trail ends at seq {n - 2} "
        "(trail truncated)"
    )


def test_a_torn_line_is_a_truncation_when_no_writer_is_running(trail: Path) -> None:
    last = last_seq(trail)
    with list_segments(trail)[-1].path.open("ab") as f:
        f.write(b'{"seq": 99, "type": "decis')

    problem = verify(trail).problem

    assert problem is not None
    assert (problem.seq, problem.kind) == (last + 1, "truncated")


def test_a_torn_last_line_of_a_live_trail_is_the_record_being_written(tmp_path: Path) -> None:
    d = tmp_path / "audit"
    log = make_trail(d, 3, close=False)
    log.open()  # holds the LOCK: the trail is live
    try:
        with list_segments(d)[-1].path.open("ab") as f:
            f.write(b'{"seq": 99, "type": "decis')
        result = verify(d)
    finally:
        log.release()

    assert result.live is True
    assert result.problem is None


# --------------------------------------------------------------------------- recovery


def test_a_torn_last_line_is_cut_and_noted_in_the_chain_at_restart(tmp_path: Path) -> None:
    d = tmp_path / "audit"
    make_trail(d, 5, close=False)  # a crash: no stop record
    torn = b'{"decision_id":"d-lost","seq":7,"type":"deci'
    seg = list_segments(d)[-1].path
    size = seg.stat().st_size
    with seg.open("ab") as f:
        f.write(torn)

    log = AuditLog(d)
    log.open()
    log.close()

    assert seg.stat().st_size == size  # cut back to the last complete record
    start = records(d)[6]
    assert start["type"] == "start"
    assert start["reason"] == "start"
    assert start["previous"] == {
        "seq": 6,
        "hash": records(d)[5]["hash"],
        "segment": seg.name,
        "shutdown": "unclean",
    }
    assert start["cut"] == [
        {
            "segment": seg.name,
            "offset": size,
            "bytes": len(torn),
            "sha256": hashlib.sha256(torn).hexdigest(),
        }
    ]
    assert verify(d).problem is None


def test_a_garbage_last_line_is_cut_like_a_torn_one(tmp_path: Path) -> None:
    d = tmp_path / "audit"
    make_trail(d, 2, close=False)
    with list_segments(d)[-1].path.open("ab") as f:
        f.write(b"\x00\x00\x00garbage\n")

    log = AuditLog(d)
    log.open()
    log.close()

    start = [r for r in records(d) if r["type"] == "start"][-1]
    assert start["cut"][0]["bytes"] == len(b"\x00\x00\x00garbage\n")
    assert verify(d).problem is None


def test_a_restart_after_a_clean_stop_continues_the_chain_in_a_new_segment(trail: Path) -> None:
    before, last = len(list_segments(trail)), last_seq(trail)

    make_trail(trail, 1)

    recs = records(trail)
    start = [r for r in recs if r["type"] == "start"][-1]
    assert start["previous"]["shutdown"] == "clean"
    assert start["previous"]["seq"] == last
    assert start["cut"] == []
    assert len(list_segments(trail)) == before + 1
    assert list_segments(trail)[-1].name == segment_name(last + 1)
    assert verify(trail).problem is None


def test_a_restart_notes_records_missing_from_the_end_and_verify_keeps_failing(
    trail: Path,
) -> None:
    n = last_seq(trail)
    last = list_segments(trail)[-1].path
    lines = last.read_bytes().splitlines(keepends=True)
    last.write_bytes(b"".join(lines[:-3]))

    make_trail(trail, 1)

    start = [r for r in records(trail) if r["type"] == "start"][-1]
    assert start["missing"] == {"from_seq": n - 2, "through_seq": n}
    problem = verify(trail).problem
    assert problem is not None
    assert (problem.seq, problem.kind) == (n - 2, "truncated")


def test_a_second_writer_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "audit"
    first = AuditLog(d)
    first.open()
    try:
        assert writer_running(d)
        with pytest.raises(AuditError, match="in use by another writer"):
            AuditLog(d).open()
    finally:
        first.close()
    assert not writer_running(d)


# --------------------------------------------------------------------------- rotation


def test_segments_rotate_by_size(tmp_path: Path) -> None:
    d = tmp_path / "audit"
    make_trail(d, N, segment_max_bytes=4096)

    segs = list_segments(d)
    headers = [json.loads(s.path.read_bytes().splitlines()[0]) for s in segs[1:]]
    assert [h["segment"]["reason"] for h in headers] == ["size"] * len(headers)
    assert [h["segment"]["previous"] for h in headers] == [s.name for s in segs[:-1]]
    # a segment only grows past the limit by the batch that crossed it
    assert all(s.path.stat().st_size < 4096 + 1024 for s in segs)


def test_segments_rotate_by_age(tmp_path: Path) -> None:
    now = [1000.0]
    log = AuditLog(tmp_path / "audit", segment_max_age_s=60, monotonic=lambda: now[0])
    log.open()
    log.append([decision(1)])
    now[0] += 59
    log.append([decision(2)])
    now[0] += 2
    log.append([decision(3)])
    log.close()

    segs = list_segments(tmp_path / "audit")
    assert [s.first_seq for s in segs] == [1, 4]
    header = json.loads(segs[1].path.read_bytes().splitlines()[0])
    assert header["segment"] == {"name": segs[1].name, "previous": segs[0].name, "reason": "age"}


# --------------------------------------------------------------------------- retention


def test_retention_by_size_removes_the_oldest_segments_and_says_so(tmp_path: Path) -> None:
    d = tmp_path / "audit"
    log = make_trail(d, 80, close=False, retention_max_bytes=10_000)
    log.open()
    log.retain()
    log.close()

    segs = list_segments(d)
    assert segs[0].first_seq > 1
    assert sum(s.path.stat().st_size for s in segs) <= 10_000 + 5000
    retention = [r for r in records(d) if r["type"] == "retention"]
    assert retention
    assert retention[-1]["pruned"]["through_seq"] == segs[0].first_seq - 1
    assert retention[-1]["pruned"]["reasons"] == ["size"]
    assert verify(d).problem is None


def test_retention_by_age_removes_segments_older_than_the_limit(tmp_path: Path) -> None:
    d = tmp_path / "audit"
    make_trail(d, N)
    old = list_segments(d)[:2]
    for seg in old:
        os.utime(seg.path, (time.time() - 3 * 86400, time.time() - 3 * 86400))

    log = AuditLog(d, retention_max_age_s=2 * 86400)
    log.open()  # retention runs at start (and after each rotation)
    log.close()

    remaining = list_segments(d)
    assert [s.name for s in old if s in remaining] == []
    retention = [r for r in records(d) if r["type"] == "retention"][-1]
    assert retention["pruned"]["segments"] == [s.name for s in old]
    assert retention["pruned"]["reasons"] == ["age"]
    assert verify(d).problem is None


def test_retention_never_removes_records_the_collector_has_not_acknowledged(
    tmp_path: Path,
) -> None:
    d = tmp_path / "audit"
    make_trail(d, 80)
    keep_from = list_segments(d)[2].first_seq - 1  # a record in the second segment

    log = AuditLog(d, retention_max_bytes=1, keep_from=lambda: keep_from)
    log.open()
    log.close()

    assert list_segments(d)[0].first_seq <= keep_from
    assert verify(d).problem is None


# --------------------------------------------------------------------------- the writer task


async def test_concurrent_records_share_one_commit(tmp_path: Path) -> None:
    commits: list[int] = []
    writer = AuditWriter(AuditLog(tmp_path / "a"), on_commit=lambda n, _: commits.append(n))
    await writer.start()

    await asyncio.gather(*(writer.append(decision(i)) for i in range(200)))
    await writer.close()

    assert sum(commits) == 200
    assert len(commits) < 20
    assert verify(tmp_path / "a").problem is None


@pytest.mark.parametrize(("mode", "syncs_per_record"), [("batch", None), ("always", 1), ("off", 0)])
async def test_fsync_modes_sync_per_batch_per_record_or_never(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, syncs_per_record: int | None
) -> None:
    syncs: list[int] = []
    real_sync = log_module._sync

    def counting_sync(fd: int) -> None:
        syncs.append(fd)
        real_sync(fd)

    monkeypatch.setattr(log_module, "_sync", counting_sync)
    commits: list[int] = []
    writer = AuditWriter(
        AuditLog(tmp_path / "a", fsync=mode), on_commit=lambda n, _: commits.append(n)
    )
    await writer.start()
    syncs.clear()

    await asyncio.gather(*(writer.append(decision(i)) for i in range(50)))

    if syncs_per_record is None:
        assert len(syncs) == len(commits) < 50
    else:
        assert len(syncs) == 50 * syncs_per_record
    if mode == "always":
        assert commits == [1] * 50
    await writer.close()


async def test_a_record_is_released_only_after_its_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = AuditWriter(AuditLog(tmp_path / "a"))
    await writer.start()
    gate = threading.Event()
    real_sync = log_module._sync
    monkeypatch.setattr(log_module, "_sync", lambda fd: (gate.wait(5), real_sync(fd)))

    pending = asyncio.create_task(writer.append(decision(1)))
    await asyncio.sleep(0.2)
    assert not pending.done()  # written, not yet synced: the caller still waits
    gate.set()
    await asyncio.wait_for(pending, 5)
    await writer.close()


async def test_a_disk_full_error_fails_the_batch_closed_then_recovers(tmp_path: Path) -> None:
    d = tmp_path / "a"
    writer = AuditWriter(AuditLog(d), retry_initial_s=0.3)
    await writer.start()
    await writer.append(decision(1))
    # The segment's file descriptor now writes to /dev/full: ENOSPC, as on a full disk.
    os.close(writer.log._fd)  # type: ignore[arg-type]
    writer.log._fd = os.open("/dev/full", os.O_WRONLY)

    with pytest.raises(AuditUnavailableError) as info:
        await writer.append(decision(2))

    assert info.value.message == "audit trail unavailable: ENOSPC (No space left on device)"
    assert (info.value.status, info.value.code) == (503, "audit_unavailable")
    assert writer.available is False
    with pytest.raises(AuditUnavailableError):
        await writer.append(decision(3))  # refused at once while unavailable
    deadline = time.monotonic() + 5
    while not writer.available and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert writer.available is True
    await writer.append(decision(4))
    await writer.close()

    recs = records(d)
    assert [r["decision_id"] for r in recs if r["type"] == "decision"] == ["d-0001", "d-0004"]
    recovery = [r for r in recs if r["type"] == "start"][-1]
    assert recovery["reason"] == "recovery"
    assert "No space left on device" in recovery["error"]
    assert verify(d).problem is None


async def test_an_unusable_directory_at_start_leaves_the_writer_unavailable_until_fixed(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where the audit directory's parent should be")
    writer = AuditWriter(AuditLog(blocker / "audit"), retry_initial_s=0.05, retry_max_s=0.2)
    await writer.start()

    assert writer.available is False
    assert writer.reason == "ENOTDIR (Not a directory)"
    with pytest.raises(AuditUnavailableError):
        await writer.append(decision(1))

    blocker.unlink()
    deadline = time.monotonic() + 5
    while not writer.available and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert writer.available is True
    await writer.append(decision(1))
    await writer.close()
    assert verify(blocker / "audit").problem is None


async def test_close_finishes_queued_records_and_writes_the_stop_record(tmp_path: Path) -> None:
    writer = AuditWriter(AuditLog(tmp_path / "a"))
    await writer.start()
    tasks = [asyncio.create_task(writer.append(decision(i))) for i in range(10)]
    await asyncio.sleep(0)

    await writer.close()

    assert all(t.done() and t.exception() is None for t in tasks)
    assert records(tmp_path / "a")[-1]["type"] == "stop"
    with pytest.raises(AuditUnavailableError, match="stopping"):
        await writer.append(decision(99))


def test_head_file_names_the_last_durable_record(trail: Path) -> None:
    raw = (trail / HEAD_FILE).read_bytes()
    last = records(trail)[-1]

    assert raw == f"{last['seq']:020d} {last['hash']}\n".encode()


async def test_a_record_that_is_not_json_fails_alone_and_the_writer_goes_on(
    tmp_path: Path,
) -> None:
    writer = AuditWriter(AuditLog(tmp_path / "a"))
    await writer.start()

    results = await asyncio.gather(
        writer.append(decision(1)),
        writer.append({"type": "decision", "decision_id": "bad", "when": object()}),
        writer.append(decision(2)),
        return_exceptions=True,
    )
    await writer.close()

    assert results[0] is None and results[2] is None
    assert isinstance(results[1], PDPError) and results[1].status == 500
    assert [r["decision_id"] for r in records(tmp_path / "a") if r["type"] == "decision"] == [
        "d-0001",
        "d-0002",
    ]
    assert verify(tmp_path / "a").problem is None


def test_a_segment_renamed_out_of_its_place_is_detected(trail: Path) -> None:
    seg = list_segments(trail)[1]
    seg.path.rename(seg.path.with_name(segment_name(seg.first_seq + 1)))

    problem = verify(trail).problem

    assert problem is not None
    assert (problem.seq, problem.kind) == (seg.first_seq + 1, "reordered")


async def test_a_failed_sync_refuses_its_batch_and_the_trail_recovers_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "a"
    writer = AuditWriter(AuditLog(d), retry_initial_s=0.05)
    await writer.start()
    await writer.append(decision(1))
    real_sync = log_module._sync
    failures = [OSError(errno.EIO, os.strerror(errno.EIO))]

    def flaky_sync(fd: int) -> None:
        if failures:
            raise failures.pop()
        real_sync(fd)

    monkeypatch.setattr(log_module, "_sync", flaky_sync)

    with pytest.raises(AuditUnavailableError, match=r"EIO \(Input/output error\)"):
        await writer.append(decision(2))
    deadline = time.monotonic() + 5
    while not writer.available and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await writer.append(decision(3))
    await writer.close()

    ids = [r["decision_id"] for r in records(d) if r["type"] == "decision"]
    assert ids == ["d-0001", "d-0003"]  # written but never durable: cut at recovery
    assert verify(d).problem is None


async def test_a_later_sync_releases_the_earlier_batches_it_covers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = AuditWriter(AuditLog(tmp_path / "a"), max_in_flight=2)
    await writer.start()
    first_sync_may_return = threading.Event()
    calls: list[int] = []
    real_sync = log_module._sync

    def slow_first_sync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            first_sync_may_return.wait(5)
        real_sync(fd)

    monkeypatch.setattr(log_module, "_sync", slow_first_sync)

    first = asyncio.create_task(writer.append(decision(1)))
    await asyncio.sleep(0.05)  # its sync is now stuck in the kernel, say
    second = asyncio.create_task(writer.append(decision(2)))
    await asyncio.wait_for(asyncio.gather(first, second), 5)  # the second sync covers both

    assert len(calls) == 2 and not first_sync_may_return.is_set()
    first_sync_may_return.set()
    await writer.close()
    assert verify(tmp_path / "a").problem is None


def test_the_active_segment_reserves_blocks_ahead_and_gives_them_back_at_close(
    tmp_path: Path,
) -> None:
    log = AuditLog(tmp_path / "a")
    log.open()
    log.append([decision(1)])
    seg = list_segments(tmp_path / "a")[-1].path
    if seg.stat().st_blocks * 512 < PREALLOCATE_BYTES:
        pytest.skip("this file system does not reserve blocks with fallocate(KEEP_SIZE)")

    size_while_open = seg.stat().st_size
    log.close()

    assert size_while_open < 4096  # readers never see the reservation
    assert seg.stat().st_blocks * 512 < 64 * 1024
    assert verify(tmp_path / "a").problem is None


def test_a_batch_waits_for_more_records_only_while_they_keep_coming() -> None:
    writer = AuditWriter(AuditLog(Path("unused")), commit_delay_s=0.001)
    writer._pending = [({}, None)]  # type: ignore[list-item]  # one record queued

    assert not writer.gathering()  # after a quiet spell: synced at once
    for i in range(30):
        writer.arrived(100.0 + i * 0.0005)  # a steady stream, one every 0.5 ms
    assert writer.gathering()
    writer._pending = writer._pending * writer.gather_max
    assert not writer.gathering()  # a full batch goes at once
    writer._pending = writer._pending[:1]
    writer.arrived(101.5)  # a second of silence
    assert not writer.gathering()
    writer._executor.shutdown()


def test_a_batch_does_not_wait_when_no_other_decision_is_coming() -> None:
    writer = AuditWriter(AuditLog(Path("unused")), commit_delay_s=0.001)
    writer._pending = [({}, None)]  # type: ignore[list-item]  # one record queued
    for i in range(30):
        writer.arrived(100.0 + i * 0.0005)  # a steady stream, one every 0.5 ms
    in_progress = [1]  # one caller, waiting for this very record (1 connection)
    writer.expecting = lambda: in_progress[0]
    assert not writer.gathering()
    in_progress[0] = 3  # two more decisions on their way
    assert writer.gathering()
    writer._executor.shutdown()


async def test_under_a_stream_of_records_syncs_are_shared(tmp_path: Path) -> None:
    commits: list[int] = []
    writer = AuditWriter(
        AuditLog(tmp_path / "a"), commit_delay_s=0.002, on_commit=lambda n, _: commits.append(n)
    )
    await writer.start()
    loop = asyncio.get_running_loop()
    tasks = []
    for i in range(100):
        tasks.append(loop.create_task(writer.append(decision(i))))
        await asyncio.sleep(0.0005)
    await asyncio.gather(*tasks)
    await writer.close()

    assert sum(commits) == 100
    assert len(commits) < 75
    assert verify(tmp_path / "a").problem is None
