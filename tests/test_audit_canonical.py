"""A trail line is its record's canonical JSON, byte for byte (outside review, red team).

The chain hashes the canonical JSON of the *parsed* record. Without comparing the line's
bytes to that form, a line could be rewritten without changing any hash: a member repeated
before the real one (a last-wins reader such as the verifier sees the original, a
first-wins reader such as many log tools sees the forgery), members reordered, whitespace
or escapes changed. Every such rewrite is tampering, and ``verify`` names it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from pdpctl.main import cli

from pdp.audit.segment import list_segments
from pdp.audit.verify import verify

from .audit_helpers import locate, make_trail

N = 12


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    d = tmp_path / "audit"
    make_trail(d, N)
    assert len(list_segments(d)) >= 2
    return d


def rewrite(directory: Path, seq: int, change: Callable[[bytes], bytes]) -> None:
    """Rewrite the bytes of ``seq``'s line (without its newline) with ``change``."""
    path, i = locate(directory, seq)
    lines = path.read_bytes().splitlines(keepends=True)
    new = change(lines[i][:-1])
    assert new != lines[i][:-1]
    lines[i] = new + b"\n"
    path.write_bytes(b"".join(lines))


def first_wins(raw: bytes) -> dict[str, object]:
    """How a reader that keeps the first of repeated members reads a line."""

    def keep_first(pairs: list[tuple[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in pairs:
            out.setdefault(key, value)
        return out

    doc: dict[str, object] = json.loads(raw, object_pairs_hook=keep_first)
    return doc


def test_a_member_repeated_before_the_real_one_is_tampering(trail: Path) -> None:
    seq = 4  # decision(2): allowed; the forgery makes it a deny for first-wins readers
    forged = b'{"decision":{"allow":false,"reasons":[{"code":"forged"}]},'
    rewrite(trail, seq, lambda raw: forged + raw[1:])
    path, i = locate(trail, seq)
    line = path.read_bytes().splitlines()[i]
    assert first_wins(line)["decision"] == {"allow": False, "reasons": [{"code": "forged"}]}

    result = verify(trail)

    assert result.problem is not None
    assert (result.problem.seq, result.problem.kind) == (seq, "modified")
    assert "canonical" in result.problem.message


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda raw: raw.replace(b":", b": ", 1), id="whitespace"),
        pytest.param(lambda raw: raw + b" ", id="trailing-space"),
        pytest.param(lambda raw: raw + b"\r", id="crlf"),
        pytest.param(
            lambda raw: raw.replace(b'"decision_id"', b'"\\u0064ecision_id"'), id="escape"
        ),
        pytest.param(
            lambda raw: json.dumps(
                dict(reversed(list(json.loads(raw).items()))), separators=(",", ":")
            ).encode(),
            id="unsorted",
        ),
        pytest.param(
            lambda raw: raw.replace(b'"type":"decision"', b'"type":"decision","type":"decision"'),
            id="same-member-twice",
        ),
    ],
)
def test_a_line_rewritten_to_the_same_record_is_tampering(
    trail: Path, change: Callable[[bytes], bytes]
) -> None:
    seq = 5
    rewrite(trail, seq, change)

    result = verify(trail)

    assert result.problem is not None
    assert (result.problem.seq, result.problem.kind) == (seq, "modified")


def test_pdpctl_audit_verify_fails_on_a_repeated_member(trail: Path) -> None:
    rewrite(trail, 3, lambda raw: b'{"decision":{"allow":true,"reasons":[]},' + raw[1:])

    result = CliRunner().invoke(cli, ["audit", "verify", "--dir", str(trail)])

    assert result.exit_code == 10, result.output
    assert "seq 3" in result.output and "canonical" in result.output


def test_an_untouched_trail_still_verifies(trail: Path) -> None:
    assert verify(trail).ok
