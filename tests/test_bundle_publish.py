"""`pdpctl bundle publish FILE oci://HOST:PORT/REPO:TAG` against a real OCI registry on
loopback: the manifest has the layout OPA's OCI downloader reads."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pdpctl import errors
from pdpctl.main import cli

from pdp.oci import CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, OCIError, Reference

from .bundle_keys import key_pair
from .conftest import POLICIES, free_port
from .registry_process import RegistryProcess, registry  # noqa: F401 (fixture)

pytestmark = pytest.mark.opa


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["--policies", str(POLICIES), *args], catch_exceptions=False)


def manifest(host: str, repo: str, tag: str) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
        return doc


def test_publish_pushes_one_bundle_layer_in_opas_layout(
    tmp_path: Path,
    registry: RegistryProcess,  # noqa: F811
) -> None:
    private, _ = key_pair(tmp_path, "signer")
    bundle = tmp_path / "b.tar.gz"
    built = run(
        "bundle", "build", "-o", str(bundle), "--revision", "v1", "--signing-key", str(private)
    )
    assert built.exit_code == 0, built.output

    ref = f"oci://{registry.host}/policies/pdp:v1"
    result = run("bundle", "publish", str(bundle), ref, "--plain-http")

    assert result.exit_code == 0, result.output
    digest = "sha256:" + hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert f"(signed, revision v1) to {ref}" in result.output and digest in result.output
    doc = manifest(registry.host, "policies/pdp", "v1")
    [layer] = doc["layers"]
    assert (layer["mediaType"], layer["digest"], layer["size"]) == (
        LAYER_MEDIA_TYPE,
        digest,
        bundle.stat().st_size,
    )
    assert doc["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    assert doc["annotations"]["org.opencontainers.image.revision"] == "v1"
    with urllib.request.urlopen(
        f"http://{registry.host}/v2/policies/pdp/blobs/{digest}", timeout=5
    ) as resp:
        assert resp.read() == bundle.read_bytes()  # the bundle, byte for byte


def test_publishing_to_an_unreachable_registry_fails_as_a_service_error(tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar.gz"
    assert run("bundle", "build", "-o", str(bundle)).exit_code == 0

    result = run(
        "bundle", "publish", str(bundle), f"oci://127.0.0.1:{free_port()}/p/pdp:v1", "--plain-http"
    )

    assert result.exit_code == errors.SERVICE_ERROR
    assert "push to oci://127.0.0.1:" in result.output


@pytest.mark.parametrize(
    "ref",
    [
        "https://reg.example/p:v1",
        "oci://reg.example/p",
        "oci://reg.example/Upper:v1",
        "oci://reg.example/p:v1;rm",
        "oci://reg.example:99999999/p:v1",
    ],
)
def test_a_malformed_reference_is_refused(ref: str) -> None:
    with pytest.raises(OCIError):
        Reference.parse(ref)


def test_a_reference_names_host_repository_and_tag() -> None:
    ref = Reference.parse("oci://127.0.0.1:5000/team/policies/pdp:2026-11-30.1")
    assert (ref.host, ref.repository, ref.tag) == (
        "127.0.0.1:5000",
        "team/policies/pdp",
        "2026-11-30.1",
    )
    assert ref.target == "127.0.0.1:5000/team/policies/pdp:2026-11-30.1"
