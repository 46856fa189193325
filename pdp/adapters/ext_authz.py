"""What both Envoy ext_authz modes share: an HTTP request -> a decision -> a verdict.

:func:`check` refuses a path with two readings, finds the route (:mod:`pdp.routes`), takes
the agent's JWT-SVID from the configured header, asks the decision service (same
authentication, normaliser, OPA client, minting and audit record as the JSON API) and
returns a :class:`Verdict` that the gRPC and HTTP modes put on the wire:

    allow                 200 / OkHttpResponse: Authorization: Bearer <minted credential>
                          (the agent's token is replaced, never passed on), x-pdp-decision-id
    deny                  403 / DeniedHttpResponse: JSON {allow, decision_id, reasons}
    approval pending      403 with the approval object in the JSON body
    engine/audit down     503 / gRPC UNAVAILABLE (Envoy: deny, failure_mode_allow: false)

Every deny is one audit record with the answered decision_id, also those made before a
decision request exists (no route, a path with two readings, a token header sent twice):
:meth:`DecisionService.refuse`. The authenticated caller (gateway) goes to the decision as
on the JSON API (``input.pep``, the record's ``caller``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..answer import reason
from ..callers import ANONYMOUS, Caller
from ..decision import DecisionService
from ..errors import PDPError, RequestError
from ..routes import RouteTable, clean_path
from ..textsafe import safe

__all__ = ["DECISION_HEADER", "HttpAttributes", "Verdict", "check"]

log = logging.getLogger("pdp.ext_authz")

#: Response header carrying the decision id (to the upstream on allow, the client on deny).
DECISION_HEADER = "x-pdp-decision-id"
#: Request header naming a granted approval for this call (docs/approvals.md).
APPROVAL_HEADER = "x-pdp-approval-id"
#: Longest original path (with query) considered; longer is denied.
MAX_PATH = 4096
_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_APPROVAL_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: The original request's host: a DNS name or IPv4 address, or a bracketed IPv6 address,
#: with an optional port (or nothing). Anything else (raw bytes, "/", "@", "%", spaces) is
#: a host two readers could take differently, and must not reach policy or the record.
_HOST_PATTERN = re.compile(r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9._-]{0,253})(?::[0-9]{1,5})?")


@dataclass(frozen=True, slots=True)
class HttpAttributes:
    """The original HTTP request as the gateway describes it."""

    method: str
    host: str
    #: Path with its query string, as sent.
    path: str
    #: Lower-case header names -> values. A header sent twice is one value per name in
    #: gRPC (Envoy joins them); the HTTP mode refuses the token header sent twice.
    headers: Mapping[str, str]
    #: Lower-case names of headers sent more than once (the HTTP mode sees them; Envoy's
    #: gRPC joins them into one value).
    repeated: frozenset[str] = frozenset()


@dataclass(slots=True)
class Verdict:
    """What the gateway is told."""

    #: 200 allow, 403 deny, 503 the PDP could not decide.
    status: int
    decision_id: str | None = None
    reasons: list[dict[str, Any]] = field(default_factory=list)
    #: The minted credential's token (allow only): the upstream's new Authorization.
    credential: str | None = None
    #: A pending approval (from the decision), shown to the client with the 403.
    approval: dict[str, Any] | None = None
    #: Why the PDP could not decide (503 only).
    error: str | None = None
    #: Headers to strip from the upstream request (the agent's token header).
    remove_headers: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.status == 200

    def body(self) -> dict[str, Any]:
        """The JSON body of a deny (or 503), for the client."""
        out: dict[str, Any] = {"allow": False, "decision_id": self.decision_id}
        if self.error is not None:
            out["error"] = {"code": "policy_engine_unavailable", "message": self.error}
        out["reasons"] = self.reasons
        if self.approval is not None:
            out["approval"] = self.approval
        return out

    def metadata(self) -> dict[str, Any]:
        """Envoy dynamic metadata: decision id, outcome and reasons."""
        return {
            "decision_id": self.decision_id,
            "allow": self.allowed,
            "reasons": [
                {"code": str(r.get("code")), "message": str(r.get("message", ""))}
                for r in self.reasons
            ],
        }


#: Longest part of the original request a refusal's reason quotes.
_QUOTE = 200


def _quote(attrs: HttpAttributes) -> str:
    """``METHOD host/path`` of the original request, bounded and safe to show; never its
    query string (which may carry secrets)."""
    text = f"{attrs.method[:16]} {attrs.host[:64]}{attrs.path.split('?', 1)[0]}"
    return safe(text if len(text) <= _QUOTE else text[:_QUOTE] + "...")


async def _refuse(
    service: DecisionService,
    request: dict[str, Any],
    code: str,
    message: str,
    caller: Caller,
) -> Verdict:
    """A deny made before any decision could be: recorded like every deny (one record,
    a decision_id, the reasons), or a 503 when the audit trail cannot take it."""
    try:
        response = await service.refuse(request, [reason(code, message)], caller=caller)
    except PDPError as exc:  # the audit trail is unavailable: nothing may be answered
        return Verdict(503, error=exc.message)
    log.info("ext_authz deny before a decision: %s (decision %s)", code, response["decision_id"])
    return Verdict(403, response["decision_id"], list(response["reasons"]))


async def check(
    service: DecisionService,
    table: RouteTable,
    attrs: HttpAttributes,
    caller: Caller = ANONYMOUS,
) -> Verdict:
    """Decide one HTTP request asked by ``caller`` (the authenticated gateway: input.pep and
    the record's ``caller``, exactly as on the JSON API). Never raises for a bad request:
    every deny, including those made before a decision request exists, is one audit record
    with a decision_id; a 503 verdict when the engine or the audit trail is unavailable."""
    rid = attrs.headers.get("x-request-id")
    base: dict[str, Any] = {}
    if rid is not None and _ID_PATTERN.match(rid) and "x-request-id" not in attrs.repeated:
        base["request_id"] = rid
    # A header the decision reads, sent twice, has two readings (which one routes, which
    # approval is presented): refused, as the token header is below.
    ambiguous = sorted(attrs.repeated & {"host", "x-request-id", APPROVAL_HEADER})
    if ambiguous:
        return await _refuse(
            service,
            base,
            "request.ambiguous_header",
            f"the {', '.join(ambiguous)} header was sent more than once",
            caller,
        )
    if not _HOST_PATTERN.fullmatch(attrs.host):
        return await _refuse(
            service,
            base,
            "request.invalid_host",
            "the original request's host is not a host name or address with an optional port",
            caller,
        )
    remove = (table.token_header,) if table.token_header != "authorization" else ()
    if len(attrs.path) > MAX_PATH:
        return await _refuse(
            service,
            base,
            "route.path_too_long",
            f"the request path is longer than {MAX_PATH}: {_quote(attrs)}",
            caller,
        )
    path = attrs.path.split("?", 1)[0]
    if not clean_path(path):
        return await _refuse(
            service,
            base,
            "route.ambiguous_path",
            f"the request path has more than one reading: {_quote(attrs)}",
            caller,
        )
    route = table.match(attrs.host, path, attrs.method)
    if route is None:
        return await _refuse(
            service,
            base,
            "route.unmatched",
            f"no route of the route file matches {_quote(attrs)}",
            caller,
        )
    context = {"http": {"method": attrs.method.upper(), "host": attrs.host, "path": path}}
    if table.token_header in attrs.repeated:
        request = route.decision_request(None, base.get("request_id"), context)
        return await _refuse(
            service,
            request,
            "request.ambiguous_token",
            f"the {table.token_header} header was sent more than once",
            caller,
        )
    token = table.token(attrs.headers.get(table.token_header))
    request = route.decision_request(token, base.get("request_id"), context)
    approval_id = attrs.headers.get(APPROVAL_HEADER)
    if approval_id is not None:
        if not _APPROVAL_PATTERN.match(approval_id):
            return await _refuse(
                service,
                _without_token(request),
                "request.invalid_approval_id",
                f"{APPROVAL_HEADER} is not an approval id",
                caller,
            )
        request["approval_id"] = approval_id
    try:
        response = await service.decide(request, caller=caller)
    except RequestError as exc:  # a route whose request normalisation refuses (a bad URL)
        return await _refuse(
            service,
            _without_token(request),
            "route.invalid",
            f"route {route.name!r}: {exc.message}",
            caller,
        )
    except PDPError as exc:  # engine or audit trail unavailable: the PDP cannot decide
        return Verdict(503, getattr(exc, "decision_id", None), error=exc.message)
    decision_id = response["decision_id"]
    approval = response.get("approval")
    if response["allow"] is not True:
        return Verdict(403, decision_id, list(response.get("reasons", [])), approval=approval)
    credential = (response.get("credential") or {}).get("token")
    if not credential:  # allowed but nothing to present upstream: fail closed
        return Verdict(
            403,
            decision_id,
            [reason("credential.unavailable", "allowed, but no credential could be minted")],
        )
    return Verdict(200, decision_id, [], credential=credential, remove_headers=remove)


def _without_token(request: dict[str, Any]) -> dict[str, Any]:
    """The request as a refusal records it: the agent's token is never kept."""
    return {**request, "agent": {}}
