"""Signed bundles: `pdpctl bundle build --signing-key` (OPA signs), `bundle verify` (OPA
verifies; exit 12 when it does not), `bundle inspect`. Keys are generated per test."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pdpctl import errors
from pdpctl.main import cli

from pdp.config import Settings

from .bundle_keys import key_pair, tamper
from .conftest import POLICIES

pytestmark = pytest.mark.opa


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["--policies", str(POLICIES), *args], catch_exceptions=False)


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_a_signed_bundle_verifies_with_its_public_key(tmp_path: Path, alg: str) -> None:
    private, public = key_pair(tmp_path, "signer", alg)
    out = tmp_path / "signed.tar.gz"

    built = run(
        "bundle", "build", "--output", str(out), "--revision", "v1",
        "--signing-key", str(private), "--signing-alg", alg, "--key-id", "pdp-bundle-signing",
    )  # fmt: skip

    assert built.exit_code == 0, built.output
    assert f"signed {alg} key pdp-bundle-signing" in built.output
    with tarfile.open(out) as tar:
        assert "/.signatures.json" in tar.getnames() or ".signatures.json" in tar.getnames()
    ok = run("bundle", "verify", str(out), "--verification-key", str(public), "--signing-alg", alg)
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith(f"ok: {out} revision v1 signed {alg} key pdp-bundle-signing")


def _signed(tmp_path: Path) -> tuple[Path, Path]:
    private, public = key_pair(tmp_path, "signer")
    out = tmp_path / "signed.tar.gz"
    result = run(
        "bundle", "build", "-o", str(out), "--revision", "v1", "--signing-key", str(private)
    )
    assert result.exit_code == 0, result.output
    return out, public


def test_a_tampered_bundle_fails_verification_with_its_own_exit_code(tmp_path: Path) -> None:
    out, public = _signed(tmp_path)
    bad = tamper(out, tmp_path / "tampered.tar.gz")

    result = run("bundle", "verify", str(bad), "--verification-key", str(public))

    assert result.exit_code == errors.BUNDLE_INVALID == 12
    assert "signature does not verify" in result.output


def test_a_bundle_signed_by_another_key_fails_verification(tmp_path: Path) -> None:
    out, _ = _signed(tmp_path)
    _, other = key_pair(tmp_path, "other")

    result = run("bundle", "verify", str(out), "--verification-key", str(other))

    assert result.exit_code == errors.BUNDLE_INVALID


def test_an_unsigned_bundle_fails_verification(tmp_path: Path) -> None:
    _, public = key_pair(tmp_path, "signer")
    out = tmp_path / "unsigned.tar.gz"
    assert run("bundle", "build", "-o", str(out)).exit_code == 0

    result = run("bundle", "verify", str(out), "--verification-key", str(public))

    assert result.exit_code == errors.BUNDLE_INVALID
    assert ".signatures.json" in result.output


def test_the_algorithm_comes_from_the_verifier_not_the_bundle(tmp_path: Path) -> None:
    out, public = _signed(tmp_path)  # ES256
    result = run(
        "bundle", "verify", str(out), "--verification-key", str(public), "--signing-alg", "RS256"
    )
    assert result.exit_code == errors.BUNDLE_INVALID


def test_inspect_shows_revision_roots_files_and_signer(tmp_path: Path) -> None:
    private, _ = key_pair(tmp_path, "signer")
    out = tmp_path / "b.tar.gz"
    run("bundle", "build", "-o", str(out), "--revision", "r-42", "--signing-key", str(private),
        "--key-id", "team-key")  # fmt: skip

    text = run("bundle", "inspect", str(out))
    doc = json.loads(run("bundle", "inspect", str(out), "--json").output)

    assert text.exit_code == 0
    assert "revision: r-42" in text.output and "key_id team-key" in text.output
    assert doc["revision"] == "r-42" and doc["signed"] is True
    assert doc["signer"]["alg"] == "ES256" and doc["signer"]["key_id"] == "team-key"
    assert "pdp/decision.rego" in doc["files"] and ".signatures.json" in doc["files"]
    assert doc["roots"] == [""]
    digest = doc["content_digest"]
    assert isinstance(digest, str) and digest.startswith("sha256:") and len(digest) == 71
    assert f"content:  {digest}" in text.output


def test_inspect_says_when_a_bundle_has_no_content_digest(tmp_path: Path) -> None:
    out = tmp_path / "plain.tar.gz"
    opa = str(POLICIES.parent / ".tools" / "bin" / "opa")
    pdp, data = str(POLICIES / "pdp"), str(POLICIES / "data")
    subprocess.run(
        [opa, "build", "-o", str(out), "--ignore", "*_test.rego", pdp, data],
        check=True,
        capture_output=True,
    )

    text = run("bundle", "inspect", str(out))
    doc = json.loads(run("bundle", "inspect", str(out), "--json").output)

    assert doc["content_digest"] is None
    assert "content:  no content digest" in text.output


def test_key_id_without_a_signing_key_is_a_usage_error(tmp_path: Path) -> None:
    result = run("bundle", "build", "-o", str(tmp_path / "x.tar.gz"), "--key-id", "k")
    assert result.exit_code == errors.BAD_INPUT


def test_without_key_id_the_signature_names_the_key_serve_expects_by_default(
    tmp_path: Path,
) -> None:
    out, _ = _signed(tmp_path)  # no --key-id
    doc = json.loads(run("bundle", "inspect", str(out), "--json").output)
    assert doc["signer"]["key_id"] == "pdp-bundle-signing" == Settings().bundle_key_id


def test_a_built_bundle_names_its_contents_in_its_manifest_signed_or_not(tmp_path: Path) -> None:
    # metadata.content_digest: what tells two bundles with one revision apart (the decision
    # cache keys on it); the signature covers the manifest, so signing keeps it.
    from pdp.bundle import content_digest

    plain = tmp_path / "plain.tar.gz"
    assert run("bundle", "build", "-o", str(plain), "--revision", "v1").exit_code == 0
    signed, _ = _signed(tmp_path)
    digests = []
    for bundle in (plain, signed):
        with tarfile.open(bundle) as tar:
            files = {}
            for member in tar.getmembers():
                fileobj = tar.extractfile(member)
                if fileobj is not None:
                    files[member.name] = fileobj.read()
        manifest = json.loads(next(v for k, v in files.items() if k.endswith(".manifest")))
        assert manifest["revision"] == "v1"
        digest = manifest["metadata"]["content_digest"]
        assert digest == content_digest(files)
        digests.append(digest)
    assert digests[0] == digests[1]
