"""The one exception hierarchy: every error the service or the CLI reports.

Each class carries the HTTP ``status`` the error middleware answers, the ``code`` of the
JSON error body, and the ``exit_code`` `pdpctl` exits with (constants below). Third-party
errors (OSError, sqlite3, redis, PyJWT, aiohttp) are translated into one of these once,
where they happen (``raise StoreError(...) from exc``); nothing above that boundary
catches a foreign exception type. Every error body carries ``"allow": false`` so that a
naive client fails closed.

    PDPError                        500  exit 1   internal            (base)
    ├── RequestError                400  exit 9   invalid_request     (with field errors)
    │   ├── MalformedJSONError      400           body is not JSON / not an object
    │   ├── UnsupportedMediaError   415           Content-Type is not JSON
    │   ├── BodyTooLargeError       413           body over the limit (decision or admin API)
    │   └── RequestTimeoutError     408           the body did not arrive in time (pdp.httpio)
    ├── AuthError                   401  exit 8   admin endpoint without a credential
    │   ├── ForbiddenError          403           ... with the wrong credential
    │   └── CallerAuthError         401           the caller (PEP) did not authenticate
    ├── InternalDecisionError       500  exit 1   a bug while deciding, recorded as an error deny
    ├── UnavailableError            503  exit 8   a dependency cannot serve
    │   ├── OverloadedError         503           every evaluation slot is taken (Retry-After)
    │   ├── EngineUnavailableError  503           OPA unreachable or past its deadline
    │   ├── AuditUnavailableError   503           the decision could not be made durable
    │   ├── HistoryUnavailableError 503           an allow could not enter its session history
    │   ├── StoreError              503           the shared store (pdp.store)
    │   ├── SidecarError            503           the embedded OPA did not start (pdp.sidecar)
    │   └── OCIError                503           the OCI registry is unreachable (pdp.oci)
    ├── ConfigError                 500  exit 9   a setting or input file is wrong (pdp.config)
    │   ├── TrustBundleError                      a trust bundle is unusable (pdp.identity)
    │   ├── DevTrustError                         a dev trust domain cannot be used (pdp.devtrust)
    │   ├── AuditReadError                        an audit file is not records (pdp.audit.segment)
    │   └── CheckpointError                       a checkpoint / audit JWKS is bad (.checkpoint)
    ├── ToolNotFoundError           500  exit 3   opa / regal missing (pdp.tools)
    ├── BundleError                 500  exit 4   policies do not compile (pdp.bundle)
    ├── AuditError                  503  exit 8   the trail cannot be written (pdp.audit.log)
    └── BundleSigningError          500  exit 9   opa could not sign a bundle (pdp.bundlesign)
        └── BundleInvalidError           exit 12  the bundle's signature does not verify

``ConfigError``, ``TrustBundleError``, ``DevTrustError`` and ``AuditReadError`` are also
``ValueError``\\ s; ``BundleError`` and ``ToolNotFoundError`` also ``RuntimeError``\\ s
(what they were before the hierarchy, so existing ``except`` clauses keep working).

Not in the hierarchy, on purpose: :class:`pdp.credential_token.CredentialError` belongs to
the target library (it is raised at a target service, answered by its own middleware);
``_Reject`` in :mod:`pdp.identity.svid` never leaves that module (a bad agent token is a
deny decision, not an error).

Policy-level failures (OPA answered nonsense, undefined decision) are *not* errors:
they are deny decisions with a ``policy.*`` reason, answered with 200.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

# -- pdpctl exit codes (docs/audit.md#pdpctl-ci lists them) -----------------------------
OK = 0
#: A check failed in a generic way (e.g. `decide` answer differs from `expect`).
FAILED = 1
#: Usage error (click's own).
USAGE = 2
#: A tool (opa, regal) is missing.
TOOL_MISSING = 3
#: Policies do not compile (`policy check`, `bundle build`).
DOES_NOT_COMPILE = 4
#: Policy tests failed or coverage is under the gate.
TESTS_FAILED = 5
#: Regal found lint violations.
LINT_FAILED = 6
#: Files are not `opa fmt` formatted (`policy fmt --check`).
NOT_FORMATTED = 7
#: The service could not be reached or answered an error.
SERVICE_ERROR = 8
#: Bad configuration or input file.
BAD_INPUT = 9
#: The audit trail failed verification (a record modified, deleted, reordered, truncated).
AUDIT_INVALID = 10
#: Replay found changed decisions that --fail-on refuses (e.g. access gained).
REPLAY_CHANGED = 11
#: A bundle's signature does not verify (unsigned, tampered with, another key).
BUNDLE_INVALID = 12
#: `pdpctl policy fuzz` found an input that breaks an invariant (policies/invariants/).
INVARIANT_VIOLATED = 13


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field of a request, addressed by a JSON-pointer-like path."""

    path: str
    message: str


class PDPError(Exception):
    """Base of every error the service maps to an HTTP status and the CLI to an exit code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    exit_code: ClassVar[int] = FAILED

    def __init__(
        self,
        message: str,
        *,
        fields: list[FieldError] | None = None,
        decision_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []
        #: The id the failed decision was recorded under in the audit trail, when there
        #: was one: the body carries it so the answer can be found there.
        self.decision_id = decision_id

    def body(self) -> dict[str, Any]:
        """The JSON body answered for this error."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = [{"path": f.path, "message": f.message} for f in self.fields]
        body: dict[str, Any] = {"allow": False, "error": error}
        if self.decision_id is not None:
            body["decision_id"] = self.decision_id
        return body


class RequestError(PDPError):
    """The request body does not match the decision request schema."""

    status = 400
    code = "invalid_request"
    exit_code = BAD_INPUT


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
    exit_code = SERVICE_ERROR


class ForbiddenError(AuthError):
    """The caller of an administrative endpoint presented a wrong credential."""

    status = 403
    code = "forbidden"


class UnavailableError(PDPError):
    """A dependency (policy engine, audit trail, store, OPA process) cannot serve now."""

    status = 503
    code = "unavailable"
    exit_code = SERVICE_ERROR


class EngineUnavailableError(UnavailableError):
    """The policy engine could not be reached or did not answer within the deadline."""

    code = "policy_engine_unavailable"

    def __init__(
        self, message: str, *, kind: str = "connection", decision_id: str | None = None
    ) -> None:
        super().__init__(message, decision_id=decision_id)
        #: "connection" or "timeout": what the metrics count.
        self.kind = kind


class AuditUnavailableError(UnavailableError):
    """The decision could not be made durable in the audit trail (disk full, permission)."""

    code = "audit_unavailable"


class HistoryUnavailableError(UnavailableError):
    """An allowed decision could not be added to its task/session history (pdp.sessions):
    its credential is withheld, since the next call would be decided without it."""

    code = "session_history_unavailable"

    def __init__(self, message: str, *, decision_id: str | None = None) -> None:
        super().__init__(message, decision_id=decision_id)


class StoreError(UnavailableError):
    """The store could not be reached or answered nonsense (names which store)."""

    code = "store_unavailable"


class SidecarError(UnavailableError, RuntimeError):
    """OPA could not be started or did not activate its bundle in time."""

    code = "policy_engine_unavailable"


class ConfigError(PDPError, ValueError):
    """A setting has a bad value; the message names the setting and the value."""

    code = "configuration"
    exit_code = BAD_INPUT


class TrustBundleError(ConfigError):
    """A trust bundle file or document is unusable (names the domain and the problem)."""


class DevTrustError(ConfigError):
    """A dev trust domain cannot be created or used (says which and what to do)."""


class AuditReadError(ConfigError):
    """An audit file cannot be read as records (not JSON, not an object)."""


class ToolNotFoundError(PDPError, RuntimeError):
    """A tool (opa, regal) is not installed where it is looked for."""

    exit_code = TOOL_MISSING


class BundleError(PDPError, RuntimeError):
    """The bundle could not be built; the message carries OPA's own output."""

    exit_code = DOES_NOT_COMPILE

    def __init__(self, message: str, *, missing_sources: bool = False) -> None:
        super().__init__(message)
        #: True when the policy directory has nothing to build (not a compile error).
        self.missing_sources = missing_sources


class AuditError(PDPError, RuntimeError):
    """The trail cannot be written (locked by another writer, closed, broken)."""

    status = 503
    code = "audit_unavailable"
    exit_code = SERVICE_ERROR

    def __init__(self, message: str, short: str | None = None) -> None:
        super().__init__(message)
        #: The message without paths, for a client's error body.
        self.short = short or message


class RequestTimeoutError(RequestError):
    """The client did not send its body within the body read timeout."""

    status = 408
    code = "request_timeout"


class CallerAuthError(AuthError):
    """The caller (the gateway, the PEP) presented no acceptable client certificate or
    caller key; answered before any agent token is looked at (pdp.callers)."""

    code = "caller_unauthenticated"


class OverloadedError(UnavailableError):
    """Every evaluation slot is taken: answered at once, never queued (Retry-After)."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        #: Seconds the client should wait; sent as the Retry-After header.
        self.retry_after_s = retry_after_s


class InternalDecisionError(PDPError):
    """A decision failed on a bug. It was recorded as an error deny under ``decision_id``,
    which the body carries so the answer can be found in the audit trail."""

    code = "internal"

    def __init__(
        self,
        message: str = "internal error; the decision is recorded as a deny",
        *,
        decision_id: str | None = None,
    ) -> None:
        super().__init__(message, decision_id=decision_id)
