"""End to end: the official MCP Python client -> `pdpctl mcp-gateway` -> real MCP servers
written with the same SDK (examples/mcp_server.py), with a real PDP on a real OPA.

The PDP is the app on a real TCP port; the gateway and the two upstreams are uvicorn
servers on this test's event loop, so the test can see what each upstream received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from aiohttp.test_utils import TestServer
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import PromptReference, TextResourceContents

from examples.mcp_server import ExampleServer, example_server
from pdp.app import create_app
from pdp.devtrust import mint_svid
from pdp.mcp.gateway import DENIED, GatewayConfig, build_app, load_verifier
from tests.conftest import DEV_DOMAINS, POLICIES, ROOT, free_port, remote_settings
from tests.opa_process import OPAProcess

ASSISTANT = "spiffe://acme.example/agents/mcp-assistant"
PURPOSE = "answer hr questions"


class Uvicorn:
    """An ASGI app served by uvicorn on a free loopback port, on this event loop."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Uvicorn:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
            self.task = None


class Stack:
    """PDP + two upstreams + the gateway, with what each upstream saw."""

    def __init__(self, pdp: TestServer, gateway: Uvicorn, upstreams: dict[str, ExampleServer]):
        self.pdp = pdp
        self.gateway = gateway
        self.upstreams = upstreams
        self.audit: Path | None = None
        self.upstream_urls: dict[str, str] = {}
        self.servers: dict[str, Uvicorn] = {}

    @property
    def pdp_url(self) -> str:
        return f"http://127.0.0.1:{self.pdp.port}"

    @property
    def mcp_url(self) -> str:
        return self.gateway.url + "/mcp"

    def seen(self, name: str) -> list[dict[str, Any]]:
        return self.upstreams[name].seen


async def start_pdp(opa_url: str, dev_state: Path, tmp_path: Path, **settings: Any) -> TestServer:
    """The PDP app on a real loopback port, on ``opa_url``, with its own store and audit
    trail in ``tmp_path`` (``settings``: overrides)."""
    values = {
        "opa_timeout_ms": 5000,
        "audit_dir": tmp_path / "audit",
        "store_url": f"sqlite://{tmp_path / 'pdp.sqlite3'}",
        **settings,
    }
    pdp = TestServer(
        create_app(remote_settings(dev_state, opa_url, **values)),
        host="127.0.0.1",
        port=free_port(),
    )
    await pdp.start_server()
    return pdp


async def serve_gateway(
    exits: contextlib.AsyncExitStack,
    pdp_url: str,
    examples: dict[str, ExampleServer],
    dev_state: Path,
    **config: Any,
) -> tuple[Uvicorn, dict[str, str], dict[str, Uvicorn]]:
    """Serve each example upstream and the gateway in front of them, on ``exits``:
    (the gateway, upstream name -> MCP URL, upstream name -> its server). ``config``:
    GatewayConfig overrides."""
    urls, servers = {}, {}
    for name, example in examples.items():
        served = servers[name] = await exits.enter_async_context(Uvicorn(example.app()))
        urls[name] = served.url + "/mcp"
    gateway_config = GatewayConfig(
        **{
            "pdp_url": pdp_url,
            "upstreams": urls,
            "verifier": load_verifier("agent-pdp", {}, DEV_DOMAINS, dev_state),
            "port": free_port(),
            "pdp_timeout_s": 5.0,
            "upstream_timeout_s": 5.0,
            **config,
        }
    )
    gateway = await exits.enter_async_context(
        Uvicorn(build_app(gateway_config), gateway_config.port)
    )
    return gateway, urls, servers


@pytest.fixture
async def stack(shared_opa: OPAProcess, dev_state: Path, tmp_path: Path) -> AsyncIterator[Stack]:
    pdp = await start_pdp(shared_opa.url, dev_state, tmp_path)
    pdp_url = f"http://127.0.0.1:{pdp.port}"
    examples = {name: example_server(name, pdp_url) for name in ("hr-files", "web")}
    async with contextlib.AsyncExitStack() as stack_:
        gateway, upstream_urls, servers = await serve_gateway(
            stack_, pdp_url, examples, dev_state, pdp_timeout_s=2.0
        )
        result = Stack(pdp, gateway, examples)
        result.audit = tmp_path / "audit"
        result.upstream_urls = upstream_urls
        result.servers = servers
        try:
            yield result
        finally:
            for example in examples.values():
                await example.close()
            await pdp.close()


@contextlib.asynccontextmanager
async def agent(
    stack: Stack | str,
    token: str | None,
    *,
    task: str = "T-1",
    session: str = "s-1",
    mode: str = "auto",
    extra: dict[str, str] | None = None,
) -> AsyncIterator[Client]:
    """The official MCP client, as an agent, with its JWT-SVID as the bearer."""
    headers = {"X-PDP-Tenant": "acme", "X-PDP-Task-Id": task, "X-PDP-Task-Purpose": PURPOSE}
    headers["X-PDP-Session"] = session
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    headers.update(extra or {})
    url = stack if isinstance(stack, str) else stack.mcp_url
    async with httpx2.AsyncClient(headers=headers, timeout=10) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


def records(stack: Stack) -> list[dict[str, Any]]:
    assert stack.audit is not None
    out = []
    for path in sorted(stack.audit.glob("*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_listing_holds_only_what_the_agent_may_call(
    stack: Stack, mint: Callable[..., str], mode: str
) -> None:
    async with agent(stack, mint(ASSISTANT), mode=mode) as client:
        listed = await client.list_tools()
    names = {tool.name for tool in listed.tools}
    # hr.delete_record is not entitled (a delete); web.* are, read and write.
    assert names == {"hr.read_record", "hr.list_employees", "web.fetch", "web.post"}
    assert listed.cache_scope == "private" or mode == "legacy"
    # Listing is not a call: nothing reached an upstream's tools/call.
    assert stack.seen("hr-files") == [] and stack.seen("web") == []


async def test_an_allowed_call_reaches_the_upstream_with_the_minted_credential(
    stack: Stack, mint: Callable[..., str]
) -> None:
    token = mint(ASSISTANT)
    async with agent(stack, token) as client:
        result = await client.call_tool("hr.list_employees", {})
    assert result.is_error is not True
    [seen] = stack.seen("hr-files")
    # The upstream verified the credential with pdp.target: its audience, its scope.
    assert seen["claims"]["aud"] == "hr-files"
    assert seen["claims"]["scope"] == "tool.call:hr.list_employees:read"
    assert seen["claims"]["sub"] == ASSISTANT
    assert "refused" not in seen
    # The decision and the upstream's outcome are in the audit trail, linked.
    recs = records(stack)
    decision = [r for r in recs if r["type"] == "decision" and r["credential"]]
    assert decision and decision[-1]["credential"]["jti"] == seen["claims"]["jti"]
    for _ in range(100):
        outcomes = [r for r in records(stack) if r["type"] == "outcome"]
        if outcomes:
            break
        await asyncio.sleep(0.02)
    assert outcomes[-1]["decision_id"] == decision[-1]["decision_id"]
    assert outcomes[-1]["status"] == "ok" and outcomes[-1]["target"] == "hr-files"
    assert outcomes[-1]["latency_us"] > 0


async def test_the_agent_token_never_reaches_the_upstream(
    stack: Stack, mint: Callable[..., str]
) -> None:
    token = mint(ASSISTANT)
    async with agent(stack, token) as client:
        await client.call_tool("web.fetch", {"url": "https://example.org"})
    [seen] = stack.seen("web")
    assert seen["claims"]["scope"] == "tool.call:web.fetch:read"
    assert seen["claims"]["jti"] != token


async def test_a_denied_call_is_32001_and_never_reaches_the_upstream(
    stack: Stack, mint: Callable[..., str]
) -> None:
    async with agent(stack, mint(ASSISTANT)) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("hr.delete_record", {"employee_id": "e-1"})
    assert raised.value.code == DENIED
    data = raised.value.data
    assert data["decision_id"]
    assert "action_not_entitled" in [r["code"] for r in data["reasons"]]
    assert stack.seen("hr-files") == []


async def test_restricted_read_then_external_egress_in_a_task_is_a_toxic_flow(
    stack: Stack, mint: Callable[..., str]
) -> None:
    token = mint(ASSISTANT)
    async with agent(stack, token, task="T-toxic", session="s-toxic") as client:
        await client.call_tool("hr.read_record", {"employee_id": "e-1"})
        with pytest.raises(MCPError) as raised:
            await client.call_tool("web.post", {"url": "https://paste.example", "body": "x"})
    assert raised.value.code == DENIED
    codes = [r["code"] for r in raised.value.data["reasons"]]
    assert "session_toxic_flow" in codes
    assert [s["scope"] for s in stack.seen("web")] == []
    # Another task (and session) of the same agent may still post.
    async with agent(stack, token, task="T-clean", session="s-clean") as client:
        await client.call_tool("web.post", {"url": "https://paste.example", "body": "x"})
    assert len(stack.seen("web")) == 1


async def test_with_the_pdp_down_calls_are_32603_and_nothing_is_forwarded(
    stack: Stack, mint: Callable[..., str]
) -> None:
    token = mint(ASSISTANT)
    async with agent(stack, token) as client:
        await client.list_tools()  # the catalog is known before the PDP goes
        await stack.pdp.close()
        with pytest.raises(MCPError) as raised:
            await client.call_tool("hr.list_employees", {})
    assert raised.value.code == -32603
    assert stack.seen("hr-files") == []


@pytest.mark.parametrize(
    ("headers", "name"),
    [
        ({"Mcp-Method": "tools/list"}, "hr.list_employees"),
        ({"Mcp-Method": "tools/call", "Mcp-Name": "hr.read_record"}, "hr.list_employees"),
    ],
    ids=["method", "name"],
)
async def test_mirrored_headers_that_disagree_with_the_body_are_refused(
    stack: Stack, mint: Callable[..., str], headers: dict[str, str], name: str
) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": name,
            "arguments": {},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "agent-pdp/tenant": "acme",
                "agent-pdp/task-purpose": PURPOSE,
            },
        },
    }
    send = {
        "Authorization": f"Bearer {mint(ASSISTANT)}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        **headers,
    }
    async with httpx2.AsyncClient(timeout=10) as http:
        resp = await http.post(stack.mcp_url, json=body, headers=send)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == -32020
    assert stack.seen("hr-files") == []


async def test_no_or_a_bad_token_is_401_with_resource_metadata(
    stack: Stack, mint: Callable[..., str]
) -> None:
    async with httpx2.AsyncClient(timeout=10) as http:
        for auth in ({}, {"Authorization": "Bearer not-a-jwt"}):
            resp = await http.post(
                stack.mcp_url,
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={"Accept": "application/json, text/event-stream", **auth},
            )
            assert resp.status_code == 401
            challenge = resp.headers["www-authenticate"]
            assert challenge.startswith("Bearer ")
            assert (
                'resource_metadata="'
                + stack.gateway.url
                + "/.well-known/oauth-protected-resource/mcp"
                in challenge
            )
        meta = await http.get(stack.gateway.url + "/.well-known/oauth-protected-resource/mcp")
    assert meta.status_code == 200
    assert meta.json()["resource"] == stack.mcp_url


async def test_unmapped_methods_are_denied(stack: Stack, mint: Callable[..., str]) -> None:
    async with agent(stack, mint(ASSISTANT), mode="legacy") as client:
        with pytest.raises(MCPError) as raised:
            await client.complete(
                ref=PromptReference(type="ref/prompt", name="hr.summarize"),
                argument={"name": "x", "value": "y"},
            )
    assert raised.value.code == DENIED
    assert raised.value.data["reasons"][0]["code"] == "mcp_method_not_allowed"


async def test_resources_and_prompts_are_decided_too(
    stack: Stack, mint: Callable[..., str]
) -> None:
    async with agent(stack, mint(ASSISTANT)) as client:
        resources = await client.list_resources()
        assert [str(r.uri) for r in resources.resources] == ["hr://policies/leave"]
        read = await client.read_resource("hr://policies/leave")
        prompts = await client.list_prompts()
    content = read.contents[0]
    assert isinstance(content, TextResourceContents) and content.text.startswith("25 days")
    [seen] = stack.seen("hr-files")
    assert seen["method"] == "resources/read"
    assert seen["claims"]["aud"] == "hr-files"
    assert [p.name for p in prompts.prompts] == []  # hr.summarize: not entitled


# --------------------------------------------------------------------------- the commands


async def wait_listening(port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    for _ in range(600):
        if proc.returncode is not None:
            raise AssertionError(log.read_text()[-2000:])
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"nothing listens on {port}: {log.read_text()[-2000:]}")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDP_")}
    env["PDP_OPA_TIMEOUT_MS"] = "5000"  # a loaded test machine must not turn slow into 503
    return env


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


async def test_pdpctl_mcp_gateway_is_that_gateway(
    stack: Stack, mint: Callable[..., str], dev_state: Path, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pdpctl", "mcp-gateway", "--pdp", stack.pdp_url,
            "--upstream", f"hr-files={stack.upstream_urls['hr-files']}",
            "--listen", f"127.0.0.1:{port}", "--state-dir", str(dev_state),
            cwd=ROOT, env=clean_env(), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        await wait_listening(port, proc, log)
        url = f"http://127.0.0.1:{port}/mcp"
        async with agent(url, mint(ASSISTANT)) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            await client.call_tool("hr.list_employees", {})
            with pytest.raises(MCPError) as raised:
                await client.call_tool("hr.delete_record", {"employee_id": "e-1"})
    finally:
        proc.terminate()
        await proc.wait()
    assert names == {"hr.read_record", "hr.list_employees"}
    assert raised.value.code == DENIED
    assert [s["scope"] for s in stack.seen("hr-files")] == ["tool.call:hr.list_employees:read"]
    assert "agent-pdp MCP gateway on" in log.read_text()


async def test_pdpctl_serve_runs_the_gateway_in_process_too(tmp_path: Path) -> None:
    state = tmp_path / "state"
    pdp_port, mcp_port = free_port(), free_port()
    example = example_server("hr-files", f"http://127.0.0.1:{pdp_port}")
    async with Uvicorn(example.app()) as upstream:
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pdpctl", "--policies", str(POLICIES), "serve",
                "--port", str(pdp_port), "--state-dir", str(state),
                "--mcp-upstream", f"hr-files={upstream.url}/mcp",
                "--mcp-listen", f"127.0.0.1:{mcp_port}",
                cwd=ROOT, env=clean_env(), stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=out,
            )  # fmt: skip
        try:
            await wait_listening(pdp_port, proc, log)
            await wait_listening(mcp_port, proc, log)
            for _ in range(600):  # the embedded OPA activates its bundle
                status = await asyncio.to_thread(_status, f"http://127.0.0.1:{pdp_port}/readyz")
                if status == 200:
                    break
                await asyncio.sleep(0.05)
            token = mint_svid(state, ASSISTANT)
            async with agent(f"http://127.0.0.1:{mcp_port}/mcp", token) as client:
                result = await client.call_tool("hr.list_employees", {})
        finally:
            proc.terminate()
            await proc.wait()
            await example.close()
    assert result.is_error is not True
    [seen] = example.seen
    assert seen["claims"]["aud"] == "hr-files"
    assert "MCP gateway on http://127.0.0.1" in log.read_text()


async def test_an_outcome_is_written_only_with_its_decisions_credential(
    stack: Stack, mint: Callable[..., str]
) -> None:
    token = mint(ASSISTANT)
    async with agent(stack, token) as client:
        await client.call_tool("hr.list_employees", {})
    [seen] = stack.seen("hr-files")
    decision = next(
        r for r in records(stack) if (r.get("credential") or {}).get("jti") == seen["claims"]["jti"]
    )
    outcome = {"target": "hr-files", "status": "ok", "latency_us": 5}
    async with httpx2.AsyncClient(timeout=10) as http:
        url = f"{stack.pdp_url}/v1/decisions/{decision['decision_id']}/outcome"
        assert (await http.post(url, json=outcome)).status_code == 401
        forged = {"Authorization": f"Bearer {token}"}  # the agent's SVID is no credential
        assert (await http.post(url, json=outcome, headers=forged)).status_code == 403
        # A credential of another decision cannot write this one's outcome; its own can.
        other = (
            await http.post(
                f"{stack.pdp_url}/v1/decisions",
                json={
                    "agent": {"token": token},
                    "tenant": "acme",
                    "task": {"purpose": PURPOSE},
                    "action": {
                        "type": "tool.call",
                        "name": "hr.list_employees",
                        "operation": "read",
                    },
                    "destination": {"type": "tool", "name": "hr-files"},
                    "data": {"sensitivity": "internal"},
                },
            )
        ).json()
        bearer = {"Authorization": f"Bearer {other['credential']['token']}"}
        assert (await http.post(url, json=outcome, headers=bearer)).status_code == 403
        own = f"{stack.pdp_url}/v1/decisions/{other['decision_id']}/outcome"
        assert (await http.post(own, json={"bad": 1}, headers=bearer)).status_code == 400
        assert (await http.post(own, json=outcome, headers=bearer)).status_code == 204
    written = [r for r in records(stack) if r["type"] == "outcome"]
    assert [r["decision_id"] for r in written if r["latency_us"] == 5] == [other["decision_id"]]


@pytest.mark.parametrize(
    ("answer", "message", "has_approval"),
    [
        ({"decision_id": "d", "allow": False, "reasons": [{"code": "x"}]}, "x", False),
        (
            {
                "decision_id": "d",
                "allow": False,
                "reasons": [{"code": "approval_required"}],
                "approval": {"id": "apr-1", "status": "pending"},
            },
            "approval_required",
            True,
        ),
        ({"decision_id": "d", "allow": True, "reasons": []}, "no credential", False),
    ],
    ids=["deny", "approval-pending", "allow-without-credential"],
)
def test_every_answer_but_an_allow_with_a_credential_is_refused(
    answer: dict[str, Any], message: str, has_approval: bool
) -> None:
    from pdp.mcp.gateway import McpGateway

    refusal = McpGateway.refusal(answer)
    assert refusal is not None and refusal.code == DENIED
    assert message in refusal.message
    assert refusal.data["decision_id"] == "d"
    assert ("approval" in refusal.data) is has_approval
    allowed = {**answer, "allow": True, "credential": {"token": "t"}, "reasons": []}
    assert McpGateway.refusal(allowed) is None


async def test_a_restarted_upstream_is_reached_again(
    stack: Stack, mint: Callable[..., str]
) -> None:
    """The shared upstream client breaks with its connection; the next call opens anew."""
    token = mint(ASSISTANT)
    async with agent(stack, token) as client:
        await client.call_tool("web.fetch", {"url": "https://example.org"})
        web = stack.servers["web"]
        await web.__aexit__(None, None, None)
        with pytest.raises(MCPError) as raised:
            await client.call_tool("web.fetch", {"url": "https://example.org"})
        assert raised.value.code == -32603
        async with Uvicorn(stack.upstreams["web"].app(), web.port):
            await client.call_tool("web.fetch", {"url": "https://example.org"})
    assert len(stack.seen("web")) == 2
