"""Envoy ext_authz, HTTP service mode: ``/ext_authz/<original path>`` (docs/gateways.md).

The gateway sends the original request's method, headers and path (appended to
``/ext_authz``) without its body; ``200`` allows, anything else denies (Envoy's HTTP
semantics; nginx ``auth_request`` reads 401/403 as deny and any other status as an error).

    allow  200, empty body; Authorization: Bearer <credential>, x-pdp-decision-id
           (and x-envoy-auth-headers-to-remove naming a non-Authorization token header)
    deny   403, JSON {allow: false, decision_id, reasons[, approval]}, x-pdp-decision-id
    down   503, JSON {allow: false, decision_id, error}
"""

from __future__ import annotations

from aiohttp import web

from ..callers import request_caller
from ..httpio import json_response
from ..routes import RouteTable
from ..state import DECISIONS
from .ext_authz import DECISION_HEADER, HttpAttributes, Verdict, check

__all__ = ["PREFIX", "add_routes"]

PREFIX = "/ext_authz"
_TABLE: web.AppKey[RouteTable] = web.AppKey("ext_authz_routes_http", RouteTable)


def add_routes(app: web.Application, table: RouteTable) -> None:
    """Serve the HTTP mode under ``/ext_authz/`` with the given route table."""
    app[_TABLE] = table
    app.router.add_route("*", PREFIX + "/{original:.*}", handle)


async def handle(request: web.Request) -> web.StreamResponse:
    """Any method on /ext_authz/<path>: may the original request go through? Asked by the
    authenticated caller (pdp.callers, the same middleware as every decision route)."""
    table = request.app[_TABLE]
    original = request.raw_path[len(PREFIX) :] or "/"
    headers: dict[str, str] = {}
    repeated: set[str] = set()
    for key, value in request.headers.items():
        name = key.lower()
        if name in headers:
            repeated.add(name)
        else:
            headers[name] = value
    attrs = HttpAttributes(
        method=request.method,
        host=request.headers.get("Host", ""),
        path=original,
        headers=headers,
        repeated=frozenset(repeated),
    )
    verdict = await check(request.app[DECISIONS], table, attrs, request_caller(request))
    return to_response(verdict)


def to_response(verdict: Verdict) -> web.Response:
    """The HTTP answer of a verdict."""
    if verdict.allowed:
        response = web.Response(status=200)
        response.headers["Authorization"] = f"Bearer {verdict.credential}"
        if verdict.remove_headers:
            response.headers["x-envoy-auth-headers-to-remove"] = ",".join(verdict.remove_headers)
    else:
        response = json_response(verdict.body(), verdict.status)
    if verdict.decision_id is not None:
        response.headers[DECISION_HEADER] = verdict.decision_id
    return response
