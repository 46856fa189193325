"""pdpctl through click's CliRunner: exact exit codes and output lines, real opa and regal."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from pdpctl import errors
from pdpctl.main import cli

from pdp.bundle import content_revision, review_digest
from pdp.devtrust import ensure_dev_trust
from pdp.identity import SVIDVerifier, TrustBundles

from .conftest import DEV_DOMAINS, EXAMPLES, POLICIES, ROOT, ServeProcess, free_port, load_example

pytestmark = pytest.mark.opa

ALLOW_EXAMPLE = ROOT / "examples" / "requests" / "allow-support-bot-jira-search.json"
DENY_EXAMPLE = ROOT / "examples" / "requests" / "deny-tenant-mismatch.json"
INSTALL_HINT = "make tools"


@pytest.fixture(autouse=True)
def _no_pdp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the PDP_* variables they set."""
    for name in list(os.environ):
        if name.startswith("PDP_"):
            monkeypatch.delenv(name)


def run(*args: str, policies: Path = POLICIES, env: dict[str, str] | None = None) -> Result:
    """`pdpctl --policies POLICIES ARGS...`; an expected failure never shows a traceback."""
    result = CliRunner().invoke(cli, ["--policies", str(policies), *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output
    return result


def lines(text: str) -> list[str]:
    return text.splitlines()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    """A copy of the repository's policies to break."""
    dest = tmp_path / "policies"
    shutil.copytree(POLICIES, dest)
    return dest


def tiny_policies(root: Path, rego: str, test: str | None = None) -> Path:
    """A policy dir of one module pdp/x.rego (and its test), formatted and compiling."""
    write(root / "pdp" / "x.rego", rego)
    if test is not None:
        write(root / "pdp" / "x_test.rego", test)
    return root


X_REGO = "package pdp.x\n\nallow if input.a == 1\n\ndeny if input.b == 2\n"
X_TEST_COVERS_ALLOW = (
    'package pdp.x_test\n\nimport data.pdp.x\n\ntest_allow if x.allow with input as {"a": 1}\n'
)
X_TEST_FAILS = (
    'package pdp.x_test\n\nimport data.pdp.x\n\ntest_allow if x.allow with input as {"a": 2}\n'
)


# --------------------------------------------------------------------------- policy fmt


def test_fmt_check_passes_on_repo_policies() -> None:
    result = run("policy", "fmt", "--check")
    assert (result.exit_code, result.output) == (errors.OK, "all Rego files are formatted\n")


def test_fmt_check_lists_unformatted_file_and_exits_7(policy_copy: Path) -> None:
    bad = write(policy_copy / "pdp" / "rules" / "ugly.rego", "package pdp.rules.ugly\n\nx:=1\n")
    result = run("policy", "fmt", "--check", policies=policy_copy)
    assert result.exit_code == errors.NOT_FORMATTED
    assert lines(result.stdout) == [str(bad)]
    assert lines(result.stderr)[-1] == "error: 1 file(s) need `pdpctl policy fmt`"


def test_fmt_rewrites_the_file_then_check_passes(policy_copy: Path) -> None:
    bad = write(policy_copy / "pdp" / "rules" / "ugly.rego", "package pdp.rules.ugly\n\nx:=1\n")
    result = run("policy", "fmt", policies=policy_copy)
    assert result.exit_code == errors.OK
    assert lines(result.output) == [f"formatted {bad}", "1 file(s) reformatted"]
    assert bad.read_text() == "package pdp.rules.ugly\n\nx := 1\n"

    again = run("policy", "fmt", "--check", policies=policy_copy)
    assert (again.exit_code, again.output) == (errors.OK, "all Rego files are formatted\n")


@pytest.mark.parametrize("check", [(), ("--check",)], ids=["fmt", "fmt --check"])
def test_fmt_of_a_file_that_does_not_parse_exits_4(
    policy_copy: Path, check: tuple[str, ...]
) -> None:
    write(policy_copy / "pdp" / "broken.rego", "package pdp.broken\n\nallow if {\n")
    result = run("policy", "fmt", *check, policies=policy_copy)
    assert result.exit_code == errors.DOES_NOT_COMPILE
    assert "rego_parse_error" in result.stderr
    assert lines(result.stderr)[-1] == "error: opa fmt failed (does the policy parse?)"


# --------------------------------------------------------------------------- policy check


def test_check_passes_on_repo_policies() -> None:
    result = run("policy", "check")
    assert (result.exit_code, result.output) == (
        errors.OK,
        "policies compile (opa check --strict)\n"
        "data documents: valid (every one against its JSON Schema)\n"
        "decision-cache TTLs: safe (no TTL depends on time or other per-request input)\n"
        f"fast path: reviewed against these modules ({review_digest(POLICIES)})\n",
    )


def test_check_warns_when_the_fast_path_review_is_stale_and_review_fast_records_it(
    tmp_path: Path,
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    rules = policies / "pdp" / "rules" / "egress.rego"
    rules.write_text(rules.read_text() + "\n# a change after the review\n")

    stale = run("policy", "check", policies=policies)
    recorded = run("policy", "review-fast", policies=policies)
    fresh = run("policy", "check", policies=policies)

    assert stale.exit_code == errors.OK  # a stale review is safe: only slower
    assert "warning: fast path OFF" in stale.output
    assert recorded.exit_code == errors.OK
    assert (policies / "pdp" / "fast" / "REVIEWED").read_text() == review_digest(policies) + "\n"
    assert "fast path: reviewed" in fresh.output and "OFF" not in fresh.output


@pytest.mark.parametrize(
    ("body", "opa_message"),
    [
        ("allow if {\n\tsome y\n\tinput.a == 1\n}\n", "rego_compile_error: declared var y unused"),
        ("allow if nope\n", "rego_unsafe_var_error: var nope is unsafe"),
        ("allow if {\n", "rego_parse_error"),
    ],
    ids=["unused-var-strict", "unsafe-var", "parse-error"],
)
def test_check_reports_opas_compile_error_and_exits_4(
    tmp_path: Path, body: str, opa_message: str
) -> None:
    policies = tiny_policies(tmp_path / "p", f"package pdp.x\n\n{body}")
    result = run("policy", "check", policies=policies)
    assert result.exit_code == errors.DOES_NOT_COMPILE
    assert opa_message in result.stderr
    assert str(policies / "pdp" / "x.rego") in result.stderr
    assert lines(result.stderr)[-1] == "error: policies do not compile"
    assert result.stdout == ""


def test_a_policy_dir_without_sources_is_bad_input(tmp_path: Path) -> None:
    result = run("policy", "check", policies=tmp_path)
    assert result.exit_code == errors.BAD_INPUT
    assert result.output == f"error: {tmp_path}: no pdp/ or data/ folder with policies\n"


# --------------------------------------------------------------------------- policy lint


def test_lint_passes_on_repo_policies() -> None:
    result = run("policy", "lint")
    assert (result.exit_code, result.output) == (errors.OK, "regal lint: no violations\n")


def test_lint_violation_exits_6_and_names_the_rule(tmp_path: Path) -> None:
    policies = tiny_policies(tmp_path / "p", "package pdp.x\n\ncamelCase := 1\n")
    result = run("policy", "lint", policies=policies)
    assert result.exit_code == errors.LINT_FAILED
    assert "prefer-snake-case" in result.stdout
    assert str(policies / "pdp" / "x.rego") in result.stdout
    assert lines(result.stderr)[-1] == "error: regal lint found violations"


# --------------------------------------------------------------------------- policy test


def test_policy_tests_pass_on_repo() -> None:
    result = run("policy", "test")
    assert result.exit_code == errors.OK
    assert re.fullmatch(r"PASS: (\d+)/\1", lines(result.output)[-1])


def test_policy_tests_meet_coverage_gate_of_90() -> None:
    result = run("policy", "test", "--coverage-min", "90")
    assert result.exit_code == errors.OK
    out = lines(result.output)
    assert re.fullmatch(r"PASS: (\d+)/\1", out[-2])
    match = re.fullmatch(r"coverage: (\d+\.\d)% \(minimum 90%\)", out[-1])
    assert match is not None and float(match.group(1)) >= 90


def test_failing_policy_test_exits_5(tmp_path: Path) -> None:
    policies = tiny_policies(tmp_path / "p", X_REGO, X_TEST_FAILS)
    result = run("policy", "test", policies=policies)
    assert result.exit_code == errors.TESTS_FAILED
    assert "data.pdp.x_test.test_allow: FAIL" in result.stdout
    assert "FAIL: 1/1" in result.stdout
    assert lines(result.stderr)[-1] == "error: policy tests failed"


def test_no_policy_tests_at_all_exits_5(tmp_path: Path) -> None:
    policies = tiny_policies(tmp_path / "p", X_REGO)
    result = run("policy", "test", policies=policies)
    assert result.exit_code == errors.TESTS_FAILED
    assert lines(result.stderr)[-1] == "error: policy tests failed"


def test_coverage_under_the_gate_exits_5_and_lists_uncovered_rows(tmp_path: Path) -> None:
    policies = tiny_policies(tmp_path / "p", X_REGO, X_TEST_COVERS_ALLOW)
    result = run("policy", "test", "--coverage-min", "100", policies=policies)
    assert result.exit_code == errors.TESTS_FAILED
    out = lines(result.stdout)
    assert out[0] == "PASS: 1/1"
    coverage = re.fullmatch(r"coverage: (\d+\.\d)% \(minimum 100%\)", out[1])
    assert coverage is not None
    # `deny if input.b == 2` on row 5 is the only line no test reaches
    uncovered = [line for line in out[2:] if "not covered" in line]
    assert len(uncovered) == 1
    assert uncovered[0].startswith(f"  {policies / 'pdp' / 'x.rego'}: not covered 5")
    assert lines(result.stderr)[-1] == f"error: coverage {coverage.group(1)}% is below 100%"


# --------------------------------------------------------------------------- bundle build


def bundle_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        out = {}
        for member in tar.getmembers():
            f = tar.extractfile(member)
            if f is not None:
                out[member.name] = f.read()
        return out


def test_bundle_build_prints_path_and_content_revision(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    result = run("bundle", "build", "--output", str(out))
    assert result.exit_code == errors.OK
    assert re.fullmatch(r"sha256-[0-9a-f]{16}", content_revision(POLICIES))
    assert result.output == f"built {out} revision {content_revision(POLICIES)}\n"
    assert out.is_file()


def test_bundle_revision_is_the_same_for_the_same_sources(tmp_path: Path) -> None:
    first = run("bundle", "build", "--output", str(tmp_path / "1.tar.gz"))
    second = run("bundle", "build", "--output", str(tmp_path / "2.tar.gz"))
    assert first.output.split()[-1] == second.output.split()[-1]

    copy = tmp_path / "copy"
    shutil.copytree(POLICIES, copy)
    elsewhere = run("bundle", "build", "--output", str(tmp_path / "3.tar.gz"), policies=copy)
    assert elsewhere.output.split()[-1] == first.output.split()[-1]

    # a test file is not a source: editing it leaves the revision alone...
    test_file = next((copy / "pdp").rglob("*_test.rego"))
    test_file.write_text(test_file.read_text() + "\n# note\n")
    assert content_revision(copy) == content_revision(POLICIES)
    # ...while editing a policy changes it
    decision = copy / "pdp" / "decision.rego"
    decision.write_text(decision.read_text() + "\n# note\n")
    assert content_revision(copy) != content_revision(POLICIES)


def test_bundle_revision_flag_is_honoured_and_tests_are_left_out(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    result = run("bundle", "build", "--output", str(out), "--revision", "v1")
    assert (result.exit_code, result.output) == (errors.OK, f"built {out} revision v1\n")
    members = bundle_members(out)
    assert json.loads(members["/.manifest"])["revision"] == "v1"
    rego = sorted(name for name in members if name.endswith(".rego"))
    assert rego, "no Rego in the bundle"
    assert not [name for name in rego if name.endswith("_test.rego")]
    assert any(name.endswith("/pdp/decision.rego") for name in rego)
    sources = {p.name for p in (POLICIES / "pdp").rglob("*.rego")}
    assert {Path(n).name for n in rego} == {s for s in sources if not s.endswith("_test.rego")}
    assert "inventory" in json.loads(members["/data.json"])


def test_bundle_build_subcommand_policies_option_wins(tmp_path: Path) -> None:
    policies = tiny_policies(tmp_path / "p", X_REGO)
    out = tmp_path / "b.tar.gz"
    result = run("bundle", "build", "--policies", str(policies), "--output", str(out))
    assert result.output == f"built {out} revision {content_revision(policies)}\n"


def test_bundle_build_of_broken_policies_exits_4_with_opas_error(
    tmp_path: Path, policy_copy: Path
) -> None:
    write(policy_copy / "pdp" / "broken.rego", "package pdp.broken\n\nallow if {\n")
    out = tmp_path / "b.tar.gz"
    result = run("bundle", "build", "--output", str(out), policies=policy_copy)
    assert result.exit_code == errors.DOES_NOT_COMPILE
    assert "rego_parse_error" in result.stderr
    assert lines(result.stderr)[-1] == "error: bundle build failed: policies do not compile"
    assert not out.exists()


# --------------------------------------------------------------------------- missing tools


@pytest.mark.parametrize(
    "args",
    [
        ("policy", "check"),
        ("policy", "fmt", "--check"),
        ("policy", "fmt"),
        ("policy", "test"),
        ("bundle", "build", "--output", "{tmp}/b.tar.gz"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_missing_opa_is_one_line_exit_3(tmp_path: Path, args: tuple[str, ...]) -> None:
    argv = [a.format(tmp=tmp_path) for a in args]
    result = CliRunner().invoke(
        cli, ["--opa", "/nonexistent/opa", "--policies", str(POLICIES), *argv]
    )
    assert result.exit_code == errors.TOOL_MISSING
    assert len(lines(result.output)) == 1
    assert result.output.startswith("error: opa not found at '/nonexistent/opa': ")
    assert INSTALL_HINT in result.output
    assert result.stdout == ""


def test_missing_opa_from_env_is_one_line_exit_3() -> None:
    result = run("policy", "check", env={"PDP_OPA_BINARY": "/nonexistent/opa"})
    assert result.exit_code == errors.TOOL_MISSING
    assert len(lines(result.output)) == 1
    assert result.output.startswith("error: opa not found at '/nonexistent/opa': ")


def test_missing_regal_is_one_line_exit_3() -> None:
    result = run("policy", "lint", env={"PDP_REGAL_BINARY": "/nonexistent/regal"})
    assert result.exit_code == errors.TOOL_MISSING
    assert len(lines(result.output)) == 1
    assert result.output.startswith("error: regal not found at '/nonexistent/regal': ")
    assert INSTALL_HINT in result.output


# --------------------------------------------------------------------------- dev token


@pytest.fixture
def dev_keys(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    state = tmp_path / "state"
    return state, ensure_dev_trust(state, DEV_DOMAINS)


def test_dev_token_is_a_jwt_svid_the_verifier_accepts(
    dev_keys: tuple[Path, dict[str, Path]],
) -> None:
    state, bundles = dev_keys
    spiffe_id = "spiffe://acme.example/agents/support-bot"
    result = run("dev", "token", "--spiffe-id", spiffe_id, "--state-dir", str(state))
    assert result.exit_code == errors.OK
    assert result.stderr == ""
    (token,) = lines(result.stdout)
    identity = SVIDVerifier(TrustBundles.from_files(bundles), "agent-pdp").verify(token)
    assert identity.authenticated, identity.error_message
    assert (identity.spiffe_id, identity.trust_domain) == (spiffe_id, "acme.example")


def test_dev_token_audience_and_ttl_options(dev_keys: tuple[Path, dict[str, Path]]) -> None:
    state, bundles = dev_keys
    spiffe_id = "spiffe://globex.example/agents/research-bot"
    result = run(
        "dev", "token", "--spiffe-id", spiffe_id, "--state-dir", str(state),
        "--audience", "other-pdp", "--ttl", "60",
    )  # fmt: skip
    token = result.stdout.strip()
    trust = TrustBundles.from_files(bundles)
    identity = SVIDVerifier(trust, "other-pdp").verify(token)
    assert identity.authenticated and identity.spiffe_id == spiffe_id
    assert identity.expires_at is not None
    assert not SVIDVerifier(trust, "agent-pdp").verify(token).authenticated


def test_dev_token_reads_state_dir_from_env(dev_keys: tuple[Path, dict[str, Path]]) -> None:
    state, _ = dev_keys
    result = run(
        "dev", "token", "--spiffe-id", "spiffe://acme.example/agents/a",
        env={"PDP_STATE_DIR": str(state)},
    )  # fmt: skip
    assert result.exit_code == errors.OK


@pytest.mark.parametrize(
    ("spiffe_id", "message"),
    [
        ("spiffe://beta.example/agents/x", "trust domain 'beta.example' has no dev signing key"),
        ("not-a-spiffe-id", "cannot mint an SVID for 'not-a-spiffe-id'"),
        ("spiffe://acme.example", "a workload SPIFFE ID needs a path"),
        ("spiffe://ACME.example/agents/x", "cannot mint an SVID for"),
    ],
    ids=["unknown-domain", "not-spiffe", "no-path", "uppercase-domain"],
)
def test_dev_token_bad_spiffe_id_is_one_line_exit_9(
    dev_keys: tuple[Path, dict[str, Path]], spiffe_id: str, message: str
) -> None:
    state, _ = dev_keys
    result = run("dev", "token", "--spiffe-id", spiffe_id, "--state-dir", str(state))
    assert result.exit_code == errors.BAD_INPUT
    assert len(lines(result.output)) == 1
    assert result.output.startswith("error: ")
    assert message in result.output
    assert result.stdout == ""


def test_dev_token_ttl_out_of_range_is_usage_error(
    dev_keys: tuple[Path, dict[str, Path]],
) -> None:
    state, _ = dev_keys
    result = run(
        "dev", "token", "--spiffe-id", "spiffe://acme.example/agents/a",
        "--state-dir", str(state), "--ttl", "0",
    )  # fmt: skip
    assert result.exit_code == errors.USAGE


# --------------------------------------------------------------------------- decide


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """`pdpctl serve` (embedded OPA, dev trust) for this module's decide tests."""
    serve = ServeProcess(tmp_path_factory.mktemp("served") / "state").start()
    yield serve
    code = serve.terminate()
    assert code == 0, serve.output()


def decide(served: ServeProcess, path: Path, *extra: str) -> Result:
    return run(
        "decide", str(path), "--url", served.url, "--state-dir", str(served.state_dir), *extra
    )


def test_decide_allow_example_matches_expect(served: ServeProcess) -> None:
    result = decide(served, ALLOW_EXAMPLE)
    assert result.exit_code == errors.OK, result.output
    out = lines(result.stdout)
    revision = content_revision(POLICIES)
    assert re.fullmatch(rf"ALLOW  decision [0-9a-f-]{{36}}  policy {revision}", out[0])
    assert out[1].startswith("  obligations: ")
    assert out[-1] == "matches expect"


def test_decide_deny_example_prints_reasons_and_matches_expect(served: ServeProcess) -> None:
    result = decide(served, DENY_EXAMPLE)
    assert result.exit_code == errors.OK, result.output
    out = lines(result.stdout)
    assert out[0].startswith("DENY  decision ")
    assert any(line.startswith("  - tenant_mismatch: ") for line in out)
    assert any(line.startswith("  - trust_domain_mismatch: ") for line in out)
    assert out[-1] == "matches expect"


@pytest.mark.parametrize("example", [ALLOW_EXAMPLE, DENY_EXAMPLE], ids=lambda p: p.stem)
def test_decide_exits_1_when_the_answer_differs_from_expect(
    served: ServeProcess, tmp_path: Path, example: Path
) -> None:
    doc = load_example(example)
    flipped = {"allow": not doc["expect"]["allow"], "reasons": ["something_else"]}
    path = write(tmp_path / "flipped.json", json.dumps({**doc, "expect": flipped}))
    result = decide(served, path)
    assert result.exit_code == errors.FAILED
    got = {"allow": doc["expect"]["allow"], "reasons": doc["expect"]["reasons"]}
    assert lines(result.stderr) == [f"error: expected {json.dumps(flipped)}, got {json.dumps(got)}"]
    assert "matches expect" not in result.stdout


def test_decide_plain_request_without_token_is_denied(served: ServeProcess, tmp_path: Path) -> None:
    request = load_example(ALLOW_EXAMPLE)["request"]
    path = write(tmp_path / "request.json", json.dumps(request))
    result = decide(served, path)
    assert result.exit_code == errors.OK
    out = lines(result.stdout)
    assert out[0].startswith("DENY  decision ")
    assert any(line.startswith("  - authn.token_missing: ") for line in out)
    assert "matches expect" not in result.stdout


def test_decide_token_option_overrides_minting(served: ServeProcess) -> None:
    result = decide(served, ALLOW_EXAMPLE, "--token", "not.a.jwt")
    assert result.exit_code == errors.FAILED
    assert any(line.startswith("  - authn.") for line in lines(result.stdout))


def test_decide_json_prints_the_raw_response(served: ServeProcess) -> None:
    result = decide(served, ALLOW_EXAMPLE, "--json")
    assert result.exit_code == errors.OK
    body = json.loads(result.stdout.removesuffix("matches expect\n"))
    assert body["allow"] is True
    assert body["request_id"] == load_example(ALLOW_EXAMPLE)["request"]["request_id"]
    assert body["policy"] == {"revision": content_revision(POLICIES)}


def test_decide_invalid_request_prints_field_errors_and_exits_8(
    served: ServeProcess, tmp_path: Path
) -> None:
    path = write(tmp_path / "bad.json", json.dumps({"tenant": "acme", "surprise": 1}))
    result = decide(served, path)
    assert result.exit_code == errors.SERVICE_ERROR
    assert lines(result.stdout)[0].startswith("ERROR 400 invalid_request: ")
    assert lines(result.stderr) == ["error: service answered 400"]


def test_decide_unreachable_service_exits_8(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run("decide", str(ALLOW_EXAMPLE), "--url", url, "--token", "x")
    assert result.exit_code == errors.SERVICE_ERROR
    assert len(lines(result.output)) == 1
    assert result.output.startswith(f"error: {url}/v1/decisions: cannot reach the service (")


@pytest.mark.parametrize(
    ("content", "message"),
    [("this is not json", "not JSON"), ("[1, 2]", "must hold a JSON object")],
    ids=["not-json", "not-an-object"],
)
def test_decide_bad_file_exits_9(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path / "req.json", content)
    result = run("decide", str(path), "--url", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == errors.BAD_INPUT
    assert len(lines(result.output)) == 1
    assert result.output.startswith(f"error: {path}: {message}")


def test_decide_example_of_unknown_trust_domain_exits_9(tmp_path: Path) -> None:
    doc = {**load_example(ALLOW_EXAMPLE), "spiffe_id": "spiffe://beta.example/agents/x"}
    path = write(tmp_path / "ex.json", json.dumps(doc))
    state = tmp_path / "state"
    ensure_dev_trust(state, DEV_DOMAINS)
    result = run("decide", str(path), "--url", "http://127.0.0.1:1", "--state-dir", str(state))
    assert result.exit_code == errors.BAD_INPUT
    assert "trust domain 'beta.example' has no dev signing key" in result.output


def test_dev_token_outside_a_state_dir_says_where_serve_ran(tmp_path: Path) -> None:
    result = run(
        "dev", "token", "--spiffe-id", "spiffe://acme.example/agents/a",
        "--state-dir", str(tmp_path / "nothing-here"),
    )  # fmt: skip
    assert result.exit_code == errors.BAD_INPUT
    assert "where `pdpctl serve` ran" in result.output and "--state-dir" in result.output
    assert "ensure_dev_trust" not in result.output  # no internal names in a user's hint


def test_examples_cover_allow_and_deny() -> None:
    expects = [load_example(p)["expect"]["allow"] for p in EXAMPLES]
    assert True in expects and False in expects


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_decides_as_documented(served: ServeProcess, example: Path) -> None:
    result = decide(served, example)
    assert result.exit_code == errors.OK, result.output
    verdict = "ALLOW" if load_example(example)["expect"]["allow"] else "DENY"
    assert lines(result.stdout)[0].startswith(f"{verdict}  decision ")
    assert lines(result.stdout)[-1] == "matches expect"


# --------------------------------------------------------------------------- serve


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"PDP_OPA_TIMEOUT_MS": "abc"}, "PDP_OPA_TIMEOUT_MS='abc': must be an integer"),
        ((), {"PDP_PORT": "abc"}, "PDP_PORT='abc': must be an integer"),
        (("--port", "0"), {}, "PDP_PORT=0: must be 1..65535"),
        (("--port", "70000"), {}, "PDP_PORT=70000: must be 1..65535"),
        (("--opa-timeout-ms", "0"), {}, "PDP_OPA_TIMEOUT_MS=0: must be > 0"),
        (("--opa-url", "ftp://opa"), {}, "PDP_OPA_URL='ftp://opa': must be http(s)://"),
        (("--trust-bundle", "acme"), {}, "--trust-bundle='acme': expected DOMAIN=FILE"),
        ((), {"PDP_TRUST_BUNDLES": "acme"}, "PDP_TRUST_BUNDLES='acme': expected DOMAIN=FILE"),
        (
            ("--trust-bundle", "acme.example=/nonexistent.json"),
            {},
            "PDP_TRUST_BUNDLES='/nonexistent.json': file does not exist",
        ),
        ((), {"PDP_LOG_LEVEL": "loud"}, "PDP_LOG_LEVEL='loud': must be DEBUG"),
        ((), {"PDP_PROMPT_TO_POLICY": "maybe"}, "PDP_PROMPT_TO_POLICY='maybe': must be true"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
def test_serve_bad_setting_is_one_line_exit_9(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run("serve", *args, env=env)
    assert result.exit_code == errors.BAD_INPUT
    assert len(lines(result.output)) == 1
    assert result.output.startswith(f"error: {message}")


def test_serve_non_integer_port_flag_is_usage_error() -> None:
    result = run("serve", "--port", "abc")
    assert result.exit_code == errors.USAGE


def _serve_subprocess(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDP_")}
    cmd = [
        sys.executable, "-m", "pdpctl", *args, "serve",
        "--port", str(free_port()), "--state-dir", str(tmp_path / "state"),
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_serve_with_policies_that_do_not_compile_exits_4(tmp_path: Path, policy_copy: Path) -> None:
    write(policy_copy / "pdp" / "broken.rego", "package pdp.broken\n\nallow if {\n")
    proc = _serve_subprocess(tmp_path, "--policies", str(policy_copy))
    assert proc.returncode == errors.DOES_NOT_COMPILE, proc.stderr
    assert "error: could not start: policies do not compile: " in proc.stderr
    assert "rego_parse_error" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_with_missing_opa_exits_3(tmp_path: Path) -> None:
    proc = _serve_subprocess(tmp_path, "--opa", "/nonexistent/opa")
    assert proc.returncode == errors.TOOL_MISSING, proc.stderr
    assert lines(proc.stderr)[-1].startswith("error: opa not found at '/nonexistent/opa': ")
    assert INSTALL_HINT in proc.stderr
    assert "Traceback" not in proc.stderr
