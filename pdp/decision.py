"""The decision path shared by every front door: authenticate, normalise, evaluate, record.

Handlers (and future adapters: AuthZEN, ext_authz, MCP) validate their own wire format,
build a decision request, and call :meth:`DecisionService.decide`. There is one path to
OPA and one path to the recorder.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from .credentials import AGENT_DISABLED, CredentialService
from .errors import EngineUnavailableError
from .identity import Identity, SVIDVerifier
from .metrics import Metrics
from .normalize import normalize
from .opa import OPAClient, OPAResult
from .prompthash import PromptHasher
from .recorder import Recorder, build_record

_POLICY_RULE = "pdp"


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
        prompt_hasher: PromptHasher | None = None,
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
        #: Keys prompt digests (HMAC-SHA256 with the deployment's secret).
        self.prompt_hasher = prompt_hasher

    async def decide(self, request: dict[str, Any]) -> dict[str, Any]:
        """Decide a schema-valid request. Raises :class:`EngineUnavailableError` (-> 503).

        Even then the decision is recorded (as a deny) under its ``decision_id``, which the
        error carries for the error body.
        """
        started = time.perf_counter()
        decision_id = str(uuid.uuid4())
        identity = self.verifier.verify(request.get("agent", {}).get("token"))
        creds = self.credentials
        status = creds.agent_status(identity) if creds is not None else None
        input_doc = normalize(
            request,
            identity,
            self.clock_ns(),
            prompt_to_policy=self.prompt_to_policy,
            agent_status=status,
            prompt_hasher=self.prompt_hasher,
        )
        # Counted only once the request is decided: normalize may still refuse it (400).
        if not identity.authenticated:
            self.metrics.authn_failures.labels(identity.error_code or "authn.unknown").inc()
        try:
            result = await self.opa.evaluate(input_doc)
        except EngineUnavailableError as exc:
            self.metrics.opa_errors.labels(exc.kind).inc()
            self.metrics.decisions.labels("error").inc()
            response = {"decision_id": decision_id, "allow": False, "reasons": []}
            if creds is not None:
                creds.after_decision(decision_id, request, identity, response)
            await self._record(
                decision_id, input_doc, request, response, started, identity, error=exc.message
            )
            raise EngineUnavailableError(
                exc.message, kind=exc.kind, decision_id=decision_id
            ) from exc
        self.metrics.opa_latency.observe(result.duration_s)
        response = self._respond(decision_id, request, identity, result, status)
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
            credential=None if credential is None else credential.record(),
            opa_decision_id=result.decision_id,
        )
        # Counted once recorded: a decision whose record failed was answered 503, not this.
        self.metrics.decisions.labels("allow" if response["allow"] else "deny").inc()
        return response

    def _respond(
        self,
        decision_id: str,
        request: dict[str, Any],
        identity: Identity,
        result: OPAResult,
        agent_status: str | None = None,
    ) -> dict[str, Any]:
        if result.decision is None:
            self.metrics.opa_errors.labels(result.error_code or "policy.error").inc()
            allow = False
            reasons = [_reason(result.error_code or "policy.error", result.error_message or "")]
            obligations: dict[str, Any] = {}
        else:
            allow = result.decision["allow"] is True
            reasons = list(result.decision["reasons"])
            obligations = result.decision.get("obligations", {})
            if allow and not identity.authenticated:
                # A policy must never allow an unauthenticated caller; guard against bugs.
                allow = False
                reasons = [
                    _reason(
                        identity.error_code or "authn.unauthenticated",
                        "policy allowed an unauthenticated agent; denied by the PDP",
                    )
                ]
        if agent_status == "disabled" and AGENT_DISABLED not in {r.get("code") for r in reasons}:
            # Defense in depth: a disabled agent is denied even if a policy forgets to.
            if allow:
                allow, reasons = False, []
            reasons.append(
                _reason(AGENT_DISABLED, f"agent {identity.spiffe_id!r} is disabled in the PDP")
            )
        response: dict[str, Any] = {"decision_id": decision_id}
        if "request_id" in request:
            response["request_id"] = request["request_id"]
        response.update(
            allow=allow,
            reasons=reasons,
            obligations=obligations if allow else {},
            policy={"revision": result.revision},
        )
        for r in reasons:
            self.metrics.reasons.labels(str(r.get("code", ""))).inc()
        return response

    async def _record(
        self,
        decision_id: str,
        input_doc: dict[str, Any],
        request: dict[str, Any],
        response: dict[str, Any],
        started: float,
        identity: Identity,
        *,
        error: str | None = None,
        credential: dict[str, Any] | None = None,
        opa_decision_id: str | None = None,
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
            )
        )


def _reason(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "rule": _POLICY_RULE, "controls": []}
