"""`pdpctl decide` against a real `pdpctl serve` that authenticates its callers
(--caller-keys, and mTLS with --client-ca over TLS), and `--json` keeping stdout JSON only
(for `| jq`) in every command that has it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pdpctl import errors
from pdpctl.main import cli

from pdp.callers import hash_key, new_key

from .conftest import EXAMPLES, POLICIES, ServeProcess, wait_until
from .tls_helpers import CA, write_pair

pytestmark = pytest.mark.opa

ALLOW = next(p for p in EXAMPLES if p.name == "allow-support-bot-jira-search.json")
CALLER_ID = "cli-1"


def run(*args: str) -> Result:
    result = CliRunner().invoke(cli, ["--policies", str(POLICIES), *args], env={"PDP_URL": None})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("decide-pki")
    ca = CA.new("callers CA")
    (d / "ca.pem").write_bytes(ca.pem)
    key = new_key()
    (d / "caller.key").write_text(key + "\n")
    (d / "wrong.key").write_text(new_key() + "\n")
    (d / "empty.key").write_text("\n")
    (d / "caller-keys").write_text(f"{CALLER_ID} {hash_key(key)}\n")
    return {
        "ca_file": d / "ca.pem",
        "server": write_pair(d, "server", ca.issue("localhost", server=True)),
        "client": write_pair(d, "client", ca.issue("cli", uris=("spiffe://callers.example/cli",))),
        "caller_keys": d / "caller-keys",
        "key_file": d / "caller.key",
        "wrong_key_file": d / "wrong.key",
        "empty_key_file": d / "empty.key",
        "key": key,
    }


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Any]) -> Iterator[ServeProcess]:
    """`serve --caller-keys` on loopback (plain http is allowed there)."""
    state = tmp_path_factory.mktemp("keyed") / "state"
    serve = ServeProcess(state, "--caller-keys", str(pki["caller_keys"])).start()
    yield serve
    assert serve.terminate() == 0, serve.output()


def decide(serve: ServeProcess, *extra: str, url: str | None = None) -> Result:
    return run(
        "decide", str(ALLOW), "--url", url or serve.url, "--state-dir", str(serve.state_dir),
        *extra,
    )  # fmt: skip


def test_without_a_caller_key_the_pdp_refuses(keyed: ServeProcess) -> None:
    result = decide(keyed)
    assert result.exit_code == errors.SERVICE_ERROR, result.output
    assert "401" in result.output


def test_with_the_caller_key_file_the_decision_is_made(
    keyed: ServeProcess, pki: dict[str, Any]
) -> None:
    result = decide(keyed, "--caller-key-file", str(pki["key_file"]))
    assert result.exit_code == errors.OK, result.output
    assert result.stdout.startswith("ALLOW  decision ")
    assert result.stdout.splitlines()[-1] == "matches expect"
    assert pki["key"] not in result.output


def test_a_wrong_caller_key_is_refused(keyed: ServeProcess, pki: dict[str, Any]) -> None:
    result = decide(keyed, "--caller-key-file", str(pki["wrong_key_file"]))
    assert result.exit_code == errors.SERVICE_ERROR, result.output


def test_an_empty_caller_key_file_exits_9(keyed: ServeProcess, pki: dict[str, Any]) -> None:
    result = decide(keyed, "--caller-key-file", str(pki["empty_key_file"]))
    assert result.exit_code == errors.BAD_INPUT
    assert "--caller-key-file: expected one caller key" in result.output


def test_a_caller_key_is_not_sent_in_clear_beyond_loopback(pki: dict[str, Any]) -> None:
    result = run(
        "decide", str(ALLOW), "--url", "http://pdp.example:8700", "--token", "x",
        "--caller-key-file", str(pki["key_file"]),
    )  # fmt: skip
    assert result.exit_code == errors.BAD_INPUT
    assert "would travel in clear" in result.output
    assert pki["key"] not in result.output


def test_tls_files_need_an_https_url(pki: dict[str, Any]) -> None:
    result = run(
        "decide", str(ALLOW), "--url", "http://127.0.0.1:1", "--token", "x",
        "--ca", str(pki["ca_file"]),
    )  # fmt: skip
    assert result.exit_code == errors.BAD_INPUT
    assert "--ca and --client-cert need an https:// --url URL" in result.output


def test_json_keeps_stdout_json_only(keyed: ServeProcess, pki: dict[str, Any]) -> None:
    result = decide(keyed, "--caller-key-file", str(pki["key_file"]), "--json")
    assert result.exit_code == errors.OK, result.output
    answer = json.loads(result.stdout)  # nothing but the JSON (`| jq` works)
    assert answer["allow"] is True
    assert "matches expect" in result.stderr


def test_mtls_client_certificate(tmp_path: Path, pki: dict[str, Any]) -> None:
    """`serve --tls-cert/--tls-key --client-ca` on loopback: decide with --ca and
    --client-cert/--client-key gets a decision; without the certificate it does not."""
    cert, key = pki["server"]
    serve = ServeProcess(
        tmp_path / "state", "--tls-cert", str(cert), "--tls-key", str(key),
        "--client-ca", str(pki["ca_file"]),
    )  # fmt: skip
    url = f"https://localhost:{serve.port}"
    client_cert, client_key = pki["client"]
    with_cert = ("--ca", str(pki["ca_file"]), "--client-cert", str(client_cert),
                 "--client-key", str(client_key))  # fmt: skip
    try:
        _start_tls(serve)
        assert wait_until(lambda: decide(serve, *with_cert, url=url).exit_code == 0, 60)
        result = decide(serve, *with_cert, "--json", url=url)
        assert result.exit_code == errors.OK, result.output
        assert json.loads(result.stdout)["allow"] is True
        refused = decide(serve, "--ca", str(pki["ca_file"]), url=url)
        assert refused.exit_code == errors.SERVICE_ERROR, refused.output
    finally:
        serve.terminate()


def _start_tls(serve: ServeProcess) -> None:
    """Start without ServeProcess's plain-http readiness probe."""
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("PDP_")} | serve.env
    cmd = [
        sys.executable, "-m", "pdpctl", "--policies", str(POLICIES), "serve",
        "--port", str(serve.port), "--state-dir", str(serve.state_dir), *serve.args,
    ]  # fmt: skip
    with serve.log.open("wb") as log:
        serve.proc = subprocess.Popen(  # noqa: S603
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
