"""Routes of the credential and admin API (all thin: parse, authorise, call, answer).

    GET  /.well-known/jwks.json          public: keys that verify credentials
    POST /v1/credentials/introspect      RFC 7662   admin or introspection credential
    POST /v1/credentials/revoke          RFC 7009   admin credential
    GET  /v1/agents                      every agent seen, with status and activity
    POST /v1/agents/disable              {"spiffe_id", "reason"}
    POST /v1/agents/enable               {"spiffe_id", "reason"?}
    GET  /v1/keys                        signing keys (metadata, no key material)
    POST /v1/keys/rotate                 new current key on every replica

Every admin action is logged on ``pdp.admin`` (never a token).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .credentials import CredentialService
from .errors import FieldError, RequestError, StoreError, UnsupportedMediaError
from .httpio import header, read_form, read_json_object
from .identity import parse_spiffe_id
from .state import CREDENTIALS
from .store import AgentStatus

log = logging.getLogger("pdp.admin")

#: Largest body an admin endpoint reads (a credential is at most 16 KiB).
MAX_ADMIN_BODY = 32 * 1024
MAX_REASON = 512


#: The admin surface: served apart from the decision API (pdp.server), with its own
#: credential (never a caller key or client certificate).
ADMIN_PATHS = frozenset(
    {
        "/v1/credentials/introspect",
        "/v1/credentials/revoke",
        "/v1/agents",
        "/v1/agents/disable",
        "/v1/agents/enable",
        "/v1/keys",
        "/v1/keys/rotate",
        "/metrics",
    }
)


#: Prefixes of admin paths with parameters (the approvals API, pdp.approvals_api).
ADMIN_PREFIXES = ("/v1/approvals",)


def is_admin_path(path: str) -> bool:
    """Whether ``path`` belongs to the admin surface (its own credential, its own listener)."""
    return path in ADMIN_PATHS or any(path == p or path.startswith(p + "/") for p in ADMIN_PREFIXES)


def add_routes(app: web.Application) -> None:
    """Register the credential and admin routes on ``app``; they use the running
    :class:`CredentialService` under :data:`pdp.state.CREDENTIALS`."""
    app.router.add_get("/.well-known/jwks.json", get_jwks)
    app.router.add_post("/v1/credentials/introspect", post_introspect)
    app.router.add_post("/v1/credentials/revoke", post_revoke)
    app.router.add_get("/v1/agents", get_agents)
    app.router.add_post("/v1/agents/disable", post_disable)
    app.router.add_post("/v1/agents/enable", post_enable)
    app.router.add_get("/v1/keys", get_keys)
    app.router.add_post("/v1/keys/rotate", post_rotate)


def _service(request: web.Request) -> CredentialService:
    return request.app[CREDENTIALS]


def _json(body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, headers=headers)


async def _body(request: web.Request, *, form: bool) -> dict[str, Any]:
    """A strict JSON object, or (when ``form``) an application/x-www-form-urlencoded body
    in which every parameter appears once (pdp.httpio); at most MAX_ADMIN_BODY bytes
    (413 beyond, whether or not a Content-Length says so)."""
    header(request, "Content-Type")
    if form and request.content_type == "application/x-www-form-urlencoded":
        return dict(await read_form(request, MAX_ADMIN_BODY))
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        wanted = "application/json or application/x-www-form-urlencoded" if form else "JSON"
        raise UnsupportedMediaError(f"Content-Type must be {wanted}")
    return await read_json_object(request, MAX_ADMIN_BODY)


def _token(body: dict[str, Any]) -> str:
    token = body.get("token")
    if not isinstance(token, str) or not token:
        raise RequestError(
            "the request names no token", fields=[FieldError("/token", "is required")]
        )
    return token


async def get_jwks(request: web.Request) -> web.Response:
    """GET /.well-known/jwks.json: current and still-needed previous public keys (read
    from the store, so a key another replica created a moment ago is already in it)."""
    service = _service(request)
    try:
        await service.keyring.reload()
    except StoreError as exc:  # serve the keys we have
        log.warning("JWKS served from cache: %s", exc)
    return web.Response(
        body=service.keyring.jwks,
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=60"},
    )


async def post_introspect(request: web.Request) -> web.Response:
    """POST /v1/credentials/introspect (RFC 7662)."""
    service = _service(request)
    service.auth.check(request, introspection=True)
    answer = await service.introspect(_token(await _body(request, form=True)))
    return _json(answer, {"Cache-Control": "no-store"})


async def post_revoke(request: web.Request) -> web.Response:
    """POST /v1/credentials/revoke (RFC 7009): 200 whether or not the token was known."""
    service = _service(request)
    service.auth.check(request)
    await service.revoke(_token(await _body(request, form=True)))
    return _json({"revoked": True})


async def get_agents(request: web.Request) -> web.Response:
    """GET /v1/agents: every agent seen, its status and activity."""
    service = _service(request)
    service.auth.check(request)
    agents = await service.agents.list()
    return _json({"agents": [a.to_json() for a in agents]})


def _agent_change(body: dict[str, Any], *, reason_required: bool) -> tuple[str, str | None]:
    fields: list[FieldError] = []
    spiffe_id = body.get("spiffe_id")
    if not isinstance(spiffe_id, str):
        fields.append(FieldError("/spiffe_id", "is required and must be a string"))
    else:
        try:
            _, path = parse_spiffe_id(spiffe_id)
        except ValueError as exc:
            fields.append(FieldError("/spiffe_id", str(exc)))
        else:
            if not path:
                fields.append(FieldError("/spiffe_id", "must name a workload (a path)"))
    reason = body.get("reason")
    if reason is None and reason_required:
        fields.append(FieldError("/reason", "is required"))
    elif reason is not None and (not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON):
        fields.append(FieldError("/reason", f"must be a string of 1..{MAX_REASON} characters"))
    extra = sorted(set(body) - {"spiffe_id", "reason"})
    if extra:
        fields.append(FieldError(f"/{extra[0]}", "is not allowed"))
    if fields:
        raise RequestError("request does not match the schema", fields=fields)
    assert isinstance(spiffe_id, str)
    return spiffe_id, reason


async def _set_status(request: web.Request, status: AgentStatus, verb: str) -> web.Response:
    """Set an agent's status from the admin body ``{"spiffe_id", "reason"}`` (a reason is
    required to disable); logged with the admin's reason."""
    service = _service(request)
    service.auth.check(request)
    body = await _body(request, form=False)
    spiffe_id, reason = _agent_change(body, reason_required=status == "disabled")
    state = await service.agents.set_status(spiffe_id, status, reason)
    log.warning("agent %s %s by an admin: %s", spiffe_id, verb, reason)
    return _json({"spiffe_id": spiffe_id, "status": state.status, "reason": state.reason})


async def post_disable(request: web.Request) -> web.Response:
    """POST /v1/agents/disable: later decisions deny, issued credentials turn inactive."""
    return await _set_status(request, "disabled", "disabled")


async def post_enable(request: web.Request) -> web.Response:
    """POST /v1/agents/enable: decisions are evaluated again; old credentials stay dead."""
    return await _set_status(request, "active", "enabled")


async def get_keys(request: web.Request) -> web.Response:
    """GET /v1/keys: the signing keys in the JWKS, and which one this replica signs with."""
    service = _service(request)
    service.auth.check(request)
    ring = service.keyring
    return _json(
        {
            "node": ring.node,
            "current": ring.current.kid,
            "keys": [r.public_view() for r in ring.records()],
        }
    )


async def post_rotate(request: web.Request) -> web.Response:
    """POST /v1/keys/rotate: a new current key here now, on the other replicas at once."""
    service = _service(request)
    service.auth.check(request)
    previous = service.keyring.current.kid
    record = await service.keyring.rotate()
    log.warning("signing key rotated by an admin: %s -> %s", previous, record.kid)
    return _json({"previous": previous, "current": record.kid, "generation": record.generation})
