"""An example MCP server behind `pdpctl mcp-gateway`, built with the official MCP SDK.

Two catalogs, picked by ``--name`` (the name is also the PDP destination and the audience
its credentials must carry)::

    hr-files   hr.read_record (restricted, read), hr.list_employees (internal, read),
               hr.delete_record (destructive), resource hr://policies/leave, prompt hr.summarize
    web        web.fetch (read, open world), web.post (write, open world)

Every tools/call, resources/read and prompts/get must carry an agent-pdp credential as its
bearer token; the server verifies it with :class:`pdp.target.CredentialVerifier` (the PDP's
JWKS; audience = this server's name, scope = exactly this tool or resource), so a call that
bypasses the gateway, or replays a credential minted for another tool, is refused. Listing
is open (metadata only). Each tool declares its data sensitivity in ``_meta`` under
``agent-pdp/sensitivity``, which the gateway passes to the PDP as ``data.sensitivity``.

Run (docs/mcp.md)::

    python -m examples.mcp_server --name hr-files --port 19110 --pdp http://127.0.0.1:8700
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette

from pdp.credential_token import CredentialError, action_scope, resource_action_name
from pdp.target import CredentialVerifier

SENSITIVITY_META = "agent-pdp/sensitivity"
#: JSON-RPC code this server answers a refused credential with.
CREDENTIAL_REFUSED = -32001

READ = types.ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
CHANGE = types.ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)
WEB_READ = types.ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=True)
WEB_WRITE = types.ToolAnnotations(
    read_only_hint=False, destructive_hint=False, open_world_hint=True
)

ID_ARG = {"type": "object", "properties": {"employee_id": {"type": "string"}}}
URL_ARG = {"type": "object", "properties": {"url": {"type": "string"}, "body": {"type": "string"}}}

CATALOGS: dict[str, list[tuple[str, str, types.ToolAnnotations, dict[str, Any], str]]] = {
    "hr-files": [
        ("hr.read_record", "An employee's HR record.", READ, ID_ARG, "restricted"),
        ("hr.list_employees", "Names and teams of all employees.", READ, {}, "internal"),
        ("hr.delete_record", "Delete an employee's HR record.", CHANGE, ID_ARG, "restricted"),
    ],
    "web": [
        ("web.fetch", "Fetch a public web page.", WEB_READ, URL_ARG, "public"),
        ("web.post", "Post a form to a web site.", WEB_WRITE, URL_ARG, "internal"),
    ],
}


def operation_of(annotations: types.ToolAnnotations | None) -> str:
    """The operation a tool's annotations declare (as the gateway derives it)."""
    if annotations is not None and annotations.read_only_hint:
        return "read"
    if annotations is not None and annotations.destructive_hint is False:
        return "write"
    return "delete" if annotations is not None and annotations.destructive_hint else "execute"


@dataclass
class ExampleServer:
    """One example upstream: its MCP server, and what it saw (for tests and the demo)."""

    name: str
    #: The PDP whose credentials this server accepts; None accepts every call (tests only).
    pdp_url: str | None
    #: Every call that reached the server: (method, name, verified claims or the refusal).
    seen: list[dict[str, Any]] = field(default_factory=list)
    _verifier: CredentialVerifier | None = field(default=None, repr=False)

    async def close(self) -> None:
        if self._verifier is not None:
            await self._verifier.close()

    def tools(self) -> list[types.Tool]:
        return [
            types.Tool(
                name=tool,
                description=text,
                input_schema={"type": "object", **schema} if schema else {"type": "object"},
                annotations=annotations,
                _meta={SENSITIVITY_META: sensitivity},
            )
            for tool, text, annotations, schema, sensitivity in CATALOGS[self.name]
        ]

    async def _verify(self, ctx: ServerRequestContext[Any, Any], method: str, scope: str) -> Any:
        headers: Mapping[str, str] = getattr(ctx.request, "headers", None) or {}
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        entry: dict[str, Any] = {"method": method, "scope": scope}
        self.seen.append(entry)
        if self.pdp_url is None:
            entry["claims"] = None
            return None
        if self._verifier is None:  # made on the event loop: it opens an HTTP session
            self._verifier = CredentialVerifier(pdp_url=self.pdp_url, audience=self.name)
        try:
            claims = await self._verifier.verify(token, scope)
        except CredentialError as exc:
            entry["refused"] = exc.code
            raise MCPError(CREDENTIAL_REFUSED, f"credential refused: {exc.code}") from None
        entry["claims"] = {k: claims.get(k) for k in ("sub", "aud", "scope", "jti", "tenant")}
        return claims

    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self.tools())

    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        tool = {t.name: t for t in self.tools()}.get(params.name)
        if tool is None:
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {params.name!r}")
        op = operation_of(tool.annotations)
        scope = action_scope({"type": "tool.call", "name": tool.name, "operation": op})
        claims = await self._verify(ctx, "tools/call", scope)
        text = f"{self.name}: {tool.name} ran with {dict(params.arguments or {})}"
        if claims is not None:
            text += f" for {claims['sub']} (credential {claims['jti']}, scope {claims['scope']})"
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    async def list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        if self.name != "hr-files":
            return types.ListResourcesResult(resources=[])
        leave = types.Resource(
            name="leave policy",
            uri="hr://policies/leave",
            mime_type="text/plain",
            _meta={SENSITIVITY_META: "internal"},
        )
        return types.ListResourcesResult(resources=[leave])

    async def read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        name = resource_action_name(uri)
        await self._verify(ctx, "resources/read", action_scope(_read(name)))
        text = "25 days of paid leave a year." if uri == "hr://policies/leave" else ""
        contents: list[types.TextResourceContents | types.BlobResourceContents] = [
            types.TextResourceContents(uri=uri, mime_type="text/plain", text=text)
        ]
        return types.ReadResourceResult(contents=contents)

    async def list_prompts(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        if self.name != "hr-files":
            return types.ListPromptsResult(prompts=[])
        return types.ListPromptsResult(
            prompts=[types.Prompt(name="hr.summarize", description="Summarise an HR case")]
        )

    async def get_prompt(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        name = resource_action_name(params.name)
        await self._verify(ctx, "prompts/get", action_scope(_read(name)))
        message = types.PromptMessage(
            role="user", content=types.TextContent(type="text", text="Summarise this HR case.")
        )
        return types.GetPromptResult(messages=[message])

    def server(self) -> Server[Any]:
        return Server(
            self.name,
            version="1.0",
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_read_resource=self.read_resource,
            on_list_prompts=self.list_prompts,
            on_get_prompt=self.get_prompt,
        )

    def app(self, host: str = "127.0.0.1") -> Starlette:
        """The Streamable HTTP app at /mcp (the SDK's, DNS-rebinding protection on)."""
        return self.server().streamable_http_app(host=host)


def _read(name: str) -> dict[str, str]:
    return {"type": "data.read", "name": name, "operation": "read"}


def example_server(name: str, pdp_url: str | None) -> ExampleServer:
    """An example upstream; with ``pdp_url`` it verifies credentials against that PDP."""
    if name not in CATALOGS:
        raise ValueError(f"unknown example server {name!r}; one of {', '.join(CATALOGS)}")
    return ExampleServer(name, pdp_url)


def main() -> None:  # pragma: no cover - a command for the walkthrough
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", choices=sorted(CATALOGS), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pdp", default="http://127.0.0.1:8700", help="PDP URL (its JWKS)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    example = example_server(args.name, args.pdp)
    print(f"example MCP server {args.name!r} on http://{args.host}:{args.port}/mcp", flush=True)
    uvicorn.run(example.app(args.host), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":  # pragma: no cover
    main()
