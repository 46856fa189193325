"""Errors the service turns into HTTP answers.

Every error body carries ``"allow": false`` so that a naive client fails closed.

    PDPError                      500 internal
    ├── RequestError              400 invalid request (with field errors)
    │   ├── MalformedJSONError    400 body is not JSON / not an object
    │   ├── UnsupportedMediaError 415 Content-Type is not application/json
    │   └── BodyTooLargeError     413 body over the configured limit
    ├── AuthError                 401 admin endpoint without a credential
    │   └── ForbiddenError        403 admin endpoint with the wrong credential
    ├── EngineUnavailableError    503 OPA cannot be reached or did not answer in time
    ├── AuditUnavailableError     503 the decision could not be recorded durably
    └── HistoryUnavailableError   503 an allowed call could not be added to its session history

Policy-level failures (OPA answered nonsense, undefined decision) are *not* errors:
they are deny decisions with a ``policy.*`` reason, answered with 200.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field of a request, addressed by a JSON-pointer-like path."""

    path: str
    message: str


class PDPError(Exception):
    """Base of every error the service maps to an HTTP status and JSON body."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, fields: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []

    def body(self) -> dict[str, Any]:
        """The JSON body answered for this error."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = [{"path": f.path, "message": f.message} for f in self.fields]
        return {"allow": False, "error": error}


class RequestError(PDPError):
    """The request body does not match the decision request schema."""

    status = 400
    code = "invalid_request"


class MalformedJSONError(RequestError):
    """The body is not a JSON object."""

    code = "malformed_json"


class UnsupportedMediaError(RequestError):
    """The body is not declared as JSON."""

    status = 415
    code = "unsupported_media_type"


class BodyTooLargeError(RequestError):
    """The body is larger than the configured limit."""

    status = 413
    code = "body_too_large"


class AuthError(PDPError):
    """The caller of an administrative endpoint did not authenticate."""

    status = 401
    code = "unauthenticated"


class ForbiddenError(AuthError):
    """The caller of an administrative endpoint presented a wrong credential."""

    status = 403
    code = "forbidden"


class EngineUnavailableError(PDPError):
    """The policy engine could not be reached or did not answer within the deadline."""

    status = 503
    code = "policy_engine_unavailable"

    def __init__(
        self, message: str, *, kind: str = "connection", decision_id: str | None = None
    ) -> None:
        super().__init__(message)
        #: "connection" or "timeout": what the metrics count.
        self.kind = kind
        #: The id the failed decision was recorded under, when there was one.
        self.decision_id = decision_id

    def body(self) -> dict[str, Any]:
        body = super().body()
        if self.decision_id is not None:
            body["decision_id"] = self.decision_id
        return body


class AuditUnavailableError(PDPError):
    """The decision could not be made durable in the audit trail (disk full, permission)."""

    status = 503
    code = "audit_unavailable"


class HistoryUnavailableError(PDPError):
    """An allowed decision could not be added to its task/session history (pdp.sessions):
    its credential is withheld, since the next call would be decided without it."""

    status = 503
    code = "session_history_unavailable"

    def __init__(self, message: str, *, decision_id: str | None = None) -> None:
        super().__init__(message)
        self.decision_id = decision_id

    def body(self) -> dict[str, Any]:
        body = super().body()
        if self.decision_id is not None:
            body["decision_id"] = self.decision_id
        return body
