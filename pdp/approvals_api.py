"""Routes of approvers (admin credential or the separate approver credential):

    GET  /v1/approvals[?status=pending|granted|denied|expired|used]   newest first
    GET  /v1/approvals/{id}                                           one approval
    POST /v1/approvals/{id}/grant   {"approver"?, "note"?}            pending -> granted
    POST /v1/approvals/{id}/deny    {"approver"?, "note"?}            pending -> denied

Who decided (which credential, and the approver's name when given) and the note are kept
with the approval and in the audit trail. Deciding anything but a pending, unexpired
approval is 409 with its current status.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .approvals import ApprovalConflict, ApprovalService
from .errors import FieldError, MalformedJSONError, PDPError, RequestError
from .httpio import json_response, read_json_body
from .state import APPROVALS, CREDENTIALS

log = logging.getLogger("pdp.admin")

STATUSES = ("pending", "granted", "denied", "expired", "used")
MAX_APPROVER = 256
MAX_NOTE = 512
#: Largest body a grant or deny reads.
MAX_BODY = 16 * 1024


class ApprovalNotFoundError(PDPError):
    """No approval has this id."""

    status = 404
    code = "approval_not_found"


class ApprovalStateError(PDPError):
    """The approval is not pending (already decided, or expired)."""

    status = 409
    code = "approval_not_pending"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/approvals", get_approvals)
    app.router.add_get("/v1/approvals/{id}", get_approval)
    app.router.add_post("/v1/approvals/{id}/grant", post_grant)
    app.router.add_post("/v1/approvals/{id}/deny", post_deny)


def _service(request: web.Request) -> tuple[ApprovalService, str]:
    """The approval service, and which credential the caller presented."""
    by = request.app[CREDENTIALS].auth.check_approver(request)
    return request.app[APPROVALS], by


async def get_approvals(request: web.Request) -> web.Response:
    service, _ = _service(request)
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        raise RequestError(
            "bad query", fields=[FieldError("/status", f"must be one of {', '.join(STATUSES)}")]
        )
    return json_response({"approvals": await service.list(status)})


async def get_approval(request: web.Request) -> web.Response:
    service, _ = _service(request)
    approval = await service.get(request.match_info["id"])
    if approval is None:
        raise ApprovalNotFoundError("no approval has this id")
    return json_response(approval.view(service.clock()))


def _decision_body(body: dict[str, Any]) -> tuple[str | None, str | None]:
    fields: list[FieldError] = []
    values: dict[str, str | None] = {}
    for name, limit in (("approver", MAX_APPROVER), ("note", MAX_NOTE)):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= limit):
            fields.append(FieldError(f"/{name}", f"must be a string of 1..{limit} characters"))
        values[name] = value
    extra = sorted(set(body) - {"approver", "note"})
    if extra:
        fields.append(FieldError(f"/{extra[0]}", "is not allowed"))
    if fields:
        raise RequestError("request does not match the schema", fields=fields)
    return values["approver"], values["note"]


async def _decide(request: web.Request, *, grant: bool) -> web.Response:
    service, by = _service(request)
    body: Any = await read_json_body(request, MAX_BODY) if request.body_exists else {}
    if not isinstance(body, dict):
        raise MalformedJSONError("body must be a JSON object")
    approver, note = _decision_body(body)
    try:
        approval = await service.decide(
            request.match_info["id"], grant=grant, by=by, approver=approver, note=note
        )
    except ApprovalConflict as exc:
        if exc.approval is None:
            raise ApprovalNotFoundError("no approval has this id") from None
        raise ApprovalStateError(f"the approval is {exc.status}, not pending") from None
    return json_response(approval.view(service.clock()))


async def post_grant(request: web.Request) -> web.Response:
    """POST /v1/approvals/{id}/grant: the gateway may now re-send the call once (or
    ``uses`` times) within the grant's lifetime, with ``approval_id``."""
    return await _decide(request, grant=True)


async def post_deny(request: web.Request) -> web.Response:
    """POST /v1/approvals/{id}/deny: the call stays denied (approval_denied)."""
    return await _decide(request, grant=False)
