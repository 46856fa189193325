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
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..answer import reason
from ..decision import DecisionService
from ..errors import PDPError, RequestError
from ..routes import RouteTable, clean_path

__all__ = ["DECISION_HEADER", "HttpAttributes", "Verdict", "check"]

log = logging.getLogger("pdp.ext_authz")

#: Response header carrying the decision id (to the upstream on allow, the client on deny).
DECISION_HEADER = "x-pdp-decision-id"
#: Longest original path (with query) considered; longer is denied.
MAX_PATH = 4096
_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


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


def _deny(code: str, message: str) -> Verdict:
    log.info("ext_authz deny without a decision: %s", code)
    return Verdict(403, reasons=[reason(code, message)])


async def check(service: DecisionService, table: RouteTable, attrs: HttpAttributes) -> Verdict:
    """Decide one HTTP request; never raises for a bad request (a deny), only a 503 verdict
    when the engine or the audit trail is unavailable."""
    if len(attrs.path) > MAX_PATH:
        return _deny("route.path_too_long", f"the request path is longer than {MAX_PATH}")
    path = attrs.path.split("?", 1)[0]
    if not clean_path(path):
        return _deny("route.ambiguous_path", "the request path has more than one reading")
    route = table.match(attrs.host, path, attrs.method)
    if route is None:
        return _deny("route.unmatched", "no route of the route file matches this request")
    token = table.token(attrs.headers.get(table.token_header))
    rid = attrs.headers.get("x-request-id")
    context = {"http": {"method": attrs.method.upper(), "host": attrs.host, "path": path}}
    request = route.decision_request(
        token, rid if rid is not None and _ID_PATTERN.match(rid) else None, context
    )
    remove = (table.token_header,) if table.token_header != "authorization" else ()
    try:
        response = await service.decide(request)
    except RequestError as exc:  # a route whose request normalisation refuses (a bad URL)
        return _deny("route.invalid", f"route {route.name!r}: {exc.message}")
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
