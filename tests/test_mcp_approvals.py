"""A human approval through a real MCP call, end to end: the official MCP client -> our
gateway -> the PDP (a real OPA serving policies/ plus one rule that makes reading an HR
record need approval) -> the example MCP servers. The client sees the pending approval
(-32001 with its id, nothing forwarded); once an approver grants it through the approvals
API, the call retried with X-PDP-Approval-Id goes through, once; a denied, expired or
mismatched approval keeps it denied."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from aiohttp.test_utils import TestServer
from mcp.shared.exceptions import MCPError

from examples.mcp_server import ExampleServer, example_server
from pdp.bundle import build_bundle
from pdp.mcp.gateway import DENIED, GatewayConfig, load_verifier
from pdp.state import APPROVALS
from pdp.target import CredentialVerifier
from tests.audit_helpers import records
from tests.conftest import DEV_DOMAINS, POLICIES
from tests.opa_process import OPAProcess
from tests.test_mcp_gateway import ASSISTANT, agent, serve_gateway, start_pdp

APPROVER = "approver-credential-for-mcp-tests"
#: The upstreams' introspection credential: an approval-gated call is high risk, so its
#: credential carries recheck_at_target and the target asks the PDP before serving it.
INTROSPECTOR = "introspection-credential-for-mcp-tests"
#: Added to a copy of policies/: the risk rules' approval gate, for one MCP tool.
APPROVAL_RULE = """package pdp.rules.risk

# Test only: reading an HR record through the MCP gateway needs a human's approval.
needs_approval if {
\tinput.action.type == "tool.call"
\tinput.action.name == "hr.read_record"
}
"""
CALL = ("hr.read_record", {"employee_id": "e-1"})


@pytest.fixture(scope="module")
def approval_opa(opa_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OPAProcess]:
    """A real OPA serving policies/ plus :data:`APPROVAL_RULE`."""
    d = tmp_path_factory.mktemp("approval-policies")
    policies = d / "policies"
    shutil.copytree(POLICIES, policies)
    (policies / "pdp" / "rules" / "risk_mcp_approval.rego").write_text(APPROVAL_RULE)
    bundle = build_bundle(opa_bin, policies, d / "bundle.tar.gz")
    opa = OPAProcess(opa_bin, d / "opa.sock", "--bundle", str(bundle.path)).start()
    yield opa
    opa.stop()


@dataclass
class Stack:
    pdp: TestServer
    mcp_url: str
    upstreams: dict[str, ExampleServer]
    audit: Path

    @property
    def pdp_url(self) -> str:
        return f"http://127.0.0.1:{self.pdp.port}"

    def seen(self) -> list[dict[str, Any]]:
        return [s for u in self.upstreams.values() for s in u.seen]

    async def approver(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {APPROVER}"}
        async with httpx2.AsyncClient(timeout=10) as http:
            resp = await http.request(method, self.pdp_url + path, headers=headers, **kw)
        assert resp.status_code == 200, resp.text
        return resp.json()


@pytest.fixture
async def stack(approval_opa: OPAProcess, dev_state: Path, tmp_path: Path) -> AsyncIterator[Stack]:
    pdp = await start_pdp(
        approval_opa.url,
        dev_state,
        tmp_path,
        approver_token=APPROVER,
        introspection_token=INTROSPECTOR,
    )
    pdp_url = f"http://127.0.0.1:{pdp.port}"
    examples = {name: example_server(name, pdp_url) for name in ("hr-files", "web")}
    for name, example in examples.items():
        example._verifier = CredentialVerifier(
            pdp_url=pdp_url, audience=name, introspection_token=INTROSPECTOR
        )
    try:
        async with contextlib.AsyncExitStack() as exits:
            gateway, _, _ = await serve_gateway(exits, pdp_url, examples, dev_state)
            yield Stack(pdp, gateway.url + "/mcp", examples, tmp_path / "audit")
    finally:
        for example in examples.values():
            await example.close()
        await pdp.close()


def codes(error: MCPError) -> list[str]:
    return [r["code"] for r in error.data["reasons"]]


async def call(
    stack: Stack,
    token: str,
    approval_id: str | None = None,
    arguments: dict[str, Any] | None = None,
) -> Any:
    """One tools/call of :data:`CALL` in task T-apr (session s-apr), optionally retried
    with an approval; a refusal is returned as the MCPError."""
    extra = {} if approval_id is None else {"X-PDP-Approval-Id": approval_id}
    async with agent(stack.mcp_url, token, task="T-apr", session="s-apr", extra=extra) as client:
        try:
            return await client.call_tool(CALL[0], arguments or CALL[1])
        except MCPError as exc:
            return exc


async def pending_approval(stack: Stack, token: str) -> str:
    """Call, see the approval-pending refusal, and return its approval id."""
    refused = await call(stack, token)
    assert isinstance(refused, MCPError) and refused.code == DENIED
    assert codes(refused) == ["approval_required"]
    approval = refused.data["approval"]
    assert approval["status"] == "pending" and approval["id"].startswith("apr_")
    assert stack.seen() == []  # nothing forwarded while it is pending
    return str(approval["id"])


async def test_a_granted_approval_lets_the_retried_call_through_once(
    stack: Stack, mint: Callable[..., str]
) -> None:
    token = mint(ASSISTANT)
    async with agent(stack.mcp_url, token, task="T-apr", session="s-apr") as client:
        listed = {t.name for t in (await client.list_tools()).tools}
    # Listed: calling it is how the agent asks for the approval.
    assert "hr.read_record" in listed

    approval_id = await pending_approval(stack, token)
    again = await call(stack, token)  # asking again opens no second approval
    assert isinstance(again, MCPError) and again.data["approval"]["id"] == approval_id

    pending = await stack.approver("GET", "/v1/approvals", params={"status": "pending"})
    [shown] = [a for a in pending["approvals"] if a["id"] == approval_id]
    assert shown["agent"] == ASSISTANT and shown["action"]["name"] == "hr.read_record"
    still = await call(stack, token, approval_id)  # not decided yet
    assert isinstance(still, MCPError) and "approval_pending" in codes(still)
    assert stack.seen() == []

    granted = await stack.approver(
        "POST", f"/v1/approvals/{approval_id}/grant", json={"approver": "carol@acme.example"}
    )
    assert granted["status"] == "granted"
    result = await call(stack, token, approval_id)

    assert not isinstance(result, MCPError), result
    assert result.is_error is not True
    [seen] = stack.seen()
    assert seen["scope"] == "tool.call:hr.read_record:read" and "refused" not in seen
    used = [r for r in records(stack.audit) if r.get("event") == "used"]
    assert [r["approval_id"] for r in used] == [approval_id]
    # One use: the same call again is refused and never forwarded.
    replay = await call(stack, token, approval_id)
    assert isinstance(replay, MCPError) and "approval_used" in codes(replay)
    assert len(stack.seen()) == 1


@pytest.mark.parametrize("how", ["denied", "expired", "for another call"])
async def test_a_denied_expired_or_mismatched_approval_keeps_the_call_denied(
    stack: Stack, mint: Callable[..., str], how: str
) -> None:
    token = mint(ASSISTANT)
    approval_id = await pending_approval(stack, token)
    arguments = None
    if how == "denied":
        await stack.approver("POST", f"/v1/approvals/{approval_id}/deny", json={"note": "no"})
        expected = "approval_denied"
    elif how == "expired":
        service = stack.pdp.app[APPROVALS]
        service.clock = lambda: time.time() + 2 * 3600  # past the pending approval's hour
        expected = "approval_expired"
    else:
        await stack.approver("POST", f"/v1/approvals/{approval_id}/grant", json={})
        arguments = {"employee_id": "e-2"}  # not the record the approver saw
        expected = "approval_mismatch"

    refused = await call(stack, token, approval_id, arguments)

    assert isinstance(refused, MCPError) and refused.code == DENIED
    assert expected in codes(refused)
    assert stack.seen() == []


def test_an_approval_id_goes_with_a_call_and_never_with_a_list_check(dev_state: Path) -> None:
    from pdp.identity import Identity
    from pdp.mcp.gateway import CallContext, McpGateway

    gateway = McpGateway(
        GatewayConfig(
            pdp_url="http://127.0.0.1:1",
            upstreams={},
            verifier=load_verifier("agent-pdp", {}, DEV_DOMAINS, dev_state),
        )
    )
    identity = Identity(authenticated=True, spiffe_id=ASSISTANT)
    fields = {"tenant": "acme", "purpose": "p", "approval_id": "apr_x"}
    call_ = CallContext("token", identity, fields, "2026-07-28")
    action = {"type": "tool.call", "name": CALL[0], "operation": "read", "arguments": {}}

    called = gateway._request(call_, "tools/call", action=action, upstream="hr-files",
                              sensitivity=None)  # fmt: skip
    checked = gateway._request(call_, "tools/list", action=action, upstream="hr-files",
                               sensitivity=None, check=True)  # fmt: skip

    assert called["approval_id"] == "apr_x"
    assert "approval_id" not in checked and checked["mode"] == "check"
