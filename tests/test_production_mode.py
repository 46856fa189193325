"""Production mode end to end: `pdpctl serve --opa-config opa-config.yaml` (the repository's
file, registry address substituted through the environment) with a real OCI registry on
loopback, a real OPA sidecar and bundle-signing keys generated here.

publish v1 -> served; publish v2 -> active without a restart; unsigned or tampered v3 ->
refused, v2 stays, the refusal shows in /readyz, metrics and the log; restart with the
registry down -> the persisted v2 is served; --max-bundle-age -> not ready when too old;
a bundle signed by an unknown key and a registry serving other bytes than the manifest
promised -> refused.
"""

from __future__ import annotations

import copy
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pdpctl.main import cli

from pdp.devtrust import mint_svid

from .bundle_keys import key_pair, tamper
from .conftest import EXAMPLES, POLICIES, ROOT, ServeProcess, http_get, load_example, wait_until
from .registry_process import RegistryProcess, registry_binary

pytestmark = pytest.mark.opa

ALLOW = next(p for p in EXAMPLES if p.name == "allow-support-bot-jira-search.json")
REPO = "policies/pdp"
#: Polling of the repository's configuration (10..20 s) made quick for the test.
FAST = ("--opa-set", "bundles.pdp.polling.min_delay_seconds=1",
        "--opa-set", "bundles.pdp.polling.max_delay_seconds=2")  # fmt: skip


def run(*args: str) -> Any:
    result = CliRunner().invoke(cli, ["--policies", str(POLICIES), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


class Supply:
    """Keys, a registry, and helpers to build and publish bundles and to run the PDP."""

    def __init__(self, tmp: Path, registry: RegistryProcess) -> None:
        self.tmp = tmp
        self.registry = registry
        self.key, self.pub = key_pair(tmp / "keys", "bundle-signing")
        self.tag = f"oci://{registry.host}/{REPO}:prod"
        self.started: list[ServeProcess] = []

    def build(self, revision: str, *, key: Path | None = None, signed: bool = True) -> Path:
        out = self.tmp / f"{revision}.tar.gz"
        args = ["bundle", "build", "-o", str(out), "--revision", revision]
        if signed:
            args += ["--signing-key", str(key or self.key), "--key-id", "pdp-bundle-signing"]
        run(*args)
        return out

    def publish(self, bundle: Path) -> str:
        out = run("bundle", "publish", str(bundle), self.tag, "--plain-http").output
        return re.search(r"layer (sha256:[0-9a-f]{64})", out).group(1)  # type: ignore[union-attr]

    def serve(self, state: str = "state", *extra: str, ready: bool = True) -> ServeProcess:
        env = {
            "BUNDLE_REGISTRY_URL": f"http://{self.registry.host}",
            "BUNDLE_RESOURCE": f"{self.registry.host}/{REPO}:prod",
        }
        proc = ServeProcess(
            self.tmp / state,
            "--opa-config", str(ROOT / "opa-config.yaml"),
            "--bundle-verification-key", str(self.pub),
            "--opa-timeout-ms", "5000",  # a loaded test machine must not turn into 503s
            *FAST, *extra,
            env=env,
        )  # fmt: skip
        self.started.append(proc)
        return proc.start(ready=ready)


@pytest.fixture
def supply(tmp_path: Path) -> Iterator[Supply]:
    registry = RegistryProcess(registry_binary(), tmp_path / "registry").start()
    s = Supply(tmp_path, registry)
    yield s
    for proc in s.started:
        proc.kill()
    registry.stop()


def decide(serve: ServeProcess) -> dict[str, Any]:
    example = load_example(ALLOW)
    request = copy.deepcopy(example["request"])
    request["agent"]["token"] = mint_svid(serve.state_dir, example["spiffe_id"])
    req = urllib.request.Request(
        serve.url + "/v1/decisions",
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def revision(serve: ServeProcess) -> str | None:
    rev: str | None = decide(serve)["policy"]["revision"]
    return rev


def metrics(serve: ServeProcess) -> str:
    with urllib.request.urlopen(serve.url + "/metrics", timeout=5) as resp:
        text: str = resp.read().decode()
        return text


def failures(serve: ServeProcess, kind: str) -> float:
    m = re.search(
        rf'pdp_policy_bundle_failures_total{{bundle="pdp",kind="{kind}"}} (\S+)', metrics(serve)
    )
    return float(m.group(1)) if m else 0.0


def test_publish_activate_refuse_and_restart_on_the_persisted_bundle(supply: Supply) -> None:
    supply.publish(supply.build("v1"))
    serve = supply.serve()
    assert revision(serve) == "v1"
    assert 'pdp_policy_bundle_info{bundle="pdp",revision="v1"} 1.0' in metrics(serve)
    assert "pdp_policy_bundle_last_activation_timestamp_seconds" in metrics(serve)
    pid = serve.pid

    # v2 becomes active within the polling interval, without a restart
    supply.publish(supply.build("v2"))
    assert wait_until(lambda: revision(serve) == "v2", timeout=20), serve.output()
    assert serve.pid == pid and serve.proc is not None and serve.proc.poll() is None

    # an unsigned v3 is refused: v2 stays, and the refusal shows
    supply.publish(supply.build("v3", signed=False))
    assert wait_until(lambda: failures(serve, "activation") > 0, timeout=20), serve.output()
    assert revision(serve) == "v2"
    status, body = http_get(serve.url + "/readyz")
    assert status == 200, body
    assert "last update refused" in body["detail"] and ".signatures.json" in body["detail"]
    assert body["bundles"]["pdp"]["revision"] == "v2"
    assert wait_until(lambda: "bundle pdp refused (activation)" in serve.output(), timeout=5)
    assert 'pdp_policy_bundle_info{bundle="pdp",revision="v2"} 1.0' in metrics(serve)

    # a signed v3 changed after signing is refused too
    before = failures(serve, "activation")
    supply.publish(tamper(supply.build("v3"), supply.tmp / "v3-tampered.tar.gz"))
    assert wait_until(lambda: failures(serve, "activation") > before, timeout=20)
    assert revision(serve) == "v2"

    # restart with the registry down: the persisted last-known-good v2 is served
    assert serve.terminate() == 0
    supply.registry.stop()
    again = supply.serve()
    assert revision(again) == "v2"
    assert wait_until(lambda: failures(again, "download") > 0, timeout=20)
    status, body = http_get(again.url + "/readyz")
    assert status == 200 and "last update refused" in body["detail"]
    assert again.terminate() == 0

    # ...but not when it is older than --max-bundle-age
    old = supply.serve("state", "--max-bundle-age", "1s", ready=False)
    assert wait_until(lambda: http_get(old.url + "/readyz")[0] == 503, timeout=20)
    status, body = http_get(old.url + "/readyz")
    assert "more than --max-bundle-age 1 s" in body["detail"], body
    assert body["bundles"]["pdp"]["revision"] == "v2"
    assert decide(old)["policy"]["revision"] == "v2"  # still answers: readiness is the signal


def test_a_bundle_signed_by_an_unknown_key_is_never_activated(supply: Supply) -> None:
    stranger, _ = key_pair(supply.tmp / "keys", "stranger")
    supply.publish(supply.build("evil", key=stranger))

    serve = supply.serve(ready=False)

    assert wait_until(lambda: failures(serve, "activation") > 0, timeout=20), serve.output()
    status, body = http_get(serve.url + "/readyz")
    assert status == 503 and body["ready"] is False
    answer = decide(serve)
    assert answer["allow"] is False and answer["policy"]["revision"] is None


def test_a_registry_serving_other_bytes_than_the_tag_promised_is_refused(supply: Supply) -> None:
    supply.publish(supply.build("v1"))
    serve = supply.serve()
    assert revision(serve) == "v1"
    v2 = supply.build("v2")
    layer = supply.publish(v2)
    # The registry's storage now serves other bytes (same size, one byte changed) under
    # v2's digest: the manifest the tag names promises one digest, the blob has another.
    blob = supply.registry.blob_path(layer)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    assert wait_until(lambda: failures(serve, "activation") + failures(serve, "download") > 0,
                      timeout=20), serve.output()  # fmt: skip
    assert revision(serve) == "v1"
    detail = http_get(serve.url + "/readyz")[1]["detail"]
    assert "digest" in detail, detail


def test_opa_config_and_a_remote_opa_cannot_be_combined(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["serve", "--opa-config", str(ROOT / "opa-config.yaml"), "--opa-url", "http://x:1",
         "--state-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 9
    assert "cannot be combined with PDP_OPA_URL" in result.output
