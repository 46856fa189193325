#!/usr/bin/env python3
"""An example target service ("jira") that accepts only calls carrying a valid agent-pdp
credential: layered enforcement, so an agent that bypasses the gateway gets nothing.

    python examples/target_service.py --pdp-url http://127.0.0.1:8700 --port 8801 \\
        [--introspection-token-file .pdp-state/admin-token]

Routes and the scope each one needs (the PDP's scope is ``<type>:<name>:<operation>``):

    GET  /rest/api/2/search   tool.call:jira.search_issues:read
    POST /rest/api/2/issue    tool.call:jira.create_issue:write
    GET  /healthz             open

Try it: get a decision for examples/requests/allow-support-bot-jira-search.json, then
``curl -H "Authorization: Bearer $CREDENTIAL" http://127.0.0.1:8801/rest/api/2/search``;
without the header, or with a credential for another tool or operation, it answers 401/403.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from pdp.target import CLAIMS, CredentialVerifier, credential_middleware

#: (method, path) -> the scope a credential must carry for it.
SCOPES = {
    ("GET", "/rest/api/2/search"): "tool.call:jira.search_issues:read",
    ("POST", "/rest/api/2/issue"): "tool.call:jira.create_issue:write",
}
OPEN = {("GET", "/healthz")}
VERIFIER = web.AppKey("verifier", CredentialVerifier)


def scope_for(request: web.Request) -> str | None:
    """The scope a route needs; unknown routes need an impossible one (deny by default)."""
    route = (request.method, request.path)
    if route in OPEN:
        return None
    return SCOPES.get(route, "none:none:none")


async def search(request: web.Request) -> web.Response:
    claims = request[CLAIMS]
    return web.json_response(
        {"issues": [{"key": "SUP-1", "summary": "printer on fire"}], "for": claims["sub"]}
    )


async def create_issue(request: web.Request) -> web.Response:
    return web.json_response({"key": "SUP-2", "created_by": request[CLAIMS]["sub"]}, status=201)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(verifier: CredentialVerifier) -> web.Application:
    """The target app; the verifier decides who gets in (closed on app cleanup)."""
    app = web.Application(middlewares=[credential_middleware(verifier, scope_for)])
    app[VERIFIER] = verifier

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[VERIFIER].close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/rest/api/2/search", search)
    app.router.add_post("/rest/api/2/issue", create_issue)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pdp-url", default="http://127.0.0.1:8700")
    ap.add_argument("--audience", default="jira", help="this service's name (the aud)")
    ap.add_argument("--issuer", default="agent-pdp", help="the PDP's PDP_ISSUER")
    ap.add_argument("--introspection-token-file", type=Path, default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8801)
    args = ap.parse_args()
    token = None
    if args.introspection_token_file is not None:
        token = args.introspection_token_file.read_text().strip()

    async def make() -> web.Application:
        verifier = CredentialVerifier(
            pdp_url=args.pdp_url,
            audience=args.audience,
            issuer=args.issuer,
            introspection_token=token,
        )
        return create_app(verifier)

    web.run_app(make(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
