"""Errors the service turns into HTTP answers.

Every error body carries ``"allow": false`` so that a naive client fails closed.

    PDPError                      500 internal
    ├── RequestError              400 invalid request (with field errors)
    │   ├── MalformedJSONError    400 body is not JSON / not an object
    │   ├── UnsupportedMediaError 415 Content-Type is not application/json
    │   ├── BodyTooLargeError     413 body over the configured limit
    │   └── RequestTimeoutError   408 the body did not arrive in time
    ├── AuthError                 401 admin endpoint without a credential
    │   ├── ForbiddenError        403 admin endpoint with the wrong credential
    │   └── CallerAuthError       401 the caller (PEP) did not authenticate (pdp.callers)
    ├── OverloadedError           503 too many decisions in flight (Retry-After)
    ├── InternalDecisionError     500 a bug while deciding; recorded as an error deny
    ├── EngineUnavailableError    503 OPA cannot be reached or did not answer in time
    └── AuditUnavailableError     503 the decision could not be recorded durably

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


class RequestTimeoutError(RequestError):
    """The client did not send its body within the body read timeout."""

    status = 408
    code = "request_timeout"


class CallerAuthError(AuthError):
    """The caller (the gateway, the PEP) presented no acceptable client certificate or
    caller key; answered before any agent token is looked at."""

    code = "caller_unauthenticated"


class OverloadedError(PDPError):
    """Every evaluation slot is taken: answered at once, never queued (Retry-After)."""

    status = 503
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        #: Seconds the client should wait; sent as the Retry-After header.
        self.retry_after_s = retry_after_s


class InternalDecisionError(PDPError):
    """A decision failed on a bug. It was recorded as an error deny under ``decision_id``,
    which the body carries so the answer can be found in the audit trail."""

    status = 500
    code = "internal"

    def __init__(self, *, decision_id: str) -> None:
        super().__init__("internal error; the decision is recorded as a deny")
        self.decision_id = decision_id

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["decision_id"] = self.decision_id
        return body
