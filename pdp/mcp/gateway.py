"""``pdpctl mcp-gateway``: an MCP gateway that asks the PDP before every call it forwards.

Agents speak MCP (Streamable HTTP at ``/mcp``, revision 2026-07-28 and the handshake-era
revisions the official SDK still serves) to the gateway; the gateway speaks MCP to one or
more upstream servers. Protocol handling on both sides is the official ``mcp`` SDK's.

Per request, in order:

1. **Authentication** - the agent's JWT-SVID is the bearer token (SDK bearer middleware,
   :class:`SVIDTokenVerifier`): missing or invalid -> HTTP 401 with ``WWW-Authenticate:
   Bearer ... resource_metadata="<.well-known/oauth-protected-resource/mcp>"`` (RFC 9728,
   MCP authorization), before anything else.
2. **Header check** - mirrored ``Mcp-Method`` / ``Mcp-Name`` headers, when present, must match
   the body (any era; :class:`HeaderCheck`): a mismatch is HTTP 400, JSON-RPC -32020.
3. **Method gate** - only mapped methods pass; anything else is refused -32001.
4. **Decision** - through the PDP's one decision path (``POST /v1/decisions``):

   ============== =============== ================= ==========================
   method         action.type     action.name       destination
   ============== =============== ================= ==========================
   tools/call     tool.call       the tool          the tool's upstream
   resources/read data.read       the URI           the resource's upstream
   prompts/get    data.read       the prompt        the prompt's upstream
   \\*/list        (per item, ``mode: check``: no credential, no history)
   ============== =============== ================= ==========================

   ``operation`` comes from the tool's annotations (read-only -> read, non-destructive ->
   write, destructive -> delete, none -> execute), ``data.sensitivity`` from the upstream's
   ``_meta["agent-pdp/sensitivity"]``, ``arguments`` are the call's. Tenant, task, purpose,
   session and delegation come from headers or ``_meta`` (see :data:`CONTEXT_FIELDS`); the
   same field given both ways must agree. A call retried after a human's approval names it
   (``X-PDP-Approval-Id`` / ``_meta["agent-pdp/approval-id"]``), sent as ``approval_id``.
5. **Answer** - deny -> JSON-RPC error -32001 ``{"decision_id", "reasons", "approval"?}``,
   never forwarded; allow without a credential (an approval pending) -> the same; the PDP
   unreachable, or refusing the gateway as its caller (401/403) -> -32603, never forwarded;
   allow -> forwarded with the **minted credential**
   as the upstream's bearer token, and the outcome (status, latency) reported to the PDP,
   which records it linked to the decision (:mod:`pdp.outcomes`).

The gateway is the PDP's caller: against a PDP that authenticates callers it presents
:attr:`GatewayConfig.pdp_caller` (client certificate, caller key) on every request.

Lists are filtered to what the agent may use (allowed, or denied only for want of an
approval), one check decision per item, cached per agent,
tenant, purpose and policy revision (a decision reporting another revision empties the
cache), and answered with cache hints ``cacheScope: private``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import mcp_types as types
import orjson
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    NAME_BEARING_METHODS,
    decode_header_value,
    find_duplicated_routing_header,
)
from mcp_types.jsonrpc import CONNECTION_CLOSED, HEADER_MISMATCH, INTERNAL_ERROR, INVALID_PARAMS
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..credential_token import action_scope, resource_action_name
from ..identity import Identity, SVIDVerifier
from .pdp_client import CallerCredentials, PDPClient, PDPRefused, PDPUnavailable
from .upstream import Upstream, operation_of, sensitivity_of

log = logging.getLogger("pdp.mcp")

__all__ = ["CONTEXT_FIELDS", "DENIED", "GatewayConfig", "McpGateway", "build_app"]

#: JSON-RPC error of a call the policy denied (AuthZEN MCP binding draft).
DENIED: Final = -32001
#: Largest request body the gateway reads, bytes.
MAX_BODY: Final = 1024 * 1024
#: Decision-request field -> (HTTP header, ``_meta`` key) it may come from.
CONTEXT_FIELDS: Final = {
    "tenant": ("x-pdp-tenant", "agent-pdp/tenant"),
    "task_id": ("x-pdp-task-id", "agent-pdp/task-id"),
    "purpose": ("x-pdp-task-purpose", "agent-pdp/task-purpose"),
    "session": ("x-pdp-session", "agent-pdp/session"),
    "delegation": ("x-pdp-delegation", "agent-pdp/delegation"),
    # A retried call names the approval a human granted for it (docs/approvals.md).
    "approval_id": ("x-pdp-approval-id", "agent-pdp/approval-id"),
}
#: Methods passed to the SDK without a decision: protocol plumbing, no upstream data.
PLUMBING: Final = frozenset({"initialize", "ping", "server/discover"})
DECIDED: Final = frozenset(
    {"tools/list", "tools/call", "resources/list", "resources/read", "prompts/list", "prompts/get"}
)
_ID: Final = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


@dataclass(frozen=True)
class GatewayConfig:
    """What ``pdpctl mcp-gateway`` needs; built from its flags."""

    #: The PDP (its decision API), e.g. http://127.0.0.1:8700.
    pdp_url: str
    #: Upstream name (the PDP destination) -> its MCP endpoint URL.
    upstreams: Mapping[str, str]
    #: Verifies agents' JWT-SVIDs (the PDP's trust bundles and audience).
    verifier: SVIDVerifier
    host: str = "127.0.0.1"
    port: int = 8710
    #: The URL agents reach the gateway at (resource metadata); default http://host:port.
    public_url: str | None = None
    pdp_timeout_s: float = 5.0
    upstream_timeout_s: float = 30.0
    #: How the gateway authenticates to the PDP as its caller (mTLS, caller key): needed
    #: when the PDP requires caller authentication; without it every call is refused.
    pdp_caller: CallerCredentials | None = None
    #: How long listed catalogs and per-agent list filters are reused, seconds.
    list_ttl_s: float = 30.0

    @property
    def resource_url(self) -> str:
        base = self.public_url or f"http://{self.host}:{self.port}"
        return base.rstrip("/") + "/mcp"


class SVIDTokenVerifier:
    """The SDK's TokenVerifier over agent-pdp's JWT-SVID verification (cached)."""

    def __init__(self, verifier: SVIDVerifier) -> None:
        self.verifier = verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        identity = self.verifier.verify(token)
        if not identity.authenticated or identity.spiffe_id is None:
            log.info("agent token refused: %s", identity.error_code)
            return None
        return AccessToken(
            token=token,
            client_id=identity.spiffe_id,
            scopes=[],
            expires_at=identity.expires_at,
            subject=identity.spiffe_id,
        )


class HeaderCheck:
    """ASGI middleware: mirrored Mcp-Method / Mcp-Name headers must match the body.

    Runs for every era (the SDK checks them itself on the 2026-07-28 wire only). A routing
    header given twice, or given with a batch, is refused too: two readers could disagree.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = {k.lower(): v for k, v in raw_headers}
        if MCP_METHOD_HEADER not in headers and MCP_NAME_HEADER not in headers:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY:
                await _reject(send, 413, INVALID_PARAMS, "request body too large")
                return
        problem = _header_problem(raw_headers, headers, bytes(body))
        if problem is not None:
            log.warning("refused a request whose headers disagree with its body: %s", problem)
            await _reject(send, 400, HEADER_MISMATCH, problem)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _header_problem(
    raw: Sequence[tuple[str, str]], headers: Mapping[str, str], body: bytes
) -> str | None:
    duplicated = find_duplicated_routing_header(raw)
    if duplicated is not None:
        return f"header {duplicated} is given more than once"
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "body is not JSON"
    if not isinstance(doc, dict):
        return "routing headers cannot describe a batch"
    method = doc.get("method")
    if MCP_METHOD_HEADER in headers and headers[MCP_METHOD_HEADER] != method:
        return f"{MCP_METHOD_HEADER} header does not match the body's method"
    if MCP_NAME_HEADER in headers:
        key = NAME_BEARING_METHODS.get(method) if isinstance(method, str) else None
        params = doc.get("params")
        value = params.get(key) if key is not None and isinstance(params, dict) else None
        if key is None or decode_header_value(headers[MCP_NAME_HEADER]) != value:
            return f"{MCP_NAME_HEADER} header does not match the body"
    return None


async def _reject(send: Send, status: int, code: int, message: str) -> None:
    body = orjson.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def listable(answer: dict[str, Any]) -> bool:
    """Whether a list check's answer shows the item: allowed, or denied for nothing but a
    missing approval (calling it opens one; a human decides)."""
    if answer.get("allow") is True:
        return True
    codes = {r.get("code") for r in answer.get("reasons") or () if isinstance(r, dict)}
    return codes == {"approval_required"}


def denied(message: str, data: dict[str, Any]) -> MCPError:
    """The -32001 error of a refused call."""
    return MCPError(DENIED, message, data)


@dataclass
class CallContext:
    """Who is calling, for what: from the request's headers and ``_meta``."""

    token: str
    identity: Identity
    fields: dict[str, str]
    protocol_version: str

    def request(self) -> dict[str, Any]:
        """The decision request's common part (agent, tenant, task)."""
        agent: dict[str, Any] = {"token": self.token}
        if "delegation" in self.fields:
            agent["delegation"] = self.fields["delegation"]
        task = {
            k: self.fields[f]
            for k, f in (("id", "task_id"), ("purpose", "purpose"), ("session", "session"))
            if f in self.fields
        }
        request: dict[str, Any] = {"agent": agent, "tenant": self.fields["tenant"]}
        if task:
            request["task"] = task
        if "approval_id" in self.fields:
            request["approval_id"] = self.fields["approval_id"]
        return request


@dataclass
class _ListFilter:
    revision: str | None
    expires: float
    allowed: dict[tuple[str, str, str], bool] = field(default_factory=dict)


class McpGateway:
    """The gateway's handlers: decide through the PDP, forward through the SDK client."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.pdp = PDPClient(
            config.pdp_url, timeout_s=config.pdp_timeout_s, caller=config.pdp_caller
        )
        self.upstreams = {
            name: Upstream(name, url, timeout_s=config.upstream_timeout_s, ttl_s=config.list_ttl_s)
            for name, url in config.upstreams.items()
        }
        self._filters: dict[tuple[str, str, str], _ListFilter] = {}
        self._revision: str | None = None

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        await self.pdp.start()

    async def close(self) -> None:
        await self.pdp.close()
        for upstream in self.upstreams.values():
            await upstream.close()

    # -- request context ----------------------------------------------------------------
    def context(self, ctx: ServerRequestContext[Any, Any]) -> CallContext:
        headers: Mapping[str, str] = getattr(ctx.request, "headers", None) or {}
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        identity = self.config.verifier.verify(token)
        meta = (ctx.params or {}).get("_meta") or {}
        fields: dict[str, str] = {}
        for name, (header, key) in CONTEXT_FIELDS.items():
            from_header, from_meta = headers.get(header), meta.get(key)
            if from_header is not None and from_meta is not None and from_header != from_meta:
                raise MCPError(INVALID_PARAMS, f"{header} and _meta {key!r} disagree")
            value = from_header if from_header is not None else from_meta
            if value is None and name == "session":
                value = headers.get("mcp-session-id")  # the handshake era's session
            if value is None:
                continue
            if not isinstance(value, str) or (
                name not in ("purpose", "delegation") and not _ID.fullmatch(value)
            ):
                raise MCPError(INVALID_PARAMS, f"{header} / _meta {key!r} is not a valid id")
            fields[name] = value
        if "tenant" not in fields:
            raise MCPError(
                INVALID_PARAMS, "the tenant is required: X-PDP-Tenant or _meta agent-pdp/tenant"
            )
        return CallContext(token, identity, fields, ctx.protocol_version)

    # -- the decision -------------------------------------------------------------------
    async def decide(self, request: dict[str, Any]) -> dict[str, Any]:
        """One decision; PDP failures become JSON-RPC errors (nothing is forwarded)."""
        try:
            answer = await self.pdp.decide(request)
        except PDPUnavailable as exc:
            log.warning("refused (PDP unavailable): %s", exc)
            raise MCPError(INTERNAL_ERROR, "the policy decision point is unavailable") from None
        except PDPRefused as exc:
            raise MCPError(INVALID_PARAMS, f"the PDP refused the request: {exc}") from None
        revision = (answer.get("policy") or {}).get("revision")
        if revision != self._revision:
            self._revision = revision
            self._filters.clear()  # another bundle: every cached list filter is stale
        return answer

    @staticmethod
    def refusal(answer: dict[str, Any]) -> MCPError | None:
        """The -32001 error for a decision that does not let the call through, or None."""
        data: dict[str, Any] = {
            "decision_id": answer.get("decision_id"),
            "reasons": answer.get("reasons", []),
        }
        approval = answer.get("approval") or (answer.get("obligations") or {}).get("approval")
        if approval:
            data["approval"] = approval
        if answer.get("allow") is not True:
            codes = ", ".join(str(r.get("code")) for r in data["reasons"]) or "denied"
            return denied(f"denied by policy: {codes}", data)
        if not (answer.get("credential") or {}).get("token"):
            # An allow the PDP minted nothing for (approval pending): nothing to forward with.
            return denied("allowed, but no credential was issued (approval pending?)", data)
        return None

    def _request(
        self,
        call: CallContext,
        method: str,
        *,
        action: dict[str, Any],
        upstream: str,
        sensitivity: str | None,
        check: bool = False,
    ) -> dict[str, Any]:
        request = call.request()
        if check:
            request["mode"] = "check"
            request.pop("task", None)  # a list is not a step of the task
            request.pop("approval_id", None)  # an approval is for one call, not a list
            if "purpose" in call.fields:
                request["task"] = {"purpose": call.fields["purpose"]}
        request["action"] = action
        request["destination"] = {"type": "tool", "name": upstream}
        if sensitivity is not None:
            request["data"] = {"sensitivity": sensitivity}
        request["context"] = {
            "mcp": {
                "method": method,
                "protocol_version": call.protocol_version,
                "upstream": upstream,
            }
        }
        return request

    async def forward(
        self,
        answer: dict[str, Any],
        upstream: Upstream,
        send: Callable[[Any], Awaitable[Any]],
    ) -> Any:
        """Call the upstream with the minted credential; report the outcome to the PDP."""
        credential = answer["credential"]["token"]
        started = time.perf_counter()
        status, error = "ok", None
        try:
            async with upstream.client(credential) as client:
                result = await send(client)
            if getattr(result, "is_error", False):
                status = "error"
            return result
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:  # no answer: the connection went away
                status, error = "unreachable", exc.message[:512]
                raise MCPError(INTERNAL_ERROR, f"upstream {upstream.name!r} failed") from None
            status, error = "error", f"{exc.code}: {exc.message}"[:512]
            raise
        except TimeoutError:
            status, error = "timeout", "no answer in time"
            raise MCPError(INTERNAL_ERROR, f"upstream {upstream.name!r} timed out") from None
        except Exception as exc:  # connection refused, protocol errors: not the agent's fault
            status, error = "unreachable", type(exc).__name__
            log.warning("upstream %s failed: %r", upstream.name, exc)
            raise MCPError(INTERNAL_ERROR, f"upstream {upstream.name!r} failed") from None
        finally:
            latency = round((time.perf_counter() - started) * 1e6)
            outcome = {
                "target": upstream.name,
                "status": status,
                "latency_us": latency,
                "error": error,
            }
            # Recorded in the background: the agent does not wait for the audit of an
            # outcome (the decision itself was recorded before it was answered).
            task = asyncio.create_task(self.pdp.outcome(answer["decision_id"], credential, outcome))
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)

    # -- catalog ------------------------------------------------------------------------
    async def catalogs(self) -> dict[str, Any]:
        results = await asyncio.gather(
            *(u.list() for u in self.upstreams.values()), return_exceptions=True
        )
        out: dict[str, Any] = {}
        for upstream, result in zip(self.upstreams.values(), results, strict=True):
            if isinstance(result, BaseException):
                log.warning("cannot list upstream %s: %r", upstream.name, result)
                continue
            out[upstream.name] = result
        return out

    async def locate(self, kind: str, name: str) -> tuple[Upstream, Any]:
        """The one upstream offering ``name`` (a tool, resource URI or prompt), listing
        again once if unknown. Offered by none, or by several (ambiguous): refused."""
        for attempt in range(2):
            found = []
            for upstream_name, catalog in (await self.catalogs()).items():
                for item in getattr(catalog, kind):
                    key = str(item.uri) if kind == "resources" else item.name
                    if key == name:
                        found.append((self.upstreams[upstream_name], item))
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise MCPError(INVALID_PARAMS, f"{name!r} is offered by several upstreams")
            if attempt == 0:
                for upstream in self.upstreams.values():
                    upstream.invalidate()
        raise MCPError(INVALID_PARAMS, f"no upstream offers {kind[:-1]} {name!r}")

    async def allowed_items(self, call: CallContext, kind: str, method: str) -> list[Any]:
        """Every item of ``kind`` this agent may use, decided per item (check mode)."""
        key = (
            call.identity.spiffe_id or "",
            call.fields["tenant"],
            call.fields.get("purpose", ""),
        )
        now = time.monotonic()
        cached = self._filters.get(key)
        if cached is None or cached.expires < now:
            cached = self._filters[key] = _ListFilter(self._revision, now + self.config.list_ttl_s)
        items: list[tuple[tuple[str, str, str], Any]] = []
        pending: dict[tuple[str, str, str], dict[str, Any]] = {}
        for upstream_name, catalog in (await self.catalogs()).items():
            for item in getattr(catalog, kind):
                name = str(item.uri) if kind == "resources" else item.name
                item_key = (kind, upstream_name, name)
                items.append((item_key, item))
                if item_key not in cached.allowed:
                    action, sensitivity = self._action(kind, item, arguments={})
                    pending[item_key] = self._request(
                        call, method, action=action, upstream=upstream_name,
                        sensitivity=sensitivity, check=True,
                    )  # fmt: skip
        if pending:
            answers = await asyncio.gather(*(self.decide(r) for r in pending.values()))
            filt = self._filters.setdefault(key, cached)
            for item_key, answer in zip(pending, answers, strict=True):
                filt.allowed[item_key] = listable(answer)
            cached = filt
        return [item for item_key, item in items if cached.allowed.get(item_key)]

    @staticmethod
    def _action(
        kind: str, item: Any, arguments: Mapping[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        if kind == "tools":
            action = {
                "type": "tool.call",
                "name": item.name,
                "operation": operation_of(item.annotations),
                "arguments": dict(arguments),
            }
        elif kind == "resources":
            uri = str(item.uri)
            action = {
                "type": "data.read",
                "name": resource_action_name(uri),
                "operation": "read",
                "arguments": {"uri": uri},
            }
        else:
            action = {
                "type": "data.read",
                "name": resource_action_name(item.name),
                "operation": "read",
                "arguments": dict(arguments),
            }
        return action, sensitivity_of(item.meta)

    # -- handlers -----------------------------------------------------------------------
    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        tools = await self.allowed_items(self.context(ctx), "tools", "tools/list")
        return types.ListToolsResult(tools=tools, cache_scope="private", ttl_ms=0)

    async def list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        items = await self.allowed_items(self.context(ctx), "resources", "resources/list")
        return types.ListResourcesResult(resources=items, cache_scope="private", ttl_ms=0)

    async def list_prompts(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        items = await self.allowed_items(self.context(ctx), "prompts", "prompts/list")
        return types.ListPromptsResult(prompts=items, cache_scope="private", ttl_ms=0)

    async def _decided_call(
        self,
        ctx: ServerRequestContext[Any, Any],
        kind: str,
        method: str,
        name: str,
        arguments: Mapping[str, Any],
        send: Callable[[Any], Awaitable[Any]],
    ) -> Any:
        call = self.context(ctx)
        upstream, item = await self.locate(kind, name)
        action, sensitivity = self._action(kind, item, arguments)
        request = self._request(
            call, method, action=action, upstream=upstream.name, sensitivity=sensitivity
        )
        answer = await self.decide(request)
        refusal = self.refusal(answer)
        if refusal is not None:
            log.info("%s %s denied (decision %s)", method, name, answer.get("decision_id"))
            raise refusal
        expected = action_scope(action)
        if answer["credential"].get("scope") not in (None, expected):
            raise MCPError(INTERNAL_ERROR, "the credential does not cover this call")
        return await self.forward(answer, upstream, send)

    # Each decided method: the call's name and arguments, and how to send it upstream.
    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        name, arguments = params.name, dict(params.arguments or {})
        result = await self._decided_call(
            ctx, "tools", "tools/call", name, arguments, lambda c: c.call_tool(name, arguments)
        )
        return cast(types.CallToolResult, result)

    async def read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        result = await self._decided_call(
            ctx, "resources", "resources/read", uri, {}, lambda c: c.read_resource(uri)
        )
        return cast(types.ReadResourceResult, result)

    async def get_prompt(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        name, arguments = params.name, dict(params.arguments or {})
        result = await self._decided_call(
            ctx, "prompts", "prompts/get", name, arguments, lambda c: c.get_prompt(name, arguments)
        )
        return cast(types.GetPromptResult, result)

    async def gate(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Server middleware: unmapped methods are refused before any handler runs."""
        if ctx.request_id is None or ctx.method in PLUMBING or ctx.method in DECIDED:
            return await call_next(ctx)
        reason = {
            "code": "mcp_method_not_allowed",
            "message": f"{ctx.method} is not mapped to a decision by the gateway",
            "rule": "pdp.mcp.gateway",
            "controls": [],
        }
        raise denied(f"method {ctx.method} is not allowed", {"reasons": [reason]})

    def server(self) -> Server[Any]:
        server: Server[Any] = Server(
            "agent-pdp-mcp-gateway",
            version="1",
            instructions="Every call is decided by agent-pdp before it is forwarded.",
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_read_resource=self.read_resource,
            on_list_prompts=self.list_prompts,
            on_get_prompt=self.get_prompt,
        )
        server.middleware.append(self.gate)
        return server


_BACKGROUND: set[asyncio.Task[None]] = set()


def build_app(config: GatewayConfig) -> Starlette:
    """The gateway's ASGI app: /mcp behind bearer auth and the header check, plus the
    RFC 9728 protected-resource metadata."""
    gateway = McpGateway(config)
    resource = AnyHttpUrl(config.resource_url)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=config.host in ("127.0.0.1", "localhost", "::1"),
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )
    manager = StreamableHTTPSessionManager(
        app=gateway.server(), security_settings=security, max_request_body_size=MAX_BODY
    )
    endpoint = RequireAuthMiddleware(
        HeaderCheck(StreamableHTTPASGIApp(manager)), [], build_resource_metadata_url(resource)
    )
    routes = [
        Route("/mcp", endpoint=endpoint),
        *create_protected_resource_routes(
            resource_url=resource,
            authorization_servers=[AnyHttpUrl(config.pdp_url)],
            resource_name="agent-pdp MCP gateway",
        ),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            async with manager.run():
                yield
        finally:
            await gateway.close()

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                AuthenticationMiddleware,
                backend=BearerAuthBackend(SVIDTokenVerifier(config.verifier)),
            ),
            Middleware(AuthContextMiddleware),
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app


def load_verifier(
    audience: str,
    trust_bundles: Mapping[str, Path],
    dev_trust_domains: Sequence[str],
    state_dir: Path,
    leeway_seconds: int = 30,
) -> SVIDVerifier:
    """The JWT-SVID verifier the PDP itself would build from the same settings."""
    from ..devtrust import ensure_dev_trust
    from ..identity import TrustBundles

    files: dict[str, Path] = {}
    dev = [d for d in dev_trust_domains if d not in trust_bundles]
    if dev:
        files.update(ensure_dev_trust(state_dir, dev))
    files.update(trust_bundles)
    return SVIDVerifier(TrustBundles.from_files(files), audience, leeway_seconds=leeway_seconds)
