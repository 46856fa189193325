"""The decision path shared by every front door: authenticate, normalise, evaluate, record.

Handlers (and future adapters: AuthZEN, ext_authz, MCP) validate their own wire format,
build a decision request, and call :meth:`DecisionService.decide`. There is one path to
OPA and one path to the recorder.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from .answer import answer, reason
from .audit.record import DEFAULT_VALUE_LIMIT, Recorder, build_record
from .callers import ANONYMOUS, Caller
from .credentials import CredentialService
from .errors import (
    AuditUnavailableError,
    EngineUnavailableError,
    InternalDecisionError,
    OverloadedError,
)
from .identity import Identity, SVIDVerifier
from .metrics import Metrics
from .normalize import normalize
from .opa import OPAClient

__all__ = ["DecisionService"]

log = logging.getLogger("pdp.decision")


class DecisionService:
    """Answers decision requests; never answers allow on an error."""

    def __init__(
        self,
        *,
        verifier: SVIDVerifier,
        opa: OPAClient,
        recorder: Recorder,
        metrics: Metrics,
        prompt_to_policy: bool = False,
        clock_ns: Callable[[], int] = time.time_ns,
        credentials: CredentialService | None = None,
        audit_prompt: str = "hash",
        max_in_flight: int = 64,
        audit_value_limit: int = DEFAULT_VALUE_LIMIT,
    ) -> None:
        self.verifier = verifier
        self.opa = opa
        self.recorder = recorder
        self.metrics = metrics
        self.prompt_to_policy = prompt_to_policy
        self.clock_ns = clock_ns
        #: Mints credentials on allow and knows which agents are disabled (None: neither).
        self.credentials = credentials
        #: How records keep prompts: hash, redacted or full (PDP_AUDIT_PROMPT).
        self.audit_prompt = audit_prompt
        #: Decisions evaluated at once; past it decide() raises OverloadedError at once.
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        #: Free-form values larger than this are recorded as digest + size.
        self.audit_value_limit = audit_value_limit

    async def decide(
        self, request: dict[str, Any], *, caller: Caller = ANONYMOUS
    ) -> dict[str, Any]:
        """Decide a schema-valid request asked by ``caller`` (the authenticated PEP).

        Raises :class:`OverloadedError` (503, nothing recorded: no decision was made) when
        ``max_in_flight`` decisions are already being evaluated,
        :class:`EngineUnavailableError` (503) when OPA cannot answer and
        :class:`InternalDecisionError` (500) on a bug: both after recording the decision
        as a deny under its ``decision_id``, which the error carries for the error body.
        Every answer that carries a ``decision_id`` is in the audit trail.
        """
        if self.in_flight >= self.max_in_flight:
            self.metrics.decisions.labels("shed").inc()
            raise OverloadedError(
                f"{self.max_in_flight} decisions are being evaluated; retry shortly"
            )
        self.in_flight += 1
        try:
            return await self._decide(request, caller)
        finally:
            self.in_flight -= 1

    async def _decide(self, request: dict[str, Any], caller: Caller) -> dict[str, Any]:
        started = time.perf_counter()
        identity = self.verifier.verify(request.get("agent", {}).get("token"))
        creds = self.credentials
        status = creds.agent_status(identity) if creds is not None else None
        input_doc = normalize(
            request,
            identity,
            self.clock_ns(),
            prompt_to_policy=self.prompt_to_policy,
            agent_status=status,
            pep=caller.to_input(),
        )
        # From here on the decision has an id: whatever happens, it is recorded.
        decision_id = str(uuid.uuid4())
        recorded = False
        try:
            # Counted only once the request is decided: normalize may still refuse it (400).
            if not identity.authenticated:
                self.metrics.authn_failures.labels(identity.error_code or "authn.unknown").inc()
            try:
                result = await self.opa.evaluate(input_doc)
            except EngineUnavailableError as exc:
                self.metrics.opa_errors.labels(exc.kind).inc()
                self.metrics.decisions.labels("error").inc()
                response: dict[str, Any] = {
                    "decision_id": decision_id,
                    "allow": False,
                    "reasons": [],
                }
                if creds is not None:
                    creds.after_decision(decision_id, request, identity, response)
                await self._record(
                    decision_id, input_doc, request, response, started, identity, caller,
                    error=exc.message,
                )  # fmt: skip
                recorded = True
                raise EngineUnavailableError(
                    exc.message, kind=exc.kind, decision_id=decision_id
                ) from exc
            self.metrics.opa_latency.observe(result.duration_s)
            if result.decision is None:
                self.metrics.opa_errors.labels(result.error_code or "policy.error").inc()
            response = answer(decision_id, request, identity, result, status)
            for r in response["reasons"]:
                self.metrics.reasons.labels(str(r.get("code", ""))).inc()
            credential = None
            if creds is not None:
                # Minted only on allow; the token goes in the answer, its jti in the record.
                credential = creds.after_decision(decision_id, request, identity, response)
                if credential is not None:
                    response["credential"] = credential.response()
            await self._record(
                decision_id,
                input_doc,
                request,
                response,
                started,
                identity,
                caller,
                credential=None if credential is None else credential.record(),
                opa_decision_id=result.decision_id,
            )
            recorded = True
        except (EngineUnavailableError, AuditUnavailableError):
            raise
        except Exception as exc:  # the outermost boundary of one decision
            if recorded:
                raise  # a bug after the record was made durable
            log.exception("decision %s failed", decision_id)
            await self._record_internal_error(
                decision_id, input_doc, request, started, identity, caller, exc
            )
            raise InternalDecisionError(decision_id=decision_id) from exc
        # Counted once recorded: a decision whose record failed was answered 503, not this.
        self.metrics.decisions.labels("allow" if response["allow"] else "deny").inc()
        return response

    async def _record_internal_error(
        self,
        decision_id: str,
        input_doc: dict[str, Any],
        request: dict[str, Any],
        started: float,
        identity: Identity,
        caller: Caller,
        exc: Exception,
    ) -> None:
        """Record a decision that failed on a bug as an error deny (status 500)."""
        self.metrics.decisions.labels("error").inc()
        denied = reason("internal_error", "the PDP failed to decide; denied")
        response = {"decision_id": decision_id, "allow": False, "reasons": [denied]}
        error = f"internal error ({type(exc).__name__})"
        try:
            await self._record(
                decision_id, input_doc, request, response, started, identity, caller,
                error=error, status=500,
            )  # fmt: skip
        except AuditUnavailableError:
            raise
        except Exception:
            # The full record could not be built or written: the minimal one still names
            # the decision, so no answered decision_id is missing from the trail.
            log.exception("decision %s: recording the full error record failed", decision_id)
            await self._record(
                decision_id, None, {}, response, started, identity, caller,
                error=error, status=500,
            )  # fmt: skip

    async def _record(
        self,
        decision_id: str,
        input_doc: dict[str, Any] | None,
        request: dict[str, Any],
        response: dict[str, Any],
        started: float,
        identity: Identity,
        caller: Caller,
        *,
        error: str | None = None,
        credential: dict[str, Any] | None = None,
        opa_decision_id: str | None = None,
        status: int | None = None,
    ) -> None:
        latency = time.perf_counter() - started
        self.metrics.latency.observe(latency)
        await self.recorder.record(
            build_record(
                decision_id=decision_id,
                input_doc=input_doc,
                request=request,
                response=response,
                latency_s=latency,
                kid=identity.kid,
                error=error,
                credential=credential,
                prompt_mode=self.audit_prompt,
                opa_decision_id=opa_decision_id,
                caller=caller.to_input() if caller.authenticated else None,
                value_limit=self.audit_value_limit,
                status=status,
            )
        )
