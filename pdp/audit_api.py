"""Routes of the audit trail's signing keys and checkpoints (thin: authorise, call, answer).

    GET  /.well-known/audit-jwks.json    public: every key that signed a checkpoint
    GET  /v1/audit/checkpoint            admin: the last signed checkpoint (an anchor to
                                         keep out of band for `audit verify
                                         --expect-checkpoint`)
    POST /v1/audit/keys/rotate           admin: a new audit-signing key, old ones stay
                                         published

404 when the trail or signing is off.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .audit.trail import AuditTrail
from .errors import PDPError
from .state import AUDIT, CREDENTIALS

log = logging.getLogger("pdp.admin")


class NotSigningError(PDPError):
    """The trail is off or not signed: there are no audit-signing keys."""

    status = 404
    code = "not_found"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/.well-known/audit-jwks.json", get_audit_jwks)
    app.router.add_get("/v1/audit/checkpoint", get_checkpoint)
    app.router.add_post("/v1/audit/keys/rotate", post_rotate)


def _trail(request: web.Request) -> AuditTrail:
    trail = request.app[AUDIT]
    if trail is None or trail.signer is None:
        raise NotSigningError("the audit trail is not signed here")
    return trail


async def get_audit_jwks(request: web.Request) -> web.Response:
    """GET /.well-known/audit-jwks.json: the public keys checkpoints verify with."""
    signer = _trail(request).signer
    assert signer is not None
    return web.Response(
        body=signer.jwks,
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=60"},
    )


async def get_checkpoint(request: web.Request) -> web.Response:
    """GET /v1/audit/checkpoint: the last checkpoint written (sealing the trail now)."""
    request.app[CREDENTIALS].auth.check(request)
    trail = _trail(request)
    trail.writer.request_checkpoint()
    for _ in range(100):  # the writer seals at its next turn; wait a little for it
        checkpoint = trail.writer.last_checkpoint
        if checkpoint is not None and checkpoint["seq"] >= trail.writer.log.seq:
            break
        await asyncio.sleep(0.01)
    if trail.writer.last_checkpoint is None:
        raise NotSigningError("no checkpoint has been written yet")
    return web.json_response(trail.writer.last_checkpoint, headers={"Cache-Control": "no-store"})


async def post_rotate(request: web.Request) -> web.Response:
    """POST /v1/audit/keys/rotate: sign from now on with a new key (published first)."""
    request.app[CREDENTIALS].auth.check(request)
    trail = _trail(request)
    signer = trail.signer
    assert signer is not None
    previous, current = await asyncio.to_thread(signer.rotate)
    log.warning("audit-signing key rotated by an admin: %s -> %s", previous, current)
    trail.writer.request_checkpoint()  # the first checkpoint under the new key
    return web.json_response({"previous": previous, "current": current})
