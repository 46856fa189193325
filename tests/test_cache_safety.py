"""A policy that reads time must not declare a decision-cache TTL: checked on OPA's own AST
by `pdpctl policy check` and by the running PDP (pdp/cache_safety.py)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pdpctl import errors

from pdp import cache_safety
from pdp.bundle import build_bundle
from pdp.state import DECISION_CACHE

from .conftest import POLICIES, ClientFactory, load_example
from .opa_process import OPAProcess
from .test_cli import lines, run
from .test_decision_cache import ALLOW

DECLARES = 'package pdp\n\ndecision := {"cache": {"ttl_seconds": ttl}}\n\nttl := 30\n'
DECLARES_NONE = 'package pdp\n\ndecision := {"cache": {"ttl_seconds": 0}}\n'


def ast(opa_bin: str, tmp_path: Path, source: str, name: str = "m.rego") -> dict[str, Any]:
    path = tmp_path / name
    path.write_text(source)
    out = subprocess.run(
        [opa_bin, "parse", "--format", "json", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


READERS = {
    "input.now": "package p\n\nx := input.now.unix_ns\n",
    "input.request": 'package p\n\nx if input.request.id == "r"\n',
    "time.now_ns()": "package p\n\nx if time.now_ns() > 0\n",
    "rand.intn": 'package p\n\nx := rand.intn("k", 10)\n',
    "http.send": 'package p\n\nx := http.send({"method": "GET", "url": "http://x"})\n',
    "object.get of now": 'package p\n\nx := object.get(input, "now", null)\n',
    "object.get of a request path": (
        'package p\n\nx := object.get(input, ["request", "id"], null)\n'
    ),
    "the bare input": "package p\n\nx := input\n",
    "an import of input.now": "package p\n\nimport input.now as clock\n\nx := clock.unix_ns\n",
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_policy_that_reads_time_and_declares_a_ttl_fails(
    opa_bin: str, tmp_path: Path, reader: str
) -> None:
    modules = [
        ("r", ast(opa_bin, tmp_path, READERS[reader])),
        ("d", ast(opa_bin, tmp_path, DECLARES)),
    ]
    found = cache_safety.problems(modules)
    assert found and found[0].startswith("the policy reads time")


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_policy_that_reads_time_but_declares_no_ttl_passes(
    opa_bin: str, tmp_path: Path, reader: str
) -> None:
    modules = [
        ("r", ast(opa_bin, tmp_path, READERS[reader])),
        ("d", ast(opa_bin, tmp_path, DECLARES_NONE)),
    ]
    assert cache_safety.problems(modules) == []


@pytest.mark.parametrize(
    "source",
    [
        'package p\n\nx := object.get(input, "identity", null)\n',
        'package p\n\nx := object.get(input, ["identity", "error"], null)\n',
        'package p\n\nx if input.action.type == "tool.call"\n',
        "package p\n\nx := time.parse_rfc3339_ns(input.context.at)\n",  # a request field
    ],
)
def test_per_request_free_reads_may_declare_a_ttl(
    opa_bin: str, tmp_path: Path, source: str
) -> None:
    modules = [("r", ast(opa_bin, tmp_path, source)), ("d", ast(opa_bin, tmp_path, DECLARES))]
    assert cache_safety.problems(modules) == []


GUARDED = (
    'package p\n\napproved if {\n\tinput.approval.status == "granted"\n'
    "\tinput.approval.expires_at > input.now.unix_ns\n}\n"
)


def test_time_read_only_inside_a_task_history_may_declare_a_ttl(
    opa_bin: str, tmp_path: Path
) -> None:
    # Undefined unless the input carries a task's history, and such inputs are never cached.
    source = "package p\n\nx if {\n\tinput.session.task.calls > 3\n\tinput.now.unix_ns > 0\n}\n"
    modules = [("r", ast(opa_bin, tmp_path, source)), ("d", ast(opa_bin, tmp_path, DECLARES))]
    assert cache_safety.problems(modules) == []


def test_time_read_only_alongside_the_never_cached_approval_may_declare_a_ttl(
    opa_bin: str, tmp_path: Path
) -> None:
    # Undefined unless input.approval is present, and such inputs are never cached.
    modules = [("r", ast(opa_bin, tmp_path, GUARDED)), ("d", ast(opa_bin, tmp_path, DECLARES))]
    assert cache_safety.problems(modules) == []


@pytest.mark.parametrize(
    "source",
    [
        # negated: true when there is no approval
        "package p\n\nx if {\n\tnot input.approval\n\tinput.now.unix_ns > 0\n}\n",
        # a comprehension over a missing approval is empty, not undefined
        "package p\n\nx if {\n\tn := count([a | some a in input.approval])\n"
        "\tinput.now.unix_ns > n\n}\n",
        # the guard is in another definition (the else), not in this one
        "package p\n\nx := 1 if input.approval.ok\n\nelse := input.now.unix_ns\n",
        # input.session is on every input, cacheable ones included: the fast path's guards
        "package p\n\nx if {\n\tinput.session.available == true\n\tinput.now.unix_ns > 0\n}\n",
        "package p\n\nx if {\n\tinput.session.task == null\n\tinput.now.unix_ns > 0\n}\n",
        # an empty approval object is cacheable, and input.approval == {} holds on it
        "package p\n\nx if {\n\tinput.approval == {}\n\tinput.now.unix_ns > 0\n}\n",
    ],
)
def test_a_guard_that_does_not_require_the_approval_does_not_count(
    opa_bin: str, tmp_path: Path, source: str
) -> None:
    modules = [("r", ast(opa_bin, tmp_path, source)), ("d", ast(opa_bin, tmp_path, DECLARES))]
    assert cache_safety.problems(modules) != []


def _policies_reading_time(tmp_path: Path) -> Path:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies, ignore=shutil.ignore_patterns("*_test.rego"))
    (policies / "pdp" / "rules" / "clock.rego").write_text(
        "# METADATA\n# title: Office hours\n# description: Denies nothing; reads the clock.\n"
        "# custom:\n#   controls: []\npackage pdp.rules.clock\n\n"
        'deny contains {"code": "night", "message": "m"} if input.now.unix_ns < 0\n'
    )
    return policies


def test_policy_check_refuses_a_library_that_reads_time_and_declares_ttls(
    tmp_path: Path,
) -> None:
    result = run("policy", "check", policies=_policies_reading_time(tmp_path))
    assert result.exit_code == errors.DOES_NOT_COMPILE
    assert lines(result.stderr)[-1] == (
        "error: a policy that reads time declares a decision-cache TTL"
    )
    assert "reads " in result.stderr and "clock.rego: input.now" in result.stderr


async def test_the_pdp_ignores_the_ttls_of_a_policy_that_reads_time(
    make_client: ClientFactory, opa_bin: str, tmp_path: Path, mint: Callable[..., str]
) -> None:
    bundle = build_bundle(opa_bin, _policies_reading_time(tmp_path), tmp_path / "b.tar.gz")
    opa = OPAProcess(opa_bin, tmp_path / "opa.sock", "--bundle", str(bundle.path)).start()
    try:
        client = await make_client(opa.url, audit_enabled=False, opa_timeout_ms=5000)
        example = load_example(ALLOW)
        request = copy.deepcopy(example["request"])
        request["agent"]["token"] = mint(example["spiffe_id"])
        for _ in range(2):
            resp = await client.post("/v1/decisions", json=request)
            assert (await resp.json())["allow"] is True
        cache = client.app[DECISION_CACHE]
        assert cache is not None and not cache.policy_safe and len(cache) == 0
        assert any("clock.rego: input.now" in p for p in cache.policy_problems)
    finally:
        opa.stop()
