"""Upstream MCP servers behind the gateway, reached with the official SDK's client.

Each upstream is probed once (``mode="auto"``: ``server/discover`` for 2026-07-28, else the
initialize handshake) and then spoken to in the era it answered. Every forwarded request
carries **the credential the PDP minted for that call** as ``Authorization: Bearer`` - never
the agent's own token (MCP forbids token passthrough).

A 2026-07-28 upstream is stateless, so one long-lived SDK client serves every call (its tool
schemas cached, its connections pooled); the credential is set per request: the calling
task puts it in a context variable and :func:`_per_request_credentials` adds it to the
headers of that request's message, in the calling task, before the transport sends it.
A handshake-era upstream gets a fresh client (and session) per call, with the credential as
that client's header. The HTTP connections are pooled across calls either way.

The catalog (tools, resources, prompts and which upstream serves each) is listed without a
credential, as metadata, and kept for ``ttl_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
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
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import CONNECTION_CLOSED
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

log = logging.getLogger("pdp.mcp")

__all__ = ["Catalog", "Upstream"]

#: Where an upstream declares a tool's or resource's data sensitivity.
SENSITIVITY_META = "agent-pdp/sensitivity"
SENSITIVITIES = ("public", "internal", "confidential", "restricted")


#: The credential of the call the current task is forwarding (shared modern client).
_CREDENTIAL: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pdp_mcp_credential", default=None
)


def _per_request_credentials(client: Client) -> bool:
    """Make ``client`` send each request with the calling task's credential. Returns False
    when this SDK's client cannot be hooked (then every call gets a client of its own)."""
    dispatcher: Any = getattr(getattr(client, "session", None), "_dispatcher", None)
    send = getattr(dispatcher, "send_raw_request", None)
    if dispatcher is None or send is None:
        return False

    async def send_raw_request(method: str, params: Any, opts: Any = None) -> Any:
        options = dict(opts or {})
        headers = dict(options.get("headers") or {})
        credential = _CREDENTIAL.get()
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        else:
            headers.pop("Authorization", None)
        options["headers"] = headers
        return await send(method, params, options)

    dispatcher.send_raw_request = send_raw_request
    return True


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
        #: What the probe's ``server/discover`` answered (modern era): every later client
        #: adopts it, capabilities included. A client pinned to a version without it would
        #: synthesize a discover result with no capabilities, and the next listing would
        #: find no tools, resources or prompts at all.
        self.discover: types.DiscoverResult | None = None
        self.catalog = Catalog()
        self._pool = _SharedPool()
        self._lock = asyncio.Lock()
        self._shared: Client | None = None
        self._shared_task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        await self._drop_shared()
        await self._pool.inner.aclose()

    async def _drop_shared(self) -> None:
        task, self._shared_task, self._shared = self._shared_task, None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _own_shared(self, ready: asyncio.Future[Client | None]) -> None:
        """The task that opens, holds and closes the shared client (anyio scopes must be
        left by the task that entered them)."""
        try:
            async with httpx2.AsyncClient(
                transport=self._pool, timeout=httpx2.Timeout(self.timeout_s)
            ) as http:
                transport = streamable_http_client(
                    self.url, http_client=http, terminate_on_close=False
                )
                async with Client(
                    transport, mode=self.mode, prior_discover=self.discover
                ) as client:
                    ready.set_result(client if _per_request_credentials(client) else None)
                    await asyncio.Event().wait()  # until cancelled by _drop_shared
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            log.warning("shared client of upstream %s closed: %r", self.name, exc)

    async def _shared_client(self) -> Client | None:
        if self._shared is not None and self._shared_task is not None:
            if not self._shared_task.done():
                return self._shared
            await self._drop_shared()  # its connection died with its task: open anew
        async with self._lock:
            if self._shared_task is not None and self._shared_task.done():
                self._shared_task = None  # it failed or ended: try again
            if self._shared is None and self._shared_task is None:
                ready: asyncio.Future[Client | None] = asyncio.get_running_loop().create_future()
                self._shared_task = asyncio.create_task(self._own_shared(ready))
                self._shared = await ready
            return self._shared

    @asynccontextmanager
    async def client(self, credential: str | None) -> AsyncIterator[Client]:
        """An SDK client to this upstream whose requests carry ``credential`` as Bearer."""
        shared = await self._shared_client() if self.mode in MODERN_PROTOCOL_VERSIONS else None
        if shared is None:
            async with self._own_client(credential) as client:
                yield client
            return
        token = _CREDENTIAL.set(credential)
        try:
            yield shared
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                await self._drop_shared()  # the transport failed, not the upstream's answer
            raise
        except asyncio.CancelledError:
            raise  # the caller gave up: the client is fine
        except Exception:
            await self._drop_shared()  # a broken connection: a new client next time
            raise
        finally:
            _CREDENTIAL.reset(token)

    @asynccontextmanager
    async def _own_client(self, credential: str | None) -> AsyncIterator[Client]:
        """A client of its own for one call (handshake era, or before the era is known)."""
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        http = httpx2.AsyncClient(
            transport=self._pool,
            headers=headers,
            timeout=httpx2.Timeout(self.timeout_s, read=self.timeout_s),
        )
        async with http:
            transport = streamable_http_client(self.url, http_client=http)
            async with Client(transport, mode=self.mode, prior_discover=self.discover) as client:
                if self.mode == "auto":
                    self._pin(client)
                yield client

    def _pin(self, client: Client) -> None:
        """Speak to this upstream from now on in the era the probe found: legacy, or the
        modern version whose discover result (capabilities included) later clients adopt."""
        version = client.protocol_version
        if version not in MODERN_PROTOCOL_VERSIONS:
            self.mode = "legacy"
            return
        discover = client.session.discover_result
        if discover is not None:  # else: probe again next time, never pin without it
            self.discover, self.mode = discover, version

    async def list(self) -> Catalog:
        """The catalog, listed again when older than ``ttl_s``."""
        if time.monotonic() - self.catalog.listed_at < self.ttl_s:
            return self.catalog
        async with self._lock:
            if time.monotonic() - self.catalog.listed_at < self.ttl_s:
                return self.catalog
            catalog = Catalog(listed_at=time.monotonic())
            async with self._own_client(None) as client:
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
