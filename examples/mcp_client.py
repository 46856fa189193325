"""A tiny MCP client for the walkthrough (docs/mcp.md), on the official MCP SDK.

    python -m examples.mcp_client --token "$TOKEN" --task T-1 list
    python -m examples.mcp_client --token "$TOKEN" --task T-1 \\
        call hr.read_record '{"employee_id": "e-7"}'

It speaks to `pdpctl mcp-gateway` as an agent: its JWT-SVID is the bearer token, the
tenant, task, purpose and session go in the X-PDP-* headers. A refused call prints the
JSON-RPC error the gateway answered (-32001 with the decision's reasons, -32603 when the
PDP is unreachable) and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


async def run(args: argparse.Namespace) -> int:
    headers = {
        "Authorization": f"Bearer {args.token}",
        "X-PDP-Tenant": args.tenant,
        "X-PDP-Task-Id": args.task,
        "X-PDP-Task-Purpose": args.purpose,
        "X-PDP-Session": args.session or args.task,
    }
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(args.gateway, http_client=http)) as client:
            try:
                if args.command == "list":
                    for tool in (await client.list_tools()).tools:
                        print(f"{tool.name:<24} {tool.description or ''}")
                    return 0
                arguments = json.loads(args.arguments) if args.arguments else {}
                result = await client.call_tool(args.tool, arguments)
            except MCPError as exc:
                print(f"refused: {exc.code} {exc.message}")
                if exc.data is not None:
                    print(json.dumps(exc.data, indent=2))
                return 1
    for block in result.content:
        print(getattr(block, "text", block))
    return 1 if result.is_error else 0


def main() -> None:  # pragma: no cover - a command for the walkthrough
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:8710/mcp")
    parser.add_argument("--token", required=True, help="the agent's JWT-SVID")
    parser.add_argument("--tenant", default="acme")
    parser.add_argument("--task", required=True)
    parser.add_argument("--purpose", default="answer hr questions")
    parser.add_argument("--session", help="MCP session id [the task id]")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the tools this agent may call")
    call = sub.add_parser("call", help="call one tool")
    call.add_argument("tool")
    call.add_argument("arguments", nargs="?", help="JSON object")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":  # pragma: no cover
    main()
