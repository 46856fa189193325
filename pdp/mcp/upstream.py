"""Upstream MCP servers behind the gateway, reached with the official SDK's client.

Each upstream is probed once (``mode="auto"``: ``server/discover`` for 2026-07-28, else the
initialize handshake) and then spoken to in the era it answered. Every forwarded call opens
its own SDK client whose HTTP requests carry **the credential the PDP minted for that call**
as ``Authorization: Bearer`` - never the agent's own token (MCP forbids token passthrough).
The HTTP connections themselves are pooled across calls.

The catalog (tools, resources, prompts and which upstream serves each) is listed without a
credential, as metadata, and kept for ``ttl_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

log = logging.getLogger("pdp.mcp")

__all__ = ["Catalog", "Upstream"]

#: Where an upstream declares a tool's or resource's data sensitivity.
SENSITIVITY_META = "agent-pdp/sensitivity"
SENSITIVITIES = ("public", "internal", "confidential", "restricted")


class _SharedPool(httpx2.AsyncBaseTransport):
    """One connection pool for many short-lived clients (closing a client keeps it)."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:  # the pool outlives each client
        return None


def operation_of(annotations: types.ToolAnnotations | None) -> str:
    """The operation a tool's annotations declare: read-only -> read, non-destructive ->
    write, destructive -> delete, none -> execute (the most a tool could do)."""
    if annotations is None:
        return "execute"
    if annotations.read_only_hint:
        return "read"
    if annotations.destructive_hint is False:
        return "write"
    return "delete" if annotations.destructive_hint else "execute"


def sensitivity_of(meta: Mapping[str, Any] | None) -> str | None:
    """The sensitivity an upstream declares in ``_meta`` (None: not declared or unknown)."""
    value = (meta or {}).get(SENSITIVITY_META)
    return value if value in SENSITIVITIES else None


@dataclass
class Catalog:
    """What an upstream offers, listed without a credential."""

    tools: list[types.Tool] = field(default_factory=list)
    resources: list[types.Resource] = field(default_factory=list)
    prompts: list[types.Prompt] = field(default_factory=list)
    listed_at: float = 0.0


class Upstream:
    """One upstream MCP server: its era, its catalog and forwarded calls."""

    def __init__(self, name: str, url: str, *, timeout_s: float = 30.0, ttl_s: float = 30.0):
        self.name = name
        self.url = url
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        #: "legacy" or a modern protocol version, once probed.
        self.mode: str = "auto"
        self.catalog = Catalog()
        self._pool = _SharedPool()
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        await self._pool.inner.aclose()

    @asynccontextmanager
    async def client(self, credential: str | None) -> AsyncIterator[Client]:
        """An SDK client to this upstream whose requests carry ``credential`` as Bearer."""
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        http = httpx2.AsyncClient(
            transport=self._pool,
            headers=headers,
            timeout=httpx2.Timeout(self.timeout_s, read=self.timeout_s),
        )
        async with http:
            transport = streamable_http_client(self.url, http_client=http)
            async with Client(transport, mode=self.mode) as client:
                if self.mode == "auto":
                    version = client.protocol_version
                    self.mode = version if version in MODERN_PROTOCOL_VERSIONS else "legacy"
                yield client

    async def list(self) -> Catalog:
        """The catalog, listed again when older than ``ttl_s``."""
        if time.monotonic() - self.catalog.listed_at < self.ttl_s:
            return self.catalog
        async with self._lock:
            if time.monotonic() - self.catalog.listed_at < self.ttl_s:
                return self.catalog
            catalog = Catalog(listed_at=time.monotonic())
            async with self.client(None) as client:
                caps = client.server_capabilities
                if caps.tools is not None:
                    catalog.tools = (await client.list_tools()).tools
                if caps.resources is not None:
                    catalog.resources = (await client.list_resources()).resources
                if caps.prompts is not None:
                    catalog.prompts = (await client.list_prompts()).prompts
            self.catalog = catalog
            return catalog

    def invalidate(self) -> None:
        self.catalog.listed_at = 0.0
