"""`pdpctl mcp-gateway --list-ttl 0` (and any listing after the TTL): a tool listing
followed by a call found "no upstream offers tool". The gateway probes a modern upstream
once (server/discover) and then pins its version; a client pinned without the probe's
discover result adopts one with no capabilities, so every later listing of that upstream
came back empty. The official MCP SDK on both sides (examples/mcp_server.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from examples.mcp_server import example_server
from pdp.mcp.upstream import Upstream
from tests.opa_process import OPAProcess
from tests.test_mcp_gateway import ASSISTANT, Stack, Uvicorn, agent, serve_gateway, start_pdp

LISTED = {"hr.read_record", "hr.list_employees", "web.fetch", "web.post"}


@pytest.fixture
async def stack_ttl0(
    shared_opa: OPAProcess, dev_state: Path, tmp_path: Path
) -> AsyncIterator[Stack]:
    pdp = await start_pdp(shared_opa.url, dev_state, tmp_path)
    pdp_url = f"http://127.0.0.1:{pdp.port}"
    examples = {name: example_server(name, pdp_url) for name in ("hr-files", "web")}
    async with contextlib.AsyncExitStack() as exits:
        gateway, _, _ = await serve_gateway(exits, pdp_url, examples, dev_state, list_ttl_s=0.0)
        try:
            yield Stack(pdp, gateway, examples)
        finally:
            for example in examples.values():
                await example.close()
            await pdp.close()


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_with_list_ttl_0_a_listed_tool_can_be_called(
    stack_ttl0: Stack, mint: Callable[..., str], mode: str
) -> None:
    async with agent(stack_ttl0, mint(ASSISTANT), mode=mode) as client:
        first = await client.list_tools()
        assert {t.name for t in first.tools} == LISTED
        result = await client.call_tool("hr.list_employees", {})
        assert result.is_error is not True
        again = await client.list_tools()
        assert {t.name for t in again.tools} == LISTED
        result = await client.call_tool("web.fetch", {"url": "https://example.org"})
        assert result.is_error is not True
    assert [s["claims"]["scope"] for s in stack_ttl0.seen("hr-files")] == [
        "tool.call:hr.list_employees:read"
    ]


async def test_an_upstream_lists_the_same_catalog_after_its_era_is_pinned(
    shared_opa: OPAProcess, dev_state: Path, tmp_path: Path
) -> None:
    example = example_server("hr-files", "http://127.0.0.1:9")  # listing needs no PDP
    async with Uvicorn(example.app()) as served:
        upstream = Upstream("hr-files", served.url + "/mcp", timeout_s=5.0, ttl_s=0.0)
        try:
            first = await upstream.list()
            assert upstream.mode in MODERN_PROTOCOL_VERSIONS
            assert upstream.discover is not None
            assert upstream.discover.capabilities.tools is not None
            second = await upstream.list()  # a client pinned to the probed version
            assert [t.name for t in second.tools] == [t.name for t in first.tools]
            assert {t.name for t in first.tools} >= {"hr.read_record", "hr.list_employees"}
            assert [str(r.uri) for r in second.resources] == [str(r.uri) for r in first.resources]
            assert [p.name for p in second.prompts] == [p.name for p in first.prompts]
        finally:
            await upstream.close()
            await example.close()
