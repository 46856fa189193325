"""Outcome records: what happened when an allowed call was forwarded (the MCP gateway).

``POST /v1/decisions/{decision_id}/outcome`` appends one ``type: "outcome"`` record to the
audit trail, linked to the decision by ``decision_id`` (pdp/schemas/audit-record.schema.json)::

    {"target": "hr-files", "status": "ok" | "error" | "unreachable" | "timeout",
     "latency_us": 1234, "error": "optional short text (never a payload)"}

The caller proves it holds the decision's credential: ``X-PDP-Credential: <credential>``
(so that a caller authenticating with a caller key keeps ``Authorization`` for it), else
``Authorization: Bearer <credential>``; a credential this PDP signed whose
``tctx.decision_id`` is the decision in the path (checked offline against the signing
keys; accepted up to :data:`OUTCOME_GRACE_S` past its ``exp``, since a slow target may
outlive a short credential). Nobody else can write an outcome, and
each credential can report for its own decision only. Answers 204; 401/403 otherwise.
"""

from __future__ import annotations

import time
from typing import Any, Final

import orjson
from aiohttp import web

from .credential_token import CredentialError, verify_credential
from .errors import AuthError, ForbiddenError, MalformedJSONError, RequestError
from .httpio import header
from .state import CREDENTIALS, RECORDER
from .target import OUTCOME_CREDENTIAL_HEADER, bearer_token
from .timefmt import rfc3339

__all__ = ["OUTCOME_GRACE_S", "add_routes"]

#: How long after its exp a credential may still report its call's outcome, seconds.
OUTCOME_GRACE_S: Final = 300
MAX_OUTCOME_BODY: Final = 4096
STATUSES: Final = ("ok", "error", "unreachable", "timeout")


def add_routes(app: web.Application) -> None:
    """Register the outcome route (it reads :data:`pdp.state.CREDENTIALS` and ``RECORDER``)."""
    app.router.add_post("/v1/decisions/{decision_id}/outcome", post_outcome)


def outcome_record(
    decision_id: str, claims: dict[str, Any], body: dict[str, Any], now_ns: int
) -> dict[str, Any]:
    """The audit record of one outcome (the trail adds seq, prev and hash)."""
    return {
        "type": "outcome",
        "time": rfc3339(now_ns),
        "decision_id": decision_id,
        "credential": {"jti": claims["jti"], "aud": claims.get("aud"), "scope": claims["scope"]},
        "agent": claims.get("sub"),
        "target": body["target"],
        "status": body["status"],
        "latency_us": body["latency_us"],
        "error": body.get("error"),
    }


def _validate(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedJSONError("body is not valid JSON") from None
    if not isinstance(body, dict) or set(body) - {"target", "status", "latency_us", "error"}:
        raise RequestError("body must be {target, status, latency_us, error?}")
    target, status, latency = body.get("target"), body.get("status"), body.get("latency_us")
    error = body.get("error")
    if not isinstance(target, str) or not 0 < len(target) <= 256:
        raise RequestError("target must be a non-empty string")
    if status not in STATUSES:
        raise RequestError(f"status must be one of {', '.join(STATUSES)}")
    if isinstance(latency, bool) or not isinstance(latency, int) or not 0 <= latency < 3.6e9:
        raise RequestError("latency_us must be a non-negative integer")
    if error is not None and (not isinstance(error, str) or len(error) > 512):
        raise RequestError("error must be a string of at most 512 characters")
    return body


async def post_outcome(request: web.Request) -> web.Response:
    """POST /v1/decisions/{decision_id}/outcome: record a forwarded call's outcome."""
    service, recorder = request.app[CREDENTIALS], request.app[RECORDER]
    decision_id = request.match_info["decision_id"]
    token = (header(request, OUTCOME_CREDENTIAL_HEADER) or "").strip() or bearer_token(request)
    if token is None:
        raise AuthError(
            f"an outcome is reported with the decision's credential in "
            f"{OUTCOME_CREDENTIAL_HEADER} (or as Bearer)"
        )
    try:
        claims = verify_credential(
            token,
            service.keyring.public_key,
            issuer=service.issuer,
            audience=None,
            scope=None,
            verify_time=False,
        )
    except CredentialError:
        raise ForbiddenError("the credential is not one this PDP issued") from None
    if time.time() > float(claims["exp"]) + OUTCOME_GRACE_S:
        raise ForbiddenError("the credential is too old to report an outcome")
    tctx = claims.get("tctx")
    if not isinstance(tctx, dict) or tctx.get("decision_id") != decision_id:
        raise ForbiddenError("the credential was not issued for this decision")
    if request.content_length is not None and request.content_length > MAX_OUTCOME_BODY:
        raise RequestError(f"body is larger than {MAX_OUTCOME_BODY} bytes")
    body = _validate(await request.read())
    await recorder.record(outcome_record(decision_id, claims, body, time.time_ns()))
    return web.Response(status=204)
