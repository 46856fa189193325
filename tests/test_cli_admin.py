"""`pdpctl keys|credentials|agents` through CliRunner against a real `pdpctl serve`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pdpctl import errors
from pdpctl.main import cli

from pdp.devtrust import mint_svid

from .conftest import ROOT, ServeProcess, load_example

EXAMPLE = load_example(ROOT / "examples" / "requests" / "allow-support-bot-jira-search.json")
BOT = EXAMPLE["spiffe_id"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One service for the module (the CLI tests only add state to it)."""
    serve = ServeProcess(tmp_path_factory.mktemp("cli-admin") / "state").start()
    yield serve
    serve.kill()


@pytest.fixture
def pdpctl(served: ServeProcess) -> Callable[..., Result]:
    """Run pdpctl with the service's URL and state dir (where its admin token is)."""

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        base = {"PDP_URL": served.url, "PDP_STATE_DIR": str(served.state_dir)}
        result = CliRunner().invoke(cli, list(args), env={**base, **(env or {})}, input=input)
        return result

    return run


def allow_credential(served: ServeProcess, pdpctl: Callable[..., Result]) -> dict[str, Any]:
    request = dict(EXAMPLE["request"])
    request["agent"] = {**request["agent"], "token": mint_svid(served.state_dir, BOT)}
    path = served.state_dir.parent / "request.json"
    path.write_text(json.dumps(request))
    result = pdpctl("decide", str(path), "--json")
    assert result.exit_code == 0, result.output
    credential: dict[str, Any] = json.loads(result.output)["credential"]
    return credential


def test_credentials_introspect_then_revoke(
    served: ServeProcess, pdpctl: Callable[..., Result]
) -> None:
    credential = allow_credential(served, pdpctl)
    token = credential["token"]

    active = pdpctl("credentials", "introspect", token)
    revoked = pdpctl("credentials", "revoke", token)
    inactive = pdpctl("credentials", "introspect", token)

    assert (active.exit_code, active.output.split()[:3]) == (
        0,
        ["active", "jti", credential["jti"]],
    )
    assert f"scope {credential['scope']}" in active.output
    assert (revoked.exit_code, revoked.output) == (0, "revoked\n")
    assert (inactive.exit_code, inactive.output) == (
        errors.FAILED,
        "inactive\nerror: the credential is not active\n",
    )


def test_credentials_read_the_token_from_stdin_or_a_file_never_needing_argv(
    served: ServeProcess, pdpctl: Callable[..., Result], tmp_path: Path
) -> None:
    token = allow_credential(served, pdpctl)["token"]
    token_file = tmp_path / "credential"
    token_file.write_text(token + "\n")

    from_stdin = pdpctl("credentials", "introspect", input=token + "\n")
    from_dash = pdpctl("credentials", "introspect", "-", input=token)
    revoked = pdpctl("credentials", "revoke", "--token-file", str(token_file))
    after = pdpctl("credentials", "introspect", "--token-file", str(token_file))
    nothing = pdpctl("credentials", "revoke", input="")

    assert (from_stdin.exit_code, from_stdin.output.split()[0]) == (0, "active")
    assert (from_dash.exit_code, from_dash.output.split()[0]) == (0, "active")
    assert (revoked.exit_code, revoked.output) == (0, "revoked\n")
    assert (after.exit_code, after.output.split()[0]) == (errors.FAILED, "inactive")
    assert (nothing.exit_code, nothing.output) == (
        errors.BAD_INPUT,
        "error: no credential given (TOKEN, --token-file or stdin)\n",
    )


def test_keys_list_and_rotate(pdpctl: Callable[..., Result]) -> None:
    before = json.loads(pdpctl("keys", "list", "--json").output)

    rotated = pdpctl("keys", "rotate")
    listing = pdpctl("keys", "list")

    assert rotated.exit_code == 0
    old, new = rotated.output.removeprefix("rotated: ").split()[0::2]
    assert old == before["current"] != new
    lines = listing.output.splitlines()
    assert any(line.startswith(f"* {new}  ES256  current") for line in lines)
    assert any(
        line.startswith(f"  {old}  ES256  retired  ") and "drop after" in line for line in lines
    )


def test_agents_disable_list_enable(served: ServeProcess, pdpctl: Callable[..., Result]) -> None:
    allow_credential(served, pdpctl)

    disabled = pdpctl("agents", "disable", BOT, "--reason", "cli test")
    listed = pdpctl("agents", "list")
    as_json = json.loads(pdpctl("agents", "list", "--json").output)
    enabled = pdpctl("agents", "enable", BOT)

    assert (disabled.exit_code, disabled.output) == (0, f"disabled {BOT}\n")
    assert f"{BOT}  disabled (cli test)  last seen " in listed.output
    [bot] = [a for a in as_json["agents"] if a["spiffe_id"] == BOT]
    assert (bot["status"], bot["credentials_outstanding"]) == ("disabled", 0)
    assert (enabled.exit_code, enabled.output) == (0, f"enabled {BOT}\n")


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["agents", "list", "--admin-token", "wrong-credential-0123456"], {}, 8, "HTTP 403"),
        (["agents", "list"], {"PDP_STATE_DIR": "/nonexistent"}, 9, "no admin credential"),
        (["agents", "disable", BOT], {}, 2, "Missing option '--reason'"),
        (["agents", "disable", "spiffe://x", "--reason", "r"], {}, 8, "/spiffe_id"),
        (["keys", "list", "--url", "http://127.0.0.1:9"], {}, 8, "cannot reach the service"),
    ],
    ids=["wrong-token", "no-token-file", "no-reason", "bad-id", "unreachable"],
)
def test_admin_commands_fail_with_one_line_and_an_exit_code(
    pdpctl: Callable[..., Result],
    args: list[str],
    env: dict[str, str],
    code: int,
    message: str,
) -> None:
    result = pdpctl(*args, env=env)

    assert result.exit_code == code
    assert message in result.output


def test_the_admin_token_file_option_is_used(
    served: ServeProcess, pdpctl: Callable[..., Result], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text((served.state_dir / "admin-token").read_text())

    result = pdpctl("keys", "list", "--admin-token-file", str(token_file),
                    env={"PDP_STATE_DIR": "/nonexistent"})  # fmt: skip

    assert result.exit_code == 0


VAULT = load_example(
    ROOT / "examples" / "requests" / "deny-finance-analyst-vault-secret-approval-required.json"
)


def vault_decision(
    served: ServeProcess, pdpctl: Callable[..., Result], **extra: Any
) -> dict[str, Any]:
    request = {**VAULT["request"], **extra}
    request["agent"] = {
        **request["agent"],
        "token": mint_svid(served.state_dir, VAULT["spiffe_id"]),
    }
    path = served.state_dir.parent / "vault-request.json"
    path.write_text(json.dumps(request))
    result = pdpctl("decide", str(path), "--json")
    answer: dict[str, Any] = json.loads(result.output)
    return answer


def test_approvals_list_grant_and_the_granted_call(
    served: ServeProcess, pdpctl: Callable[..., Result]
) -> None:
    pending = vault_decision(served, pdpctl)
    approval_id = pending["approval"]["id"]

    listed = pdpctl("approvals", "list")
    granted = pdpctl("approvals", "grant", approval_id, "--approver", "carol", "--note", "payroll")
    allowed = vault_decision(served, pdpctl, approval_id=approval_id)
    after = pdpctl("approvals", "list", "--status", "used", "--json")

    assert listed.exit_code == 0, listed.output
    line = next(x for x in listed.output.splitlines() if x.startswith(approval_id))
    assert line.split()[1:3] == ["pending", VAULT["spiffe_id"]]
    assert "secret.read payroll.db_readonly_credential read -> vault" in line
    # Every bound fact is shown under the approval's line: what the approver approves.
    block = listed.output.split(line, 1)[1]
    for shown in (
        "destination: service vault https://vault.acme.internal:443/v1/secret/data/payroll/"
        "db-readonly env=prod",
        "on behalf of: user:bob@acme.example (tenant acme)",
        "task: FIN-PAY-0412 purpose=payroll reconciliation session=sess-91c2",
        "data: restricted [credentials]",
        "arguments sha256: ",
    ):
        assert shown in block, listed.output
    assert granted.exit_code == 0, granted.output
    assert "granted" in granted.output and "by admin (carol)  note: payroll" in granted.output
    assert allowed["allow"] is True and "credential" in allowed
    assert approval_id in [a["id"] for a in json.loads(after.output)["approvals"]]


def test_approvals_deny_and_deciding_twice_fails(
    served: ServeProcess, pdpctl: Callable[..., Result]
) -> None:
    approval_id = vault_decision(served, pdpctl, task={"purpose": "payroll reconciliation"})[
        "approval"
    ]["id"]

    denied = pdpctl("approvals", "deny", approval_id, "--note", "not now")
    again = pdpctl("approvals", "grant", approval_id)

    assert denied.exit_code == 0 and " denied " in denied.output
    assert again.exit_code == errors.SERVICE_ERROR
    assert "HTTP 409: the approval is denied, not pending" in again.output


def test_approvals_with_a_wrong_approver_token_fail(pdpctl: Callable[..., Result]) -> None:
    result = pdpctl("approvals", "list", "--approver-token", "wrong-approver-token-0123")

    assert result.exit_code == errors.SERVICE_ERROR
    assert "HTTP 403" in result.output


def test_json_output_is_json_only_on_stdout(
    served: ServeProcess, pdpctl: Callable[..., Result], tmp_path: Path
) -> None:
    """Every admin command's --json prints nothing but the JSON on stdout (`| jq` works);
    a human line (e.g. where a checkpoint was saved) goes to stderr."""
    saved = tmp_path / "checkpoint.json"
    for args in (
        ("keys", "list", "--json"),
        ("agents", "list", "--json"),
        ("approvals", "list", "--json"),
        ("audit", "checkpoint", "--json"),
        ("audit", "checkpoint", "--json", "-o", str(saved)),
    ):
        result = pdpctl(*args)
        assert result.exit_code == 0, (args, result.output)
        json.loads(result.stdout)  # raises when anything else is on stdout
    assert json.loads(saved.read_text())["checkpoint"]
    assert f"-> {saved}" in result.stderr
