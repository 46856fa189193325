"""Signed checkpoints: the writer seals the trail every N records, every T seconds and at
shutdown; `audit verify --keys` checks the signatures, counts what is unsealed and catches
a trail rewritten (hashes recomputed, HEAD removed) or cut short against a checkpoint kept
out of band. Real keys are generated at test time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pdpctl import errors
from pdpctl.main import cli

from pdp.audit.chain import GENESIS, canonical, record_hash
from pdp.audit.checkpoint import AuditSigner, CheckpointError, check_record, load_public_keys
from pdp.audit.log import AuditLog
from pdp.audit.segment import HEAD_FILE
from pdp.audit.verify import verify
from pdp.audit.writer import AuditWriter

from .audit_helpers import decision, locate, records, segment_lines


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


async def write_trail(
    directory: Path,
    keys: Path,
    n: int,
    *,
    every: int = 5,
    interval: float = 0.0,
    segment_max_bytes: int = 4096,
    rotate_key_at: int | None = None,
) -> AuditWriter:
    signer = AuditSigner(keys)
    signer.open()
    writer = AuditWriter(
        AuditLog(directory, segment_max_bytes=segment_max_bytes),
        signer=signer,
        checkpoint_every=every,
        checkpoint_interval_s=interval,
    )
    await writer.start()
    for i in range(n):
        if rotate_key_at == i:
            signer.rotate()
        await writer.append(decision(i))
    await writer.close()
    return writer


def rewrite_from(directory: Path, change: Callable[[list[dict[str, Any]]], None]) -> None:
    """What an attacker with write access does: change the records, recompute every hash
    and prev (across segments), drop HEAD. Checkpoint records are kept as they were
    (their signature cannot be recomputed without the key), re-chained like the rest."""
    recs = records(directory)
    change(recs)
    prev = GENESIS
    for seq, rec in enumerate(recs, start=1):
        rec["seq"], rec["prev"] = seq, prev
        rec["hash"] = record_hash(rec)
        prev = rec["hash"]
    paths = [p for p, _ in segment_lines(directory)]
    for p in paths[1:]:
        p.unlink()
    paths[0].write_bytes(b"".join(canonical(r) + b"\n" for r in recs))
    (directory / HEAD_FILE).unlink(missing_ok=True)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return tmp_path / "audit-keys"


async def test_checkpoints_every_n_records_and_a_final_one_seal_the_whole_trail(
    tmp_path: Path, keys: Path
) -> None:
    d = tmp_path / "audit"
    await write_trail(d, keys, 12, every=5)

    recs = records(d)
    cps = [r for r in recs if r["type"] == "checkpoint"]
    assert len(cps) >= 3
    assert recs[-1]["type"] == "checkpoint" and recs[-1]["final"] is True
    assert recs[-2]["type"] == "stop"
    public = load_public_keys(keys / "jwks.json")
    for cp in cps:
        claims = check_record(cp, public)
        assert (claims.seq, claims.hash) == (cp["seq"] - 1, cp["prev"])
    result = verify(d, keys=public)
    assert result.ok, result.problem
    assert (result.checkpoints, result.unsealed, result.signatures_checked) == (len(cps), 0, True)
    assert not any((keys / f).exists() for f in ("jwks.json.tmp",))
    assert oct((keys / "current").stat().st_mode & 0o777) == "0o600"


async def test_a_checkpoint_follows_records_that_waited_the_interval(
    tmp_path: Path, keys: Path
) -> None:
    signer = AuditSigner(keys)
    signer.open()
    writer = AuditWriter(
        AuditLog(tmp_path / "audit"), signer=signer, checkpoint_every=0, checkpoint_interval_s=0.05
    )
    await writer.start()
    await writer.append(decision(1))
    for _ in range(200):
        if writer.sealed_seq > 0:
            break
        await asyncio.sleep(0.01)
    assert writer.last_checkpoint is not None
    assert writer.last_checkpoint["checkpoint"]["seq"] == writer.log.seq - 1
    await writer.close()


async def test_cli_verify_with_keys_reports_checkpoints_and_unsealed_records(
    tmp_path: Path, keys: Path
) -> None:
    d = tmp_path / "audit"
    await write_trail(d, keys, 7, every=5)
    # Records after the last checkpoint: appended by a writer that does not sign.
    log = AuditLog(d)
    log.open()
    log.append([decision(100)])
    log.release()

    result = run("audit", "verify", "--dir", str(d), "--keys", str(keys / "jwks.json"))

    assert result.exit_code == errors.OK, result.output
    assert "signatures checked" in result.output
    assert "unsealed: 2 record(s) after the last checkpoint" in result.output  # start + decision
    doc = json.loads(
        run("audit", "verify", "--dir", str(d), "--keys", str(keys / "jwks.json"), "--json").output
    )
    assert doc["ok"] and doc["unsealed"] == 2 and doc["signatures_checked"] is True


def _edit(recs: list[dict[str, Any]]) -> None:
    recs[3]["decision"]["allow"] = not recs[3]["decision"]["allow"]


def _delete(recs: list[dict[str, Any]]) -> None:
    del recs[3]


def _reorder(recs: list[dict[str, Any]]) -> None:
    recs[3], recs[4] = recs[4], recs[3]


@pytest.mark.parametrize(
    "change", [_edit, _delete, _reorder], ids=["edited", "deleted", "reordered"]
)
async def test_a_rewritten_trail_with_recomputed_hashes_and_no_head_fails_against_the_checkpoints(
    tmp_path: Path, keys: Path, change: Callable[[list[dict[str, Any]]], None]
) -> None:
    d = tmp_path / "audit"
    await write_trail(d, keys, 12, every=5)
    rewrite_from(d, change)
    assert verify(d).problem is not None  # even without keys: the checkpoints no longer fit

    result = run("audit", "verify", "--dir", str(d), "--keys", str(keys / "jwks.json"))

    assert result.exit_code == errors.AUDIT_INVALID, result.output
    assert "records before it rewritten" in result.output


async def test_a_checkpoint_whose_members_were_edited_to_fit_fails_its_signature(
    tmp_path: Path, keys: Path
) -> None:
    d = tmp_path / "audit"
    await write_trail(d, keys, 12, every=5)

    def forge(recs: list[dict[str, Any]]) -> None:
        _edit(recs)
        # recompute first, then make the checkpoint's members say the new hash
        prev = GENESIS
        for seq, rec in enumerate(recs, start=1):
            rec["seq"], rec["prev"] = seq, prev
            if rec["type"] == "checkpoint":
                rec["checkpoint"]["hash"] = prev
            rec["hash"] = record_hash(rec)
            prev = rec["hash"]

    rewrite_from(d, forge)
    result = run("audit", "verify", "--dir", str(d), "--keys", str(keys / "jwks.json"))
    assert result.exit_code == errors.AUDIT_INVALID
    assert "checkpoint not valid: the checkpoint's members differ from what it signs" in (
        result.output
    )


async def test_a_checkpoint_signed_by_an_unknown_key_fails(tmp_path: Path, keys: Path) -> None:
    d = tmp_path / "audit"
    await write_trail(d, keys, 6, every=5)
    other = AuditSigner(tmp_path / "other-keys")
    other.open()

    result = run("audit", "verify", "--dir", str(d), "--keys", str(other.keys_dir / "jwks.json"))

    assert result.exit_code == errors.AUDIT_INVALID
    assert "signed by unknown key" in result.output


async def test_a_truncated_trail_without_head_fails_against_the_expected_checkpoint(
    tmp_path: Path, keys: Path
) -> None:
    d = tmp_path / "audit"
    writer = await write_trail(d, keys, 12, every=5)
    kept = tmp_path / "collector-copy.json"  # the collector's copy of the last checkpoint
    kept.write_text(json.dumps({"audit": writer.last_checkpoint}))
    last = records(d)[-1]["seq"]
    # cut the last records, including the final checkpoint, and the HEAD
    path, i = locate(d, last - 3)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:i]))
    for later in [p for p, _ in segment_lines(d) if p.name > path.name]:
        later.unlink()
    (d / HEAD_FILE).unlink()
    jwks = str(keys / "jwks.json")
    assert run("audit", "verify", "--dir", str(d), "--keys", jwks).exit_code == errors.OK

    result = run(
        "audit", "verify", "--dir", str(d), "--keys", jwks, "--expect-checkpoint", str(kept)
    )

    assert result.exit_code == errors.AUDIT_INVALID
    assert "trail truncated" in result.output
    assert f"seals seq {last - 1}" in result.output


async def test_an_expected_checkpoint_with_a_bad_signature_is_refused(
    tmp_path: Path, keys: Path
) -> None:
    d = tmp_path / "audit"
    writer = await write_trail(d, keys, 6, every=5)
    assert writer.last_checkpoint is not None
    forged = dict(writer.last_checkpoint)
    head, payload, sig = forged["jws"].split(".")
    forged["jws"] = f"{head}.{payload}.{sig[::-1]}"
    kept = tmp_path / "cp.json"
    kept.write_text(json.dumps(forged))

    result = run(
        "audit", "verify", "--dir", str(d), "--keys", str(keys / "jwks.json"),
        "--expect-checkpoint", str(kept),
    )  # fmt: skip

    assert result.exit_code == errors.AUDIT_INVALID
    assert "bad signature" in result.output


async def test_rotation_publishes_the_new_key_first_and_old_checkpoints_keep_verifying(
    tmp_path: Path, keys: Path
) -> None:
    d = tmp_path / "audit"
    await write_trail(d, keys, 12, every=5, rotate_key_at=6)

    kids = {r["checkpoint"]["kid"] for r in records(d) if r["type"] == "checkpoint"}
    assert len(kids) == 2
    public = load_public_keys(keys / "jwks.json")
    assert kids <= set(public)
    assert len(list(keys.glob("*.pem"))) == 1  # the retired private key is gone
    assert verify(d, keys=public).ok


def test_a_malformed_checkpoint_is_refused() -> None:
    with pytest.raises(CheckpointError):
        check_record({"type": "checkpoint", "jws": "a.b"}, None)
