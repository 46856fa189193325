"""The decision path shared by every front door: authenticate, normalise, evaluate, record.

Handlers (and future adapters: AuthZEN, ext_authz, MCP) validate their own wire format,
build a decision request, and call :meth:`DecisionService.decide`. There is one path to
OPA and one path to the recorder.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from .answer import AGENT_DISABLED, answer, reason
from .approvals import ApprovalService, Binding, Unbindable
from .audit.record import DEFAULT_VALUE_LIMIT, Recorder, build_record
from .callers import ANONYMOUS, Caller
from .credentials import CredentialService
from .dataguard import DataGuard
from .decision_cache import CacheEntry, DecisionCache
from .delegation import DelegationVerifier
from .errors import (
    AuditUnavailableError,
    EngineUnavailableError,
    HistoryUnavailableError,
    InternalDecisionError,
    OverloadedError,
    StoreError,
)
from .identity import Identity, SVIDVerifier
from .metrics import Metrics
from .normalize import is_asserted, normalize
from .opa import OPAClient, OPAResult
from .prompthash import PromptHasher
from .sessions import SessionHistory, session_keys, unavailable_snapshot
from .timefmt import rfc3339
from .users import UserAssertionVerifier

__all__ = ["CALLER_IS_AGENT", "DecisionService"]

#: Reason code: the authenticated caller (PEP) is the very agent the decision is for.
CALLER_IS_AGENT = "caller.is_agent"

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
        prompt_hasher: PromptHasher | None = None,
        sessions: SessionHistory | None = None,
        delegation: DelegationVerifier | None = None,
        cache: DecisionCache | None = None,
        approvals: ApprovalService | None = None,
        users: UserAssertionVerifier | None = None,
        data_guard: DataGuard | None = None,
        max_in_flight: int = 32,
        audit_value_limit: int = DEFAULT_VALUE_LIMIT,
        gateway_id_prefix: str | None = None,
    ) -> None:
        self.verifier = verifier
        #: SPIFFE ID prefix of gateways in an agents' trust domain (``--client-id-prefix``).
        self.gateway_id_prefix = gateway_id_prefix
        #: Decisions evaluated at once; past it decide() raises OverloadedError at once.
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        #: Free-form values larger than this are recorded as digest + size.
        self.audit_value_limit = audit_value_limit
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
        #: Told (decision id, OPA input, answer) of every answered decision, after it is
        #: recorded; must not block (pdp.shadow queues it). None: nobody.
        self.observer: Callable[[str, dict[str, Any], dict[str, Any]], None] | None = None
        #: Task/session histories (input.session); None: no store, so a request naming a
        #: task or session sees an unavailable history (fail closed).
        self.sessions = sessions
        #: Verifies agent.delegation into input.chain; None: every assertion is refused.
        self.delegation = delegation
        #: Policy-declared decision cache (None: every decision goes to OPA).
        self.cache = cache
        #: Decisions being decided right now (their records included while they wait to be
        #: durable): the audit writer lets a batch wait for more only while others are.
        self.in_progress = 0
        #: Pending approvals and grants (None: an approval_id is never accepted).
        self.approvals = approvals
        #: Verifies agent.user_assertion (None: no user assertion is accepted).
        self.users = users
        #: Refuses decisions of a bundle whose data is off-schema (None: not checked).
        self.data_guard = data_guard

    async def decide(
        self,
        request: dict[str, Any],
        *,
        mint: bool = True,
        caller: Caller = ANONYMOUS,
        admitted: bool = False,
    ) -> dict[str, Any]:
        """Decide a schema-valid request asked by ``caller`` (the authenticated PEP, which
        policy sees as ``input.pep`` and the record keeps as ``caller``).

        Raises :class:`OverloadedError` (503 + Retry-After, nothing recorded: no decision
        was made) at once when ``max_in_flight`` decisions are already being evaluated
        (``admitted``: the front door holds a slot already, see :meth:`admit`);
        :class:`EngineUnavailableError` (503) when OPA cannot answer and
        :class:`InternalDecisionError` (500) on a bug, both after recording the decision as
        a deny under its ``decision_id``, which the error carries for the error body:
        every answer that carries a ``decision_id`` is in the audit trail.

        ``request`` is a decision request (``decision-request.schema.json``) or, from the
        AuthZEN front door, a PEP-asserted subject request (``{"subject", "action",
        "resource", "context"}``, see :func:`pdp.normalize.is_asserted`). ``mint=False``:
        the caller does not want a credential, so none is minted on allow.

        Decisions of one task or session are serialized in this process, so each sees the
        history its predecessor left (:mod:`pdp.sessions`); an allowed one is added to that
        history once recorded (:class:`HistoryUnavailableError`, 503, when it cannot be).
        ``mode: "check"`` decides and records without minting a credential or touching any
        history.
        """
        self.in_progress += 1  # until it returns or raises (see in_progress)
        try:
            if admitted:
                return await self._serialized(request, mint, caller)
            async with self.admit():
                return await self._serialized(request, mint, caller)
        finally:
            self.in_progress -= 1

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold one of the ``max_in_flight`` evaluation slots, or raise OverloadedError
        at once. A front door deciding a batch for one request (AuthZEN evaluations,
        search) holds one slot for all of it and passes ``admitted=True``."""
        if self.in_flight >= self.max_in_flight:
            self.metrics.decisions.labels("shed").inc()
            raise OverloadedError(
                f"{self.max_in_flight} decisions are being evaluated; retry shortly"
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def _serialized(
        self, request: dict[str, Any], mint: bool, caller: Caller
    ) -> dict[str, Any]:
        if self.sessions is None or request.get("mode") == "check":
            return await self._decide(request, mint, caller)  # a check changes no history
        async with self.sessions.serialized(request):
            return await self._decide(request, mint, caller)

    async def _session(self, request: dict[str, Any], now_ns: int) -> dict[str, Any] | None:
        if self.sessions is not None:
            return await self.sessions.snapshot(request, now_ns)
        if session_keys(request):
            return unavailable_snapshot(now_ns, "this PDP keeps no session history")
        return None

    def _chain(self, request: dict[str, Any]) -> dict[str, Any] | None:
        assertion = request.get("agent", {}).get("delegation")
        if assertion is None:
            return None
        if self.delegation is None:
            return DelegationVerifier.refused("this PDP verifies no delegation assertions")
        return self.delegation.chain(assertion)

    async def _decide(self, request: dict[str, Any], mint: bool, caller: Caller) -> dict[str, Any]:
        started = time.perf_counter()
        decision_id = str(uuid.uuid4())
        asserted = is_asserted(request)
        identity = self.verifier.verify(request.get("agent", {}).get("token"))
        creds = self.credentials
        status = creds.agent_status(identity) if creds is not None else None
        now_ns = self.clock_ns()
        check = request.get("mode") == "check"  # no credential, no history: a preview
        approval_id = request.get("approval_id")
        # The approval binding (digests of the call) only when an approval is named; a
        # decision denied for want of approval computes it below, when it opens one.
        binding, unbindable = (
            _binding(request, identity, asserted) if approval_id is not None else (None, False)
        )
        approval_doc = await self._approval_input(approval_id, binding, unbindable)
        user = None
        assertion = (request.get("agent") or {}).get("user_assertion")
        if assertion is not None and self.users is not None:
            user = self.users.verify(assertion)
        input_doc = normalize(
            request,
            identity,
            now_ns,
            prompt_to_policy=self.prompt_to_policy,
            agent_status=status,
            prompt_hasher=self.prompt_hasher,
            session=await self._session(request, now_ns),
            chain=self._chain(request),
            approval=approval_doc,
            user=user,
            pep=caller.to_input(),
        )
        # From here on, whatever happens, the decision_id is recorded.
        progress = _Progress()
        try:
            # Counted only once the request is decided: normalize may still refuse it (400).
            if not identity.authenticated and not asserted:
                self.metrics.authn_failures.labels(identity.error_code or "authn.unknown").inc()
            # Step 4: the decision cache (policy-declared TTLs; pdp/decision_cache.py).
            key, generation, hit = self._cache_lookup(identity, input_doc)
            try:
                result = hit.result if hit is not None else await self.opa.evaluate(input_doc)
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
                progress.recorded = True
                raise EngineUnavailableError(
                    exc.message, kind=exc.kind, decision_id=decision_id
                ) from exc
            guard = self.data_guard
            if guard is not None and not guard.vouches(result.revision):
                result = await guard.vet(result)  # off-schema data: a policy error
            if hit is None:
                self.metrics.opa_latency.observe(result.duration_s)
            if result.decision is None:
                self.metrics.opa_errors.labels(result.error_code or "policy.error").inc()
            cache_note = self._cache_store(
                key, generation, hit, input_doc, request, result, decision_id
            )
            refusal = (approval_doc or {}).get("refusal")
            response = answer(
                decision_id,
                request,
                identity,
                result,
                status,
                asserted=asserted,
                approval_refusal=refusal,
            )
            if (why := self._caller_is_agent(caller, identity)) is not None:
                # The PEP must be a gateway, never an agent: neither the agent itself (its
                # X.509-SVID as the caller, its JWT-SVID as the agent) nor any other
                # workload of the agents' trust domains (an agent holding another agent's
                # token would otherwise be that agent's gateway).
                _deny(response, reason(CALLER_IS_AGENT, why))
            obligation = ((result.decision or {}).get("obligations") or {}).get("approval")
            granted = approval_doc is not None and approval_doc["status"] == "granted"
            if response["allow"] and isinstance(obligation, dict) and obligation.get("required"):
                if not granted:
                    # Defense in depth: a policy that allows what it says needs approval.
                    _deny(response, reason("approval_required", "the policy requires approval"))
            if (
                not response["allow"]
                and self.approvals is not None
                and isinstance(obligation, dict)
                and obligation.get("required") is True
                and approval_id is None
                and not check
                and {r.get("code") for r in response["reasons"]} == {"approval_required"}
                and (binding := _binding(request, identity, asserted)[0]) is not None
            ):
                # Denied only for want of approval: open (or find) the pending approval.
                pending = await self.approvals.request(decision_id, binding, obligation)
                response["approval"] = pending.pending_view()
            if (
                response["allow"]
                and granted
                and binding is not None
                and self.approvals is not None
                and not check
            ):
                used = await self.approvals.use(str(approval_id), binding, decision_id)
                if used is not None:
                    _deny(response, reason(used, "the approval could not be used for this call"))
                    refused = {"id": approval_id, "status": "refused", "refusal": used}
                    input_doc = {**input_doc, "approval": refused}  # the record says so
            credential = None
            if creds is not None and not check:
                # The agent's status again, after every await above: a decision that straddles
                # a disable is denied. Checked and minted with no await in between (atomic).
                if response["allow"] and creds.agent_status(identity) == "disabled":
                    _deny(
                        response,
                        reason(
                            AGENT_DISABLED,
                            f"agent {identity.spiffe_id!r} was disabled while its decision was "
                            "being made",
                        ),
                    )
                    # The record says so (and replays so): a copy, the cache may hold the input.
                    input_doc = {**input_doc, "agent": {**input_doc["agent"], "status": "disabled"}}
                # Minted only on allow; the token goes in the answer, its jti in the record.
                credential = creds.after_decision(
                    decision_id,
                    request,
                    identity,
                    response,
                    mint=mint,
                    approval_id=str(approval_id) if granted and response["allow"] else None,
                )
                if credential is not None:
                    response["credential"] = credential.response()
            for r in response["reasons"]:
                self.metrics.reasons.labels(str(r.get("code", ""))).inc()
            await self._record(
                decision_id,
                input_doc,
                request,
                response,
                started,
                identity,
                caller,
                credential=None if credential is None else credential.record(),
                opa_decision_id=None if hit is not None else result.decision_id,
                cache=cache_note,
            )
            progress.recorded = True
            if response["allow"] and self.sessions is not None and not check:
                try:
                    await self.sessions.record(request, input_doc, now_ns)
                except StoreError as exc:
                    # Recorded as allowed, but the credential never leaves: a call the history
                    # does not know of could open a toxic flow for the next one.
                    self.metrics.decisions.labels("error").inc()
                    raise HistoryUnavailableError(
                        f"the session history could not be updated: {exc}", decision_id=decision_id
                    ) from exc
            # Counted once recorded: a decision whose record failed was answered 503, not this.
            self.metrics.decisions.labels("allow" if response["allow"] else "deny").inc()
            if self.observer is not None:  # e.g. shadow evaluation: queued, never awaited
                self.observer(decision_id, input_doc, response)
            return response
        except (EngineUnavailableError, AuditUnavailableError, HistoryUnavailableError):
            raise  # each recorded under its decision_id (or the trail itself failed)
        except Exception as exc:  # the outermost boundary of one decision
            if progress.recorded:
                raise  # a bug after the record was made durable
            log.exception("decision %s failed", decision_id)
            await self._record_internal_error(
                decision_id, input_doc, request, started, identity, caller, exc
            )
            raise InternalDecisionError(decision_id=decision_id) from exc

    def _caller_is_agent(self, caller: Caller, identity: Identity) -> str | None:
        """Why the authenticated ``caller`` is an agent rather than a gateway, or None.

        A caller is an agent when it is the request's agent, or when its certificate
        (mTLS) names a SPIFFE ID of a trust domain the PDP verifies agents' JWT-SVIDs for,
        outside ``gateway_id_prefix``: an unknown gateway in an agents' trust domain is
        taken for the worst case. Caller keys name operator-registered callers."""
        if not caller.authenticated or caller.id is None:
            return None
        if caller.id == identity.spiffe_id:
            return "the caller is the agent itself"
        if caller.method != "mtls" or not caller.id.startswith("spiffe://"):
            return None
        if self.gateway_id_prefix is not None and caller.id.startswith(self.gateway_id_prefix):
            return None
        domain = caller.id[len("spiffe://") :].split("/", 1)[0]
        if domain in self.verifier.bundles.domains():
            return "the caller is a workload of an agents' trust domain, not a gateway"
        return None

    async def refuse(
        self,
        request: dict[str, Any],
        reasons: list[dict[str, Any]],
        *,
        caller: Caller = ANONYMOUS,
    ) -> dict[str, Any]:
        """Record a front door's deny made before any decision could be (no route, a request
        with two readings, a token header sent twice, ...) and return its answer: one record
        through the same recorder, a ``decision_id``, the reasons, no input (nothing reached
        policy), no credential. Raises :class:`AuditUnavailableError` (503) when the trail
        cannot take it: no ``decision_id`` is answered that the trail does not hold, and
        :class:`OverloadedError` (503) when every evaluation slot is taken: a refusal costs
        a durable record, so it is shed like a decision (an unauthenticated flood of
        unmatched paths must not write the trail while real decisions are refused)."""
        async with self.admit():
            return await self._refuse(request, reasons, caller)

    async def _refuse(
        self, request: dict[str, Any], reasons: list[dict[str, Any]], caller: Caller
    ) -> dict[str, Any]:
        started = time.perf_counter()
        decision_id = str(uuid.uuid4())
        response: dict[str, Any] = {
            "decision_id": decision_id,
            "allow": False,
            "reasons": reasons,
            "obligations": {},
        }
        record = build_record(
            decision_id=decision_id,
            input_doc=None,
            request=request,
            response=response,
            latency_s=time.perf_counter() - started,
            kid=None,
            caller=caller.to_input() if caller.authenticated else None,
            value_limit=self.audit_value_limit,
        )
        record["time"] = rfc3339(self.clock_ns())
        self.in_progress += 1
        try:
            await self.recorder.record(record)
        finally:
            self.in_progress -= 1
        for r in reasons:
            self.metrics.reasons.labels(str(r.get("code", ""))).inc()
        self.metrics.decisions.labels("deny").inc()
        return response

    def set_verifier(self, verifier: SVIDVerifier) -> None:
        """Use new trust bundles (a new verifier): every cached decision is dropped, since
        each was made for an identity the old bundles verified."""
        self.verifier = verifier
        if self.cache is not None:
            self.cache.invalidate("trust_bundle")

    def _cache_lookup(
        self, identity: Identity, input_doc: dict[str, Any]
    ) -> tuple[bytes | None, str | None, CacheEntry | None]:
        """(key, bundle generation, hit) of a decision; all None when the cache is off, does
        not know the active bundle yet, or the agent is unauthenticated (never cached)."""
        cache = self.cache
        if cache is None or not cache.serving or not identity.authenticated:
            return None, None, None
        key = cache.key(input_doc)
        return key, cache.generation, cache.get(key)

    def _cache_store(
        self,
        key: bytes | None,
        generation: str | None,
        hit: CacheEntry | None,
        input_doc: dict[str, Any],
        request: dict[str, Any],
        result: OPAResult,
        decision_id: str,
    ) -> dict[str, Any] | None:
        """Store a miss the policy made cacheable; the record's ``cache`` member, if any."""
        if hit is not None:
            return {"hit": True, "decision_id": hit.decision_id, "ttl_seconds": hit.ttl_seconds}
        if self.cache is None or key is None:
            return None
        ttl = self.cache.put(key, generation, input_doc, request, result, decision_id)
        return {"hit": False, "decision_id": None, "ttl_seconds": ttl} if ttl else None

    async def _approval_input(
        self, approval_id: str | None, binding: Binding | None, unbindable: bool = False
    ) -> dict[str, Any] | None:
        """input.approval for the request's approval_id: granted (bound, unexpired, with a
        use left) or refused with its approval_* code; None when it names none."""
        if approval_id is None:
            return None
        if unbindable:
            return {"id": approval_id, "status": "refused", "refusal": "approval_mismatch"}
        if binding is None or self.approvals is None:
            return {"id": approval_id, "status": "refused", "refusal": "approval_unknown"}
        approval, refusal = await self.approvals.check(approval_id, binding)
        if approval is None or refusal is not None:
            return {"id": approval_id, "status": "refused", "refusal": refusal}
        return approval.input_view()

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
        cache: dict[str, Any] | None = None,
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
                cache=cache,
                caller=caller.to_input() if caller.authenticated else None,
                value_limit=self.audit_value_limit,
                status=status,
            )
        )


def _binding(
    request: dict[str, Any], identity: Identity, asserted: bool
) -> tuple[Binding | None, bool]:
    """(the approval binding of this call, whether it is unbindable): no binding for an
    unauthenticated agent or a PEP-asserted subject; unbindable when its arguments cannot
    be digested exactly (no approval can be opened for, or used by, such a call)."""
    if not identity.authenticated or identity.spiffe_id is None or asserted:
        return None, False
    try:
        return Binding.of(request, identity.spiffe_id), False
    except Unbindable:
        return None, True


def _deny(response: dict[str, Any], why: dict[str, Any]) -> None:
    """Turn ``response`` into a deny carrying ``why`` (no obligations, no credential)."""
    if response["allow"]:
        response["reasons"] = []
    response["allow"] = False
    response["obligations"] = {}
    if why["code"] not in {r.get("code") for r in response["reasons"]}:
        response["reasons"].append(why)
        response["reasons"].sort(key=lambda r: (str(r.get("code")), str(r.get("message"))))


class _Progress:
    """How far one decision got: whether its record is durable yet."""

    __slots__ = ("recorded",)

    def __init__(self) -> None:
        self.recorded = False
