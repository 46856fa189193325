"""Checking a trail end to end: every hash, every link, every seq, the HEAD.

:func:`verify` reads every segment in order and stops at the first problem, naming the
first bad ``seq``:

- ``modified``   a record's ``hash`` does not match its content, or its line is not its
  canonical JSON byte for byte (a member repeated, reordered, re-spaced, re-escaped);
- ``deleted``    a seq is missing and appears nowhere in the trail;
- ``reordered``  a seq is missing here but appears elsewhere;
- ``broken``     a record's ``prev`` is not the hash of the record before it;
- ``truncated``  a torn line in a closed segment, records cut from the end (HEAD names a
  later seq), records a restart found missing, or segments missing at the start without a
  retention record vouching for them.

- ``signature``  a checkpoint's signature does not verify (or names an unknown key);
- ``unsealed``   nothing: records after the last checkpoint are counted, not a problem.

A torn last line of the live segment while a writer holds the LOCK is a record being
written, not a problem. The chain alone proves the trail was not edited *after* the fact
by someone who did not also recompute every later hash and the HEAD. Signed checkpoints
(:mod:`.checkpoint`) rule that out up to the last checkpoint: with ``keys`` every
checkpoint's signature is checked, and each must sign the seq and hash of the record
before it. A trail cut short together with its HEAD is caught against a checkpoint kept
elsewhere (``expect``: the collector's copy, or one fetched earlier).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .chain import GENESIS, canonical, record_hash
from .checkpoint import Checkpoint, CheckpointError, PublicKeys, check_record
from .segment import (
    AuditReadError,
    Line,
    Segment,
    iter_lines,
    list_segments,
    parse,
    read_head,
    writer_running,
)


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing wrong with a trail."""

    seq: int | None
    kind: str
    message: str
    segment: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f" ({self.segment} line {self.line})" if self.segment and self.line else ""
        head = f"seq {self.seq}: " if self.seq is not None else ""
        return f"{head}{self.message}{where}"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What :func:`verify` found: counts and, if the trail is bad, the first problem."""

    records: int
    segments: int
    first_seq: int | None
    last_seq: int | None
    head_hash: str | None
    live: bool
    problem: Problem | None
    #: Checkpoints found, the last one's claims, and records after it (unsealed).
    checkpoints: int = 0
    last_checkpoint: Checkpoint | None = None
    unsealed: int = 0
    #: True when checkpoint signatures were checked (keys were given).
    signatures_checked: bool = False
    #: The checkpoint kept out of band, and whether the trail still held its seq.
    expected: Checkpoint | None = None
    expected_checked: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None


def _all_seqs(segments: list[Segment]) -> set[int]:
    """Every seq that parses anywhere in the trail (to tell deleted from reordered)."""
    seqs = set()
    for seg in segments:
        for line in iter_lines(seg.path):
            try:
                seq = parse(line.raw).get("seq")
            except AuditReadError:
                continue
            if isinstance(seq, int):
                seqs.add(seq)
    return seqs


def _out_of_place(expected: int, found: int, segments: list[Segment]) -> tuple[str, str]:
    """(kind, message) for finding ``found`` where ``expected`` should be."""
    if expected in _all_seqs(segments):
        return "reordered", f"out of order (found seq {found} in its place; records reordered)"
    if found > expected:
        span = f"seq {expected}" if found - 1 == expected else f"seqs {expected}..{found - 1}"
        return "deleted", f"missing ({span} deleted)"
    return "reordered", f"out of order (found seq {found} again; records reordered)"


class _Scan:
    """State of one pass over a trail."""

    def __init__(
        self,
        directory: Path,
        keys: PublicKeys | None = None,
        expected: Checkpoint | None = None,
    ) -> None:
        self.keys = keys
        self.anchor = expected
        self.anchor_checked = False
        self.checkpoints = 0
        self.last_checkpoint: Checkpoint | None = None
        self.unsealed = 0
        self.live = writer_running(directory)
        self.head = read_head(directory)  # read before the segments: never ahead of them
        self.segments = list_segments(directory)
        self.records = 0
        self.first: tuple[int, str] | None = None
        self.expected: int | None = None
        self.prev = GENESIS
        self.vouched: dict[int, str] = {}  # retention records: through_seq -> last_hash
        self.missing_noted: list[tuple[int, int, int]] = []  # (from, through, noted at)
        self.head_seen: str | None = None

    def result(self, problem: Problem | None) -> VerifyResult:
        return VerifyResult(
            records=self.records,
            segments=len(self.segments),
            first_seq=self.first[0] if self.first else None,
            last_seq=self.expected - 1 if self.expected is not None else None,
            head_hash=self.prev if self.records else None,
            live=self.live,
            problem=problem,
            checkpoints=self.checkpoints,
            last_checkpoint=self.last_checkpoint,
            unsealed=self.unsealed,
            signatures_checked=self.keys is not None,
            expected=self.anchor,
            expected_checked=self.anchor_checked,
        )

    def check_line(self, seg: Segment, line: Line, first_in_segment: bool) -> Problem | None:
        """Check one complete line; remember what later checks need."""

        def bad(seq: int | None, kind: str, message: str) -> Problem:
            return Problem(seq, kind, message, seg.name, line.number)

        try:
            rec = parse(line.raw)
        except AuditReadError as exc:
            return bad(self.expected, "modified", f"unreadable record ({exc})")
        seq = rec.get("seq")
        if rec.get("hash") != record_hash(rec) or not isinstance(seq, int):
            return bad(self.expected or seq, "modified", "hash mismatch (record modified)")
        if line.raw != canonical(rec):
            # The hash covers the parsed record; the line must be its canonical JSON byte
            # for byte, or it was rewritten without changing any hash: a member repeated
            # (last-wins and first-wins readers then disagree), reordered, re-spaced or
            # re-escaped.
            return bad(
                seq,
                "modified",
                "the line is not the record's canonical JSON (a member repeated, reordered, "
                "re-spaced or re-escaped: record rewritten)",
            )
        if first_in_segment and seq != seg.first_seq:
            return bad(seg.first_seq, *_out_of_place(seg.first_seq, seq, self.segments))
        if self.expected is None:
            self.first = (seq, str(rec.get("prev")))
            if seq == 1 and rec.get("prev") != GENESIS:
                return bad(1, "broken", "the first record does not start the chain")
        elif seq != self.expected:
            return bad(self.expected, *_out_of_place(self.expected, seq, self.segments))
        elif rec.get("prev") != self.prev:
            return bad(seq, "broken", f"prev is not the hash of seq {seq - 1} (chain broken)")
        if self.anchor is not None and seq == self.anchor.seq:
            self.anchor_checked = True
            if rec.get("hash") != self.anchor.hash:
                return bad(
                    seq,
                    "modified",
                    f"hash differs from the one the signed checkpoint of {self.anchor.time} "
                    "holds (records rewritten)",
                )
        if rec.get("type") == "checkpoint":
            problem = self.check_checkpoint(rec, seq)
            if problem is not None:
                return bad(problem[0], problem[1], problem[2])
        else:
            self.unsealed += 1
        self.prev = str(rec["hash"])
        self.expected = seq + 1
        self.records += 1
        if self.head is not None and seq == self.head[0]:
            self.head_seen = self.prev
        kind = rec.get("type")
        if kind == "retention":
            pruned = rec.get("pruned") or {}
            self.vouched[int(pruned.get("through_seq", -1))] = str(pruned.get("last_hash"))
        elif kind == "start" and isinstance(rec.get("missing"), dict):
            m = rec["missing"]
            self.missing_noted.append((int(m["from_seq"]), int(m["through_seq"]), seq))
        return None

    def check_checkpoint(self, rec: dict[str, Any], seq: int) -> tuple[int, str, str] | None:
        """A checkpoint record: its signature, and that it seals the record before it."""
        try:
            claims = check_record(rec, self.keys)
        except CheckpointError as exc:
            return seq, "signature", f"checkpoint not valid: {exc}"
        if claims.seq != seq - 1 or claims.hash != rec.get("prev"):
            return (
                claims.seq,
                "modified",
                f"the checkpoint at seq {seq} signed hash {claims.hash[:16]}… for seq "
                f"{claims.seq}, the trail holds another (records before it rewritten)",
            )
        self.checkpoints += 1
        self.last_checkpoint = claims
        self.unsealed = 0
        return None

    def check_ends(self) -> Problem | None:
        """After the last record: the start of the trail, restarts, the HEAD."""
        assert self.first is not None and self.expected is not None
        first_seq, first_prev = self.first
        if first_seq != 1 and self.vouched.get(first_seq - 1) != first_prev:
            return Problem(
                1,
                "truncated",
                f"records before seq {first_seq} are missing and no retention record "
                "accounts for them (segments deleted)",
            )
        if self.missing_noted:
            lo, hi, at = self.missing_noted[0]
            return Problem(
                lo,
                "truncated",
                f"records {lo}..{hi} were missing at the restart recorded at seq {at} "
                "(trail truncated)",
            )
        if self.anchor is not None and self.anchor.seq >= self.expected:
            self.anchor_checked = True
            return Problem(
                self.expected,
                "truncated",
                f"missing at the end: the signed checkpoint of {self.anchor.time} seals seq "
                f"{self.anchor.seq} but the trail ends at seq {self.expected - 1} "
                "(trail truncated)",
            )
        if self.head is not None:
            if self.head[0] >= self.expected:
                return Problem(
                    self.expected,
                    "truncated",
                    f"missing at the end: HEAD names seq {self.head[0]} but the trail ends "
                    f"at seq {self.expected - 1} (trail truncated)",
                )
            if self.head_seen is not None and self.head_seen != self.head[1]:
                return Problem(self.head[0], "modified", "hash differs from the one HEAD holds")
        return None


def verify(
    directory: Path,
    *,
    keys: PublicKeys | None = None,
    expected: Checkpoint | None = None,
) -> VerifyResult:
    """Verify the trail in ``directory``; never raises for a bad trail, only reports it.

    ``keys``: check every checkpoint's signature with these audit-signing keys.
    ``expected``: a checkpoint kept out of band that the trail must still reach and match.
    """
    scan = _Scan(directory, keys, expected)
    if not scan.segments:
        return scan.result(Problem(None, "empty", f"no audit segments in {directory}"))
    for index, seg in enumerate(scan.segments):
        last_segment = index == len(scan.segments) - 1
        for line in iter_lines(seg.path):
            first_in_segment = line.offset == 0
            if not line.complete:
                if last_segment and scan.live:
                    break  # the record being written right now
                problem: Problem | None = Problem(
                    scan.expected,
                    "truncated",
                    f"torn line ({len(line.raw)} bytes without a newline; trail truncated)",
                    seg.name,
                    line.number,
                )
            else:
                problem = scan.check_line(seg, line, first_in_segment)
            if problem is not None:
                return scan.result(problem)
    if scan.first is None:
        return scan.result(Problem(None, "empty", f"no records in {directory}"))
    return scan.result(scan.check_ends())
