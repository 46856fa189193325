"""The decision path's own logic (pdp.decision.DecisionService), with fakes for what it
calls: an OPA that answers what the test says, a recorder that keeps records, a verifier
that returns a fixed identity, a credential service that counts. The real OPA, store and
trail are exercised by tests/test_api.py, test_failclosed.py and test_credentials_api.py;
these tests pin the guards and bookkeeping of the path itself (the mutation targets).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pdp.approvals import Binding
from pdp.callers import ANONYMOUS as ANONYMOUS_CALLER
from pdp.callers import Caller
from pdp.decision import DecisionService
from pdp.decision_cache import DecisionCache
from pdp.errors import (
    AuditUnavailableError,
    EngineUnavailableError,
    HistoryUnavailableError,
    InternalDecisionError,
    OverloadedError,
    StoreError,
)
from pdp.identity import Identity
from pdp.metrics import Metrics
from pdp.opa import OPAResult
from tests.http_helpers import is_uuid, metric

AGENT = Identity(
    authenticated=True,
    spiffe_id="spiffe://acme.example/agents/support-bot",
    trust_domain="acme.example",
    path=("agents", "support-bot"),
    expires_at=2_000_000_000,
    jti="tok-1",
    kid="kid-1",
)
ANONYMOUS = Identity.failure("authn.token_missing", "no agent token was presented")
NOW_NS = 1_795_000_000_000_000_000
REQUEST: dict[str, Any] = {
    "request_id": "r-1",
    "agent": {"token": "t"},
    "tenant": "acme",
    "action": {"type": "tool.call", "name": "jira.search_issues", "operation": "read"},
    "destination": {"type": "tool", "name": "jira"},
}
OBLIGATIONS = {"credential": {"ttl_seconds": 60}, "recheck_at_target": False}


class Verifier:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.tokens: list[Any] = []

    def verify(self, token: Any) -> Identity:
        self.tokens.append(token)
        return self.identity


class OPA:
    """Answers each evaluate with the next of ``answers`` (an OPAResult or an exception)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.inputs: list[dict[str, Any]] = []

    async def evaluate(self, input_doc: dict[str, Any]) -> OPAResult:
        self.inputs.append(input_doc)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, OPAResult)
        return answer


class Recorder:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def record(self, record: dict[str, Any]) -> None:
        self.records.append(record)


class Issued:
    def response(self) -> dict[str, Any]:
        return {"token": "minted", "jti": "j-1"}

    def record(self) -> dict[str, Any]:
        return {"jti": "j-1", "aud": "jira", "scope": "s", "exp": 1}


class Credentials:
    """Agent status as ``statuses`` says, call by call (the last one repeats)."""

    def __init__(self, *statuses: str | None) -> None:
        self.statuses = list(statuses) or ["active"]
        self.calls: list[dict[str, Any]] = []

    def agent_status(self, identity: Identity) -> str | None:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def after_decision(
        self,
        decision_id: str,
        request: dict[str, Any],
        identity: Identity,
        response: dict[str, Any],
        *,
        mint: bool = True,
        approval_id: str | None = None,
    ) -> Issued | None:
        self.calls.append({"allow": response["allow"], "mint": mint, "approval_id": approval_id})
        return Issued() if response["allow"] and mint else None


def allowing(**extra: Any) -> OPAResult:
    decision = {"allow": True, "reasons": [], "obligations": dict(OBLIGATIONS), **extra}
    return OPAResult(decision=decision, revision="rev-1", duration_s=0.25, decision_id="opa-1")


def service(
    opa: OPA, identity: Identity = AGENT, credentials: Credentials | None = None, **kw: Any
) -> tuple[DecisionService, Recorder, Metrics]:
    recorder, metrics = Recorder(), Metrics()
    svc = DecisionService(
        verifier=Verifier(identity),  # type: ignore[arg-type]
        opa=opa,  # type: ignore[arg-type]
        recorder=recorder,
        metrics=metrics,
        clock_ns=lambda: NOW_NS,
        credentials=credentials,  # type: ignore[arg-type]
        **kw,
    )
    return svc, recorder, metrics


def count(metrics: Metrics, sample: str, **labels: str) -> float:
    from prometheus_client import generate_latest

    return metric(generate_latest(metrics.registry).decode(), sample, **labels)


async def test_an_allow_is_answered_recorded_and_counted_once() -> None:
    opa = OPA(allowing())
    svc, recorder, metrics = service(opa)

    response = await svc.decide(dict(REQUEST))

    assert response["allow"] is True
    assert response["request_id"] == "r-1"
    assert response["obligations"] == OBLIGATIONS
    assert response["policy"] == {"revision": "rev-1"}
    [record] = recorder.records
    assert record["decision_id"] == response["decision_id"]
    assert record["decision"]["allow"] is True
    assert record["policy"]["opa_decision_id"] == "opa-1"
    assert record["identity"]["kid"] == "kid-1"
    assert record["input"] == opa.inputs[0]
    assert opa.inputs[0]["now"]["unix_ns"] == NOW_NS
    assert count(metrics, "pdp_decisions_total", outcome="allow") == 1
    assert count(metrics, "pdp_decisions_total", outcome="deny") == 0
    assert count(metrics, "pdp_opa_request_duration_seconds_sum") == 0.25
    assert count(metrics, "pdp_authn_failures_total") == 0


async def test_the_token_verified_is_the_agent_token_of_the_request() -> None:
    verifier = Verifier(AGENT)
    svc, _, _ = service(OPA(allowing()))
    svc.verifier = verifier  # type: ignore[assignment]

    await svc.decide(dict(REQUEST))

    assert verifier.tokens == ["t"]


async def test_every_decision_has_its_own_id() -> None:
    svc, recorder, _ = service(OPA(allowing(), allowing()))

    first = await svc.decide(dict(REQUEST))
    second = await svc.decide(dict(REQUEST))

    assert first["decision_id"] != second["decision_id"]
    assert [r["decision_id"] for r in recorder.records] == [
        first["decision_id"],
        second["decision_id"],
    ]


async def test_a_deny_is_counted_as_a_deny_with_its_reasons() -> None:
    reason = {"code": "tenant_mismatch", "message": "m", "rule": "r", "controls": []}
    result = OPAResult(
        decision={"allow": False, "reasons": [reason]}, revision="rev-1", duration_s=0.0
    )
    svc, _, metrics = service(OPA(result))

    response = await svc.decide(dict(REQUEST))

    assert (response["allow"], response["obligations"]) == (False, {})
    assert count(metrics, "pdp_decisions_total", outcome="deny") == 1
    assert count(metrics, "pdp_decision_reasons_total", code="tenant_mismatch") == 1


async def test_a_policy_error_denies_and_is_counted_as_an_opa_error() -> None:
    result = OPAResult(
        decision=None, revision=None, duration_s=0.0, error_code="policy.undefined_decision"
    )
    svc, _, metrics = service(OPA(result))

    response = await svc.decide(dict(REQUEST))

    assert response["allow"] is False
    assert [r["code"] for r in response["reasons"]] == ["policy.undefined_decision"]
    assert count(metrics, "pdp_opa_errors_total", kind="policy.undefined_decision") == 1


async def test_an_unreachable_engine_raises_503_after_recording_a_deny() -> None:
    creds = Credentials("active")
    opa = OPA(EngineUnavailableError("OPA did not answer in 100 ms", kind="timeout"))
    svc, recorder, metrics = service(opa, credentials=creds)

    with pytest.raises(EngineUnavailableError) as info:
        await svc.decide(dict(REQUEST))

    [record] = recorder.records
    assert info.value.decision_id == record["decision_id"]
    assert info.value.kind == "timeout"
    assert record["decision"]["allow"] is False
    assert record["decision"]["status"] == 503
    assert record["decision"]["error"] == "OPA did not answer in 100 ms"
    assert creds.calls == [{"allow": False, "mint": True, "approval_id": None}]
    assert count(metrics, "pdp_opa_errors_total", kind="timeout") == 1
    assert count(metrics, "pdp_decisions_total", outcome="error") == 1
    assert count(metrics, "pdp_decisions_total", outcome="deny") == 0


async def test_an_unauthenticated_agent_is_counted_by_its_authn_code() -> None:
    denied = OPAResult(decision={"allow": False, "reasons": []}, revision="r", duration_s=0.0)
    svc, _, metrics = service(OPA(denied), identity=ANONYMOUS)

    await svc.decide(dict(REQUEST))

    assert count(metrics, "pdp_authn_failures_total", code="authn.token_missing") == 1


async def test_a_policy_allow_for_an_unauthenticated_agent_is_a_deny() -> None:
    creds = Credentials("active")
    svc, recorder, _ = service(OPA(allowing()), identity=ANONYMOUS, credentials=creds)

    response = await svc.decide(dict(REQUEST))

    assert response["allow"] is False
    assert "credential" not in response
    assert recorder.records[0]["credential"] is None


async def test_an_allow_carries_the_minted_credential_and_the_record_its_id() -> None:
    creds = Credentials("active")
    svc, recorder, _ = service(OPA(allowing()), credentials=creds)

    response = await svc.decide(dict(REQUEST))

    assert response["credential"] == {"token": "minted", "jti": "j-1"}
    assert recorder.records[0]["credential"] == {
        "jti": "j-1",
        "aud": "jira",
        "scope": "s",
        "exp": 1,
    }
    assert creds.calls == [{"allow": True, "mint": True, "approval_id": None}]


async def test_mint_false_asks_for_no_credential() -> None:
    creds = Credentials("active")
    svc, _, _ = service(OPA(allowing()), credentials=creds)

    response = await svc.decide(dict(REQUEST), mint=False)

    assert response["allow"] is True
    assert "credential" not in response
    assert creds.calls == [{"allow": True, "mint": False, "approval_id": None}]


async def test_the_agent_status_reaches_the_policy_input() -> None:
    opa = OPA(allowing())
    svc, _, _ = service(opa, credentials=Credentials("active"))

    await svc.decide(dict(REQUEST))

    assert opa.inputs[0]["agent"]["status"] == "active"


async def test_a_disabled_agent_is_denied_even_when_the_policy_allows() -> None:
    creds = Credentials("disabled")
    svc, recorder, _ = service(OPA(allowing()), credentials=creds)

    response = await svc.decide(dict(REQUEST))

    assert response["allow"] is False
    assert [r["code"] for r in response["reasons"]] == ["agent_disabled"]
    assert "credential" not in response
    assert recorder.records[0]["decision"]["allow"] is False


async def test_an_agent_disabled_while_its_decision_was_made_gets_no_credential() -> None:
    creds = Credentials("active", "disabled")  # active at the start, disabled at minting
    svc, recorder, metrics = service(OPA(allowing()), credentials=creds)

    response = await svc.decide(dict(REQUEST))

    assert response["allow"] is False
    assert response["obligations"] == {}
    assert [r["code"] for r in response["reasons"]] == ["agent_disabled"]
    assert "was disabled while its decision was being made" in response["reasons"][0]["message"]
    assert "credential" not in response
    assert creds.calls == [{"allow": False, "mint": True, "approval_id": None}]
    assert recorder.records[0]["input"]["agent"]["status"] == "disabled"
    assert count(metrics, "pdp_decisions_total", outcome="deny") == 1


async def test_a_check_decides_and_records_without_minting() -> None:
    creds = Credentials("active")
    svc, recorder, _ = service(OPA(allowing()), credentials=creds)

    response = await svc.decide({**REQUEST, "mode": "check"})

    assert response["allow"] is True
    assert "credential" not in response
    assert creds.calls == []
    assert len(recorder.records) == 1


async def test_an_allow_the_policy_says_needs_approval_is_denied_without_one() -> None:
    result = allowing(obligations={**OBLIGATIONS, "approval": {"required": True}})
    creds = Credentials("active")
    svc, _, _ = service(OPA(result), credentials=creds)

    response = await svc.decide(dict(REQUEST))

    assert response["allow"] is False
    assert response["obligations"] == {}
    assert [r["code"] for r in response["reasons"]] == ["approval_required"]
    assert "credential" not in response


async def test_an_approval_obligation_that_is_not_required_does_not_deny() -> None:
    result = allowing(obligations={**OBLIGATIONS, "approval": {"required": False}})
    svc, _, _ = service(OPA(result))

    assert (await svc.decide(dict(REQUEST)))["allow"] is True


async def test_an_approval_id_without_an_approval_service_is_refused_as_unknown() -> None:
    opa = OPA(allowing())
    svc, _, _ = service(opa)

    response = await svc.decide({**REQUEST, "approval_id": "ap-1"})

    assert opa.inputs[0]["approval"] == {
        "id": "ap-1",
        "status": "refused",
        "refusal": "approval_unknown",
    }
    assert response["allow"] is False
    assert [r["code"] for r in response["reasons"]] == ["approval_unknown"]


async def test_a_task_without_a_history_store_sees_an_unavailable_history() -> None:
    opa = OPA(allowing())
    svc, _, _ = service(opa)

    await svc.decide({**REQUEST, "task": {"id": "T-1"}})

    session = opa.inputs[0]["session"]
    assert session["available"] is False
    assert session["read_at_ns"] == NOW_NS


async def test_a_delegation_without_a_verifier_is_refused_in_the_input() -> None:
    opa = OPA(allowing())
    svc, _, _ = service(opa)

    await svc.decide({**REQUEST, "agent": {"token": "t", "delegation": "a.b.c"}})

    chain = opa.inputs[0]["chain"]
    assert chain["present"] is True
    assert chain["error"]["code"] == "delegation.unverifiable"


# --------------------------------------------------------------------------- prompts, observer

PROMPT_TEXT = "summarise ticket SUP-1"
PROMPT: dict[str, Any] = {"text": PROMPT_TEXT, "risk_signals": []}


async def test_the_prompt_text_stays_out_of_the_policy_input_by_default() -> None:
    opa = OPA(allowing())
    svc, recorder, _ = service(opa)

    await svc.decide({**REQUEST, "prompt": PROMPT})

    assert "text" not in opa.inputs[0]["prompt"]
    assert opa.inputs[0]["prompt"]["length"] == len(PROMPT["text"])
    assert recorder.records[0]["prompt"]["mode"] == "hash"
    assert "text" not in recorder.records[0]["prompt"]


async def test_prompt_to_policy_passes_the_text_and_audit_prompt_sets_the_record_mode() -> None:
    opa = OPA(allowing())
    svc, recorder, _ = service(opa, prompt_to_policy=True, audit_prompt="full")

    await svc.decide({**REQUEST, "prompt": PROMPT})

    assert opa.inputs[0]["prompt"]["text"] == PROMPT["text"]
    assert recorder.records[0]["prompt"]["mode"] == "full"
    assert recorder.records[0]["prompt"]["text"] == PROMPT["text"]


async def test_a_prompt_hasher_keys_the_prompt_digest() -> None:
    from pdp.prompthash import PromptHasher

    hasher = PromptHasher(b"k" * 32)
    opa = OPA(allowing())
    svc, _, _ = service(opa, prompt_hasher=hasher)

    await svc.decide({**REQUEST, "prompt": PROMPT})

    assert opa.inputs[0]["prompt"]["hmac_sha256"] == hasher.digest(PROMPT_TEXT)
    assert opa.inputs[0]["prompt"]["hmac_key_id"] == hasher.key_id


async def test_the_observer_sees_every_decision_after_it_is_recorded() -> None:
    seen: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    svc, recorder, _ = service(OPA(allowing()))
    svc.observer = lambda decision_id, doc, response: seen.append((decision_id, doc, response))

    response = await svc.decide(dict(REQUEST))

    assert len(recorder.records) == 1
    assert [(d, r["allow"]) for d, _, r in seen] == [(response["decision_id"], True)]
    assert seen[0][1]["tenant"] == "acme"


# --------------------------------------------------------------------------- collaborators


class Sessions:
    """A history store that keeps what it is told (serialized and recorded calls)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.held: list[str] = []
        self.recorded: list[dict[str, Any]] = []

    @contextlib.asynccontextmanager
    async def serialized(self, request: dict[str, Any]) -> AsyncIterator[None]:
        self.held.append(request["tenant"])
        yield

    async def snapshot(self, request: dict[str, Any], now_ns: int) -> dict[str, Any]:
        return {"available": True, "origin": "fake", "read_at_ns": now_ns}

    async def record(self, request: dict[str, Any], input_doc: dict[str, Any], at: int) -> None:
        if self.fail:
            raise StoreError("Redis store: connection refused")
        self.recorded.append(input_doc)


async def test_with_a_history_store_decisions_are_serialized_and_allows_recorded() -> None:
    sessions = Sessions()
    opa = OPA(allowing())
    svc, _, _ = service(opa, sessions=sessions)

    await svc.decide(dict(REQUEST))

    assert sessions.held == ["acme"]
    assert opa.inputs[0]["session"] == {"available": True, "origin": "fake", "read_at_ns": NOW_NS}
    assert sessions.recorded == [opa.inputs[0]]


async def test_a_deny_is_not_added_to_the_history() -> None:
    sessions = Sessions()
    denied = OPAResult(decision={"allow": False, "reasons": []}, revision="r", duration_s=0.0)
    svc, _, _ = service(OPA(denied), sessions=sessions)

    await svc.decide(dict(REQUEST))

    assert (sessions.held, sessions.recorded) == (["acme"], [])


async def test_a_check_touches_no_history() -> None:
    sessions = Sessions()
    svc, _, _ = service(OPA(allowing()), sessions=sessions)

    await svc.decide({**REQUEST, "mode": "check"})

    assert (sessions.held, sessions.recorded) == ([], [])


async def test_an_allow_the_history_cannot_take_is_a_503_after_its_record() -> None:
    svc, recorder, metrics = service(
        OPA(allowing()), credentials=Credentials("active"), sessions=Sessions(fail=True)
    )

    with pytest.raises(HistoryUnavailableError) as info:
        await svc.decide(dict(REQUEST))

    assert info.value.decision_id == recorder.records[0]["decision_id"]
    assert info.value.message == (
        "the session history could not be updated: Redis store: connection refused"
    )
    assert count(metrics, "pdp_decisions_total", outcome="error") == 1
    assert count(metrics, "pdp_decisions_total", outcome="allow") == 0


async def test_without_a_history_store_the_unavailable_history_says_why() -> None:
    opa = OPA(allowing())
    svc, _, _ = service(opa)

    await svc.decide({**REQUEST, "task": {"id": "T-1"}})

    assert opa.inputs[0]["session"]["error"] == "this PDP keeps no session history"


async def test_a_delegation_assertion_goes_through_the_delegation_verifier() -> None:
    class Delegation:
        def chain(self, assertion: str) -> dict[str, Any]:
            return {"present": True, "verified": True, "assertion": assertion}

    opa = OPA(allowing())
    svc, _, _ = service(opa, delegation=Delegation())

    await svc.decide({**REQUEST, "agent": {"token": "t", "delegation": "a.b.c"}})
    assert opa.inputs[0]["chain"] == {"present": True, "verified": True, "assertion": "a.b.c"}


async def test_a_user_assertion_goes_through_the_user_verifier() -> None:
    class Users:
        def verify(self, assertion: str) -> dict[str, Any]:
            return {"sub": "user:alice", "assertion": assertion}

    opa = OPA(allowing())
    svc, _, _ = service(opa, users=Users())

    await svc.decide({**REQUEST, "agent": {"token": "t", "user_assertion": "u.v.w"}})

    assert opa.inputs[0]["user"] == {"sub": "user:alice", "assertion": "u.v.w"}


async def test_a_user_assertion_without_a_verifier_is_ignored() -> None:
    opa = OPA(allowing())
    svc, _, _ = service(opa)

    await svc.decide({**REQUEST, "agent": {"token": "t", "user_assertion": "u.v.w"}})

    assert "user" not in opa.inputs[0]


async def test_a_delegation_without_a_verifier_says_why_in_the_input() -> None:
    opa = OPA(allowing())
    svc, _, _ = service(opa)

    await svc.decide({**REQUEST, "agent": {"token": "t", "delegation": "a.b.c"}})

    assert opa.inputs[0]["chain"]["error"]["message"] == (
        "this PDP verifies no delegation assertions"
    )


async def test_a_pep_asserted_subject_is_decided_by_the_policy_without_an_agent_token() -> None:
    request = {
        "subject": {"type": "user", "id": "alice"},
        "action": {"name": "can_read"},
        "resource": {"type": "todo", "id": "1"},
    }
    opa = OPA(allowing())
    svc, _, metrics = service(opa, identity=ANONYMOUS)

    response = await svc.decide(request)

    assert response["allow"] is True
    assert opa.inputs[0]["subject"]["asserted"] is True
    assert count(metrics, "pdp_authn_failures_total", code="authn.token_missing") == 0


class Approval:
    def input_view(self) -> dict[str, Any]:
        return {"id": "ap-1", "status": "granted"}


class Approvals:
    """An approval service that grants ``ap-1`` to the request's own binding."""

    def __init__(self) -> None:
        self.checked: list[Any] = []
        self.used: list[tuple[str, str]] = []

    async def check(self, approval_id: str, binding: Any) -> tuple[Approval | None, str | None]:
        self.checked.append(binding)
        return (Approval(), None) if approval_id == "ap-1" else (None, "approval_unknown")

    async def use(self, approval_id: str, binding: Any, decision_id: str) -> str | None:
        self.used.append((approval_id, decision_id))
        return None


async def test_a_granted_approval_is_checked_against_the_agents_binding_and_used_once() -> None:
    approvals = Approvals()
    result = allowing(obligations={**OBLIGATIONS, "approval": {"required": True}})
    opa = OPA(result)
    svc, _, _ = service(opa, credentials=Credentials("active"), approvals=approvals)

    response = await svc.decide({**REQUEST, "approval_id": "ap-1"})

    assert opa.inputs[0]["approval"] == {"id": "ap-1", "status": "granted"}
    assert response["allow"] is True
    [binding] = approvals.checked
    assert binding is not None
    assert approvals.used == [("ap-1", response["decision_id"])]


async def test_an_unauthenticated_agent_has_no_binding_so_its_approval_is_unknown() -> None:
    approvals = Approvals()
    opa = OPA(allowing())
    svc, _, _ = service(opa, identity=ANONYMOUS, approvals=approvals)

    await svc.decide({**REQUEST, "approval_id": "ap-1"})

    assert approvals.checked == []
    assert opa.inputs[0]["approval"]["refusal"] == "approval_unknown"


class Pending:
    def pending_view(self) -> dict[str, Any]:
        return {"id": "ap-9", "status": "pending"}


class Requesting(Approvals):
    def __init__(self) -> None:
        super().__init__()
        self.requested: list[tuple[str, dict[str, Any]]] = []

    async def request(self, decision_id: str, binding: Any, obligation: dict[str, Any]) -> Pending:
        self.requested.append((decision_id, obligation))
        return Pending()


def needs_approval() -> OPAResult:
    reason = {"code": "approval_required", "message": "m", "rule": "r", "controls": []}
    obligations = {"approval": {"required": True, "approvers": ["team:sec"]}}
    decision = {"allow": False, "reasons": [reason], "obligations": obligations}
    return OPAResult(decision=decision, revision="r", duration_s=0.0)


async def test_a_deny_only_for_want_of_approval_opens_a_pending_approval() -> None:
    approvals = Requesting()
    svc, _, _ = service(OPA(needs_approval()), approvals=approvals)

    response = await svc.decide(dict(REQUEST))

    assert response["approval"] == {"id": "ap-9", "status": "pending"}
    assert approvals.requested == [
        (response["decision_id"], {"required": True, "approvers": ["team:sec"]})
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"mode": "check"},
        {"approval_id": "ap-1"},
    ],
    ids=["check", "names-an-approval"],
)
async def test_no_pending_approval_for_a_check_or_a_request_naming_one(
    change: dict[str, Any],
) -> None:
    approvals = Requesting()
    svc, _, _ = service(OPA(needs_approval()), approvals=approvals)

    response = await svc.decide({**REQUEST, **change})

    assert "approval" not in response
    assert approvals.requested == []


async def test_no_pending_approval_when_another_reason_also_denies() -> None:
    result = needs_approval()
    assert result.decision is not None
    result.decision["reasons"].append(
        {"code": "tenant_mismatch", "message": "m", "rule": "r", "controls": []}
    )
    approvals = Requesting()
    svc, _, _ = service(OPA(result), approvals=approvals)

    response = await svc.decide(dict(REQUEST))

    assert "approval" not in response
    assert approvals.requested == []


async def test_no_pending_approval_for_an_unauthenticated_agent() -> None:
    approvals = Requesting()
    svc, _, _ = service(OPA(needs_approval()), identity=ANONYMOUS, approvals=approvals)

    await svc.decide(dict(REQUEST))

    assert approvals.requested == []


async def test_an_allow_that_needs_approval_says_so() -> None:
    result = allowing(obligations={**OBLIGATIONS, "approval": {"required": True}})
    svc, _, _ = service(OPA(result))

    response = await svc.decide(dict(REQUEST))

    assert response["reasons"][0]["message"] == "the policy requires approval"


async def test_metrics_name_unknown_failures_by_their_fallback_labels() -> None:
    result = OPAResult(decision=None, revision=None, duration_s=0.0)
    svc, _, metrics = service(OPA(result), identity=Identity(authenticated=False))

    await svc.decide(dict(REQUEST))

    assert count(metrics, "pdp_authn_failures_total", code="authn.unknown") == 1
    assert count(metrics, "pdp_opa_errors_total", kind="policy.error") == 1


async def test_a_grant_that_cannot_be_used_denies_and_the_record_says_why() -> None:
    class Spent(Approvals):
        async def use(self, approval_id: str, binding: Any, decision_id: str) -> str | None:
            return "approval_used"

    result = allowing(obligations={**OBLIGATIONS, "approval": {"required": True}})
    svc, recorder, _ = service(OPA(result), credentials=Credentials("active"), approvals=Spent())

    response = await svc.decide({**REQUEST, "approval_id": "ap-1"})

    assert response["allow"] is False
    assert response["reasons"] == [
        {
            "code": "approval_used",
            "message": "the approval could not be used for this call",
            "rule": "pdp",
            "controls": [],
        }
    ]
    assert "credential" not in response
    assert recorder.records[0]["input"]["approval"] == {
        "id": "ap-1",
        "status": "refused",
        "refusal": "approval_used",
    }


async def test_a_granted_and_used_approval_is_named_to_the_minter() -> None:
    creds = Credentials("active")
    result = allowing(obligations={**OBLIGATIONS, "approval": {"required": True}})
    svc, _, _ = service(OPA(result), credentials=creds, approvals=Approvals())

    response = await svc.decide({**REQUEST, "approval_id": "ap-1"})

    assert response["credential"] == {"token": "minted", "jti": "j-1"}
    assert creds.calls == [{"allow": True, "mint": True, "approval_id": "ap-1"}]


# --------------------------------------------------------------------------- decision cache


def decision_cache(*, active: bool = True) -> DecisionCache:
    """A real decision cache; ``active``: the bundle watch has seen revision rev-1."""
    cache = DecisionCache(max_entries=8, max_ttl_s=60, registry=CollectorRegistry())
    if active:
        cache.bundle_activated("rev-1", "gen-1")
    return cache


def cacheable() -> OPAResult:
    return allowing(cache={"ttl_seconds": 30})


async def test_a_cacheable_miss_is_stored_and_a_hit_skips_opa_but_not_the_path() -> None:
    opa = OPA(cacheable())  # a second evaluate would find no answer
    creds = Credentials("active")
    svc, recorder, metrics = service(opa, credentials=creds, cache=decision_cache())

    first = await svc.decide(dict(REQUEST))
    second = await svc.decide({**REQUEST, "request_id": "r-2"})

    assert len(opa.inputs) == 1
    assert first["allow"] is second["allow"] is True
    assert second["request_id"] == "r-2"
    assert second["credential"] == {"token": "minted", "jti": "j-1"}  # minted on a hit too
    assert [c["allow"] for c in creds.calls] == [True, True]
    miss, hit = recorder.records
    assert miss["cache"] == {"hit": False, "decision_id": None, "ttl_seconds": 30}
    assert miss["policy"]["opa_decision_id"] == "opa-1"
    assert hit["decision_id"] == second["decision_id"]
    assert hit["cache"] == {"hit": True, "decision_id": first["decision_id"], "ttl_seconds": 30}
    assert hit["policy"]["opa_decision_id"] is None
    assert hit["input"]["request"]["id"] == "r-2"
    # OPA's latency is observed for the miss only; both decisions are counted.
    assert count(metrics, "pdp_opa_request_duration_seconds_count") == 1
    assert count(metrics, "pdp_decisions_total", outcome="allow") == 2


async def test_a_decision_the_policy_does_not_make_cacheable_is_not_stored() -> None:
    cache = decision_cache()
    opa = OPA(allowing(), allowing())
    svc, recorder, _ = service(opa, cache=cache)

    await svc.decide(dict(REQUEST))
    await svc.decide(dict(REQUEST))

    assert len(opa.inputs) == 2
    assert len(cache) == 0
    assert ["cache" in r for r in recorder.records] == [False, False]


async def test_before_the_active_bundle_is_known_the_cache_is_not_asked() -> None:
    cache = decision_cache(active=False)
    opa = OPA(cacheable(), cacheable())
    svc, recorder, _ = service(opa, cache=cache)

    await svc.decide(dict(REQUEST))
    await svc.decide(dict(REQUEST))

    assert len(opa.inputs) == 2
    assert (len(cache), cache.metrics.misses._value.get()) == (0, 0)
    assert ["cache" in r for r in recorder.records] == [False, False]


async def test_an_unauthenticated_agent_is_never_looked_up_in_the_cache() -> None:
    cache = decision_cache()
    opa = OPA(cacheable(), cacheable())
    svc, _, _ = service(opa, identity=ANONYMOUS, cache=cache)

    await svc.decide(dict(REQUEST))
    await svc.decide(dict(REQUEST))

    assert len(opa.inputs) == 2
    assert (len(cache), cache.metrics.misses._value.get()) == (0, 0)


async def test_new_trust_bundles_drop_every_cached_decision() -> None:
    cache = decision_cache()
    svc, _, _ = service(OPA(cacheable()), cache=cache)
    await svc.decide(dict(REQUEST))
    assert len(cache) == 1
    new = Verifier(AGENT)

    svc.set_verifier(new)  # type: ignore[arg-type]

    assert svc.verifier is new  # type: ignore[comparison-overlap]
    assert len(cache) == 0
    assert cache.metrics.evictions.labels("trust_bundle")._value.get() == 1


def test_new_trust_bundles_without_a_cache_just_replace_the_verifier() -> None:
    svc, _, _ = service(OPA())
    new = Verifier(AGENT)

    svc.set_verifier(new)  # type: ignore[arg-type]

    assert svc.verifier is new  # type: ignore[comparison-overlap]


# --------------------------------------------------------------------------- admission


class Watching(OPA):
    """An OPA that notes the service's in_flight and in_progress as it evaluates."""

    def __init__(self, svc_box: list[DecisionService], *answers: Any) -> None:
        super().__init__(*answers)
        self.box = svc_box
        self.seen: list[tuple[int, int]] = []

    async def evaluate(self, input_doc: dict[str, Any]) -> OPAResult:
        svc = self.box[0]
        self.seen.append((svc.in_flight, svc.in_progress))
        return await super().evaluate(input_doc)


async def test_a_decision_holds_one_slot_while_it_is_evaluated_and_gives_it_back() -> None:
    box: list[DecisionService] = []
    opa = Watching(box, allowing(), RuntimeError("boom"))
    svc, _, _ = service(opa)
    box.append(svc)

    await svc.decide(dict(REQUEST))
    with pytest.raises(InternalDecisionError):
        await svc.decide(dict(REQUEST))

    assert opa.seen == [(1, 1), (1, 1)]
    assert (svc.in_flight, svc.in_progress) == (0, 0)


async def test_past_max_in_flight_a_decision_is_shed_at_once_and_nothing_recorded() -> None:
    opa = OPA(allowing())
    svc, recorder, metrics = service(opa, max_in_flight=2)

    async with svc.admit(), svc.admit():
        with pytest.raises(OverloadedError) as info:
            await svc.decide(dict(REQUEST))
        assert svc.in_flight == 2

    assert info.value.message == "2 decisions are being evaluated; retry shortly"
    assert (opa.inputs, recorder.records) == ([], [])
    assert count(metrics, "pdp_decisions_total", outcome="shed") == 1
    assert (svc.in_flight, svc.in_progress) == (0, 0)
    # The slots are free again.
    assert (await svc.decide(dict(REQUEST)))["allow"] is True


async def test_below_max_in_flight_a_decision_is_admitted() -> None:
    svc, _, metrics = service(OPA(allowing()), max_in_flight=2)

    async with svc.admit():
        assert (await svc.decide(dict(REQUEST)))["allow"] is True

    assert count(metrics, "pdp_decisions_total", outcome="shed") == 0


async def test_an_admitted_decision_uses_the_slot_its_front_door_holds() -> None:
    box: list[DecisionService] = []
    opa = Watching(box, allowing())
    svc, _, _ = service(opa, max_in_flight=1)
    box.append(svc)

    async with svc.admit():
        response = await svc.decide(dict(REQUEST), admitted=True)

    assert response["allow"] is True
    assert opa.seen == [(1, 1)]


# --------------------------------------------------------------------------- the PEP is no agent

GATEWAY = Caller(authenticated=True, id="spiffe://gw.example/gateway", method="mtls")


class DomainVerifier(Verifier):
    """A verifier whose trust bundles name the agents' trust domains."""

    def __init__(self, identity: Identity, *domains: str) -> None:
        super().__init__(identity)
        self.bundles = self
        self._domains = frozenset(domains)

    def domains(self) -> frozenset[str]:
        return self._domains


def pep_service(**kw: Any) -> tuple[DecisionService, Recorder, Credentials]:
    creds = Credentials("active")
    svc, recorder, _ = service(OPA(allowing()), credentials=creds, **kw)
    svc.verifier = DomainVerifier(AGENT, "acme.example")  # type: ignore[assignment]
    return svc, recorder, creds


@pytest.mark.parametrize(
    ("caller", "why"),
    [
        (
            Caller(authenticated=True, id=AGENT.spiffe_id, method="api_key"),
            "the caller is the agent itself",
        ),
        (
            Caller(authenticated=True, id=AGENT.spiffe_id, method="mtls"),
            "the caller is the agent itself",
        ),
        (
            Caller(authenticated=True, id="spiffe://acme.example/agents/other-bot", method="mtls"),
            "the caller is a workload of an agents' trust domain, not a gateway",
        ),
        (
            Caller(authenticated=True, id="spiffe://acme.example/gateways/gw-1", method="mtls"),
            "the caller is a workload of an agents' trust domain, not a gateway",
        ),
    ],
    ids=["agent-by-key", "agent-by-cert", "other-agent", "gateway-outside-prefix"],
)
async def test_a_caller_that_is_an_agent_is_denied_and_gets_no_credential(
    caller: Caller, why: str
) -> None:
    svc, recorder, creds = pep_service()

    response = await svc.decide(dict(REQUEST), caller=caller)

    assert response["allow"] is False
    assert response["obligations"] == {}
    assert response["reasons"] == [
        {"code": "caller.is_agent", "message": why, "rule": "pdp", "controls": []}
    ]
    assert "credential" not in response
    assert creds.calls == [{"allow": False, "mint": True, "approval_id": None}]
    assert recorder.records[0]["caller"] == caller.to_input()
    assert recorder.records[0]["decision"]["allow"] is False


@pytest.mark.parametrize(
    "caller",
    [
        ANONYMOUS_CALLER,
        GATEWAY,
        Caller(authenticated=True, id="gateway-1", method="api_key"),
        # A key-authenticated caller names an operator-registered caller, not a workload.
        Caller(authenticated=True, id="spiffe://acme.example/agents/other-bot", method="api_key"),
        # A certificate's SPIFFE ID in an agents' domain under the gateways' prefix.
        Caller(authenticated=True, id="spiffe://acme.example/gateways/gw-1", method="mtls"),
        # A certificate naming no SPIFFE ID whose tail looks like an agents' domain.
        Caller(authenticated=True, id="dns:12345acme.example", method="mtls"),
    ],
    ids=["anonymous", "gateway-domain", "key", "key-spiffe-like", "prefix", "not-spiffe"],
)
async def test_a_gateway_caller_is_not_taken_for_an_agent(caller: Caller) -> None:
    svc, recorder, _ = pep_service(gateway_id_prefix="spiffe://acme.example/gateways/")

    response = await svc.decide(dict(REQUEST), caller=caller)

    assert response["allow"] is True
    assert response["credential"] == {"token": "minted", "jti": "j-1"}
    recorded = caller.to_input() if caller.authenticated else None  # None: not recorded
    assert recorder.records[0].get("caller") == recorded


async def test_an_unauthenticated_caller_claiming_the_agents_id_is_not_judged_by_it() -> None:
    svc, _, _ = pep_service()
    claimed = Caller(authenticated=False, id=AGENT.spiffe_id, method="none")

    assert (await svc.decide(dict(REQUEST), caller=claimed))["allow"] is True


async def test_a_caller_with_no_id_is_not_the_agent_of_an_unauthenticated_request() -> None:
    # identity.spiffe_id is None for an unauthenticated agent: None == None is no match.
    svc, _, _ = pep_service()
    svc.verifier = DomainVerifier(ANONYMOUS, "acme.example")  # type: ignore[assignment]
    nobody = Caller(authenticated=True, id=None, method="none")

    response = await svc.decide(dict(REQUEST), caller=nobody)

    assert "caller.is_agent" not in [r["code"] for r in response["reasons"]]


# --------------------------------------------------------------------------- errors


async def test_a_bug_before_the_record_is_recorded_as_an_error_deny_and_raised_as_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    creds = Credentials("active")
    opa = OPA(RuntimeError("boom"))
    svc, recorder, metrics = service(opa, credentials=creds)

    with pytest.raises(InternalDecisionError) as info:
        await svc.decide(dict(REQUEST))

    [record] = recorder.records
    assert info.value.decision_id == record["decision_id"]
    assert isinstance(info.value.__cause__, RuntimeError)
    assert record["decision"] == {
        "status": 500,
        "allow": False,
        "reasons": [
            {
                "code": "internal_error",
                "message": "the PDP failed to decide; denied",
                "rule": "pdp",
                "controls": [],
            }
        ],
        "obligations": {},
        "error": "internal error (RuntimeError)",
    }
    # The full record: the request and the input that reached the failing step.
    assert (record["request_id"], record["input"]) == ("r-1", opa.inputs[0])
    assert record["identity"]["kid"] == "kid-1"
    assert creds.calls == []
    assert count(metrics, "pdp_decisions_total", outcome="error") == 1
    assert count(metrics, "pdp_decisions_total", outcome="deny") == 0
    assert count(metrics, "pdp_decision_duration_seconds_count") == 1
    # The traceback is logged under the decision's id, by the decision path's logger.
    [logged] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert (logged.name, logged.getMessage()) == (
        "pdp.decision",
        f"decision {record['decision_id']} failed",
    )
    assert logged.exc_info is not None and logged.exc_info[0] is RuntimeError


class FailingOnce(Recorder):
    """A recorder whose first record fails with ``error``; the next ones are kept."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error: Exception | None = error
        self.attempts = 0

    async def record(self, record: dict[str, Any]) -> None:
        self.attempts += 1
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        await super().record(record)


async def test_when_the_full_error_record_fails_a_minimal_one_still_names_the_decision(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = FailingOnce(ValueError("not serializable"))
    svc, _, _ = service(OPA(RuntimeError("boom")))
    svc.recorder = recorder

    with pytest.raises(InternalDecisionError) as info:
        await svc.decide(dict(REQUEST), caller=GATEWAY)

    [record] = recorder.records
    assert recorder.attempts == 2
    assert record["decision_id"] == info.value.decision_id
    assert (record["input"], record["request_id"], record["tenant"]) == (None, None, None)
    assert record["decision"]["status"] == 500
    assert record["decision"]["error"] == "internal error (RuntimeError)"
    assert [r["code"] for r in record["decision"]["reasons"]] == ["internal_error"]
    assert record["identity"] is None
    assert record["caller"] == GATEWAY.to_input()
    assert [(r.name, r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
        ("pdp.decision", f"decision {record['decision_id']} failed", True),
        (
            "pdp.decision",
            f"decision {record['decision_id']}: recording the full error record failed",
            True,
        ),
    ]


async def test_an_unavailable_trail_is_not_retried_for_the_error_record() -> None:
    recorder = FailingOnce(AuditUnavailableError("the audit trail is unavailable"))
    svc, _, _ = service(OPA(RuntimeError("boom")))
    svc.recorder = recorder

    with pytest.raises(AuditUnavailableError):
        await svc.decide(dict(REQUEST))

    assert (recorder.attempts, recorder.records) == (1, [])


async def test_an_unavailable_trail_fails_the_decision_with_503_and_no_second_record() -> None:
    recorder = FailingOnce(AuditUnavailableError("the audit trail is unavailable"))
    svc, _, metrics = service(OPA(allowing()), credentials=Credentials("active"))
    svc.recorder = recorder

    with pytest.raises(AuditUnavailableError):
        await svc.decide(dict(REQUEST))

    assert (recorder.attempts, recorder.records) == (1, [])
    assert count(metrics, "pdp_decisions_total", outcome="allow") == 0
    assert count(metrics, "pdp_decisions_total", outcome="error") == 0


async def test_a_bug_after_the_record_is_durable_is_not_recorded_twice() -> None:
    svc, recorder, metrics = service(OPA(allowing()))

    def observer(decision_id: str, doc: dict[str, Any], response: dict[str, Any]) -> None:
        raise RuntimeError("observer bug")

    svc.observer = observer

    with pytest.raises(RuntimeError, match="observer bug"):
        await svc.decide(dict(REQUEST))

    [record] = recorder.records
    assert record["decision"]["allow"] is True
    assert count(metrics, "pdp_decisions_total", outcome="error") == 0


async def test_an_unreachable_engine_without_a_credential_service_still_records() -> None:
    opa = OPA(EngineUnavailableError("OPA refused the connection", kind="connect"))
    svc, recorder, _ = service(opa)

    with pytest.raises(EngineUnavailableError) as info:
        await svc.decide(dict(REQUEST))

    assert info.value.message == "OPA refused the connection"
    assert [r["decision_id"] for r in recorder.records] == [info.value.decision_id]
    assert recorder.records[0]["decision"]["reasons"] == []


# --------------------------------------------------------------------------- refusals

REFUSAL = {"code": "route.unknown", "message": "no route", "rule": "pdp", "controls": []}


class Watched(Recorder):
    """A recorder that notes the service's in_progress as each record is written."""

    def __init__(self, box: list[DecisionService]) -> None:
        super().__init__()
        self.box = box
        self.in_progress: list[int] = []

    async def record(self, record: dict[str, Any]) -> None:
        self.in_progress.append(self.box[0].in_progress)
        await super().record(record)


async def test_a_refusal_is_one_deny_record_without_input_or_credential() -> None:
    box: list[DecisionService] = []
    svc, _, metrics = service(OPA(), credentials=Credentials("active"))
    recorder = Watched(box)
    svc.recorder = recorder
    box.append(svc)

    response = await svc.refuse(dict(REQUEST), [REFUSAL], caller=GATEWAY)
    other = await svc.refuse(dict(REQUEST), [REFUSAL], caller=GATEWAY)

    assert is_uuid(response["decision_id"]) and is_uuid(other["decision_id"])
    assert response["decision_id"] != other["decision_id"]
    assert response == {
        "decision_id": response["decision_id"],
        "allow": False,
        "reasons": [REFUSAL],
        "obligations": {},
    }
    record, _ = recorder.records
    assert record["decision_id"] == response["decision_id"]
    assert record["time"] == "2026-11-18T11:06:40.000000Z"  # the service's clock (NOW_NS)
    assert record["input"] is None
    assert record["credential"] is None
    assert record["request_id"] == "r-1"
    assert record["caller"] == GATEWAY.to_input()
    assert record["decision"] == {
        "status": 200,
        "allow": False,
        "reasons": [REFUSAL],
        "obligations": {},
        "error": None,
    }
    assert recorder.in_progress == [1, 1]  # the audit writer sees a decision in progress
    assert (svc.in_progress, svc.in_flight) == (0, 0)
    assert count(metrics, "pdp_decisions_total", outcome="deny") == 2
    assert count(metrics, "pdp_decision_reasons_total", code="route.unknown") == 2


async def test_an_anonymous_refusal_records_no_caller() -> None:
    svc, recorder, _ = service(OPA())

    await svc.refuse(dict(REQUEST), [REFUSAL])

    assert "caller" not in recorder.records[0]


async def test_a_refusal_is_shed_like_a_decision_when_every_slot_is_taken() -> None:
    svc, recorder, metrics = service(OPA(), max_in_flight=1)

    async with svc.admit():
        with pytest.raises(OverloadedError):
            await svc.refuse(dict(REQUEST), [REFUSAL])

    assert recorder.records == []
    assert count(metrics, "pdp_decisions_total", outcome="shed") == 1
    assert count(metrics, "pdp_decisions_total", outcome="deny") == 0


async def test_a_refusal_the_trail_cannot_take_is_raised_and_not_counted() -> None:
    svc, _, metrics = service(OPA())
    svc.recorder = FailingOnce(AuditUnavailableError("the audit trail is unavailable"))

    with pytest.raises(AuditUnavailableError):
        await svc.refuse(dict(REQUEST), [REFUSAL])

    assert (svc.in_progress, svc.in_flight) == (0, 0)
    assert count(metrics, "pdp_decisions_total", outcome="deny") == 0


# --------------------------------------------------------------------------- approvals, more


class Refusing(Approvals):
    """An approval service whose check finds the approval but refuses it (expired)."""

    async def check(self, approval_id: str, binding: Any) -> tuple[Approval | None, str | None]:
        self.checked.append(binding)
        return Approval(), "approval_expired"


async def test_an_approval_the_service_finds_but_refuses_is_refused_with_its_code() -> None:
    approvals = Refusing()
    result = allowing(obligations={**OBLIGATIONS, "approval": {"required": True}})
    opa = OPA(result)
    creds = Credentials("active")
    svc, _, _ = service(opa, credentials=creds, approvals=approvals)

    response = await svc.decide({**REQUEST, "approval_id": "ap-1"})

    assert opa.inputs[0]["approval"] == {
        "id": "ap-1",
        "status": "refused",
        "refusal": "approval_expired",
    }
    assert response["allow"] is False
    assert "approval_expired" in [r["code"] for r in response["reasons"]]
    assert approvals.used == []
    assert creds.calls == [{"allow": False, "mint": True, "approval_id": None}]


async def test_an_approval_the_service_does_not_know_is_refused_as_unknown() -> None:
    approvals = Approvals()
    opa = OPA(allowing())
    svc, _, _ = service(opa, approvals=approvals)

    await svc.decide({**REQUEST, "approval_id": "ap-2"})

    assert opa.inputs[0]["approval"] == {
        "id": "ap-2",
        "status": "refused",
        "refusal": "approval_unknown",
    }
    assert len(approvals.checked) == 1


@pytest.mark.parametrize("number", [float("nan"), 2.0**60], ids=["nan", "beyond-2**53"])
async def test_a_call_whose_arguments_cannot_be_bound_is_refused_as_a_mismatch(
    number: float,
) -> None:
    approvals = Approvals()
    opa = OPA(allowing())
    svc, _, _ = service(opa, approvals=approvals)
    action = {**REQUEST["action"], "arguments": {"limit": number}}

    response = await svc.decide({**REQUEST, "action": action, "approval_id": "ap-1"})

    assert opa.inputs[0]["approval"] == {
        "id": "ap-1",
        "status": "refused",
        "refusal": "approval_mismatch",
    }
    assert approvals.checked == []
    assert response["allow"] is False


async def test_approvals_are_checked_used_and_opened_for_the_calls_own_binding() -> None:
    expected = Binding.of(REQUEST, str(AGENT.spiffe_id))
    approvals = Approvals()
    result = allowing(obligations={**OBLIGATIONS, "approval": {"required": True}})
    svc, _, _ = service(OPA(result), credentials=Credentials("active"), approvals=approvals)

    await svc.decide({**REQUEST, "approval_id": "ap-1"})

    assert approvals.checked == [expected]

    class Opening(Requesting):
        async def request(
            self, decision_id: str, binding: Any, obligation: dict[str, Any]
        ) -> Pending:
            self.checked.append(binding)
            return Pending()

    opening = Opening()
    svc, _, _ = service(OPA(needs_approval()), approvals=opening)

    await svc.decide(dict(REQUEST))

    assert opening.checked == [expected]


async def test_a_check_naming_a_granted_approval_does_not_use_it() -> None:
    approvals = Approvals()
    creds = Credentials("active")
    result = allowing(obligations={**OBLIGATIONS, "approval": {"required": True}})
    svc, _, _ = service(OPA(result), credentials=creds, approvals=approvals)

    response = await svc.decide({**REQUEST, "approval_id": "ap-1", "mode": "check"})

    assert response["allow"] is True
    assert approvals.used == []
    assert "credential" not in response
    assert creds.calls == []


async def test_a_grant_that_cannot_be_used_is_not_named_to_the_minter() -> None:
    class Spent(Approvals):
        async def use(self, approval_id: str, binding: Any, decision_id: str) -> str | None:
            return "approval_used"

    creds = Credentials("active")
    result = allowing(obligations={**OBLIGATIONS, "approval": {"required": True}})
    svc, _, _ = service(OPA(result), credentials=creds, approvals=Spent())

    await svc.decide({**REQUEST, "approval_id": "ap-1"})

    assert creds.calls == [{"allow": False, "mint": True, "approval_id": None}]


async def test_no_pending_approval_for_a_pep_asserted_subject() -> None:
    request = {
        "subject": {"type": "user", "id": "alice"},
        "action": {"name": "can_delete"},
        "resource": {"type": "todo", "id": "1"},
    }
    approvals = Requesting()
    svc, _, _ = service(OPA(needs_approval()), identity=AGENT, approvals=approvals)

    response = await svc.decide(request)

    assert "approval" not in response
    assert approvals.requested == []


# --------------------------------------------------------------------------- the PDP's own denies


def denying(*reasons: dict[str, Any]) -> OPAResult:
    decision = {"allow": False, "reasons": list(reasons), "obligations": {}}
    return OPAResult(decision=decision, revision="r", duration_s=0.0)


async def test_a_pdp_deny_keeps_the_policys_reasons_sorted_by_code() -> None:
    # The policy's message sorts before the PDP's, its code after: sorted by code.
    tenant = {"code": "tenant_mismatch", "message": "a tenant", "rule": "r", "controls": []}
    svc, _, _ = pep_service()
    svc.opa = OPA(denying(tenant))  # type: ignore[assignment]
    caller = Caller(authenticated=True, id=AGENT.spiffe_id, method="mtls")

    response = await svc.decide(dict(REQUEST), caller=caller)

    assert [r["code"] for r in response["reasons"]] == ["caller.is_agent", "tenant_mismatch"]


async def test_a_pdp_deny_the_policy_already_gave_is_not_repeated() -> None:
    own = {"code": "caller.is_agent", "message": "said by policy", "rule": "r", "controls": []}
    svc, _, _ = pep_service()
    svc.opa = OPA(denying(own))  # type: ignore[assignment]
    caller = Caller(authenticated=True, id=AGENT.spiffe_id, method="mtls")

    response = await svc.decide(dict(REQUEST), caller=caller)

    assert response["reasons"] == [own]


# --------------------------------------------------------------------------- record bounds


async def test_the_audit_value_limit_bounds_free_form_values_in_the_record() -> None:
    request = {**REQUEST, "action": {**REQUEST["action"], "arguments": {"jql": "x" * 100}}}
    bounded, small, _ = service(OPA(allowing()), audit_value_limit=64)
    default, large, _ = service(OPA(allowing()))

    await bounded.decide(request)
    await default.decide(request)

    arguments = small.records[0]["input"]["action"]["arguments"]
    assert (arguments["omitted"], arguments["size"]) == (True, len('{"jql":""}') + 100)
    assert large.records[0]["input"]["action"]["arguments"] == {"jql": "x" * 100}


# --------------------------------------------------------------------------- latency


class Ticks:
    """Stands in for the ``time`` module of pdp.decision: perf_counter reads ``ticks``."""

    def __init__(self, *ticks: float) -> None:
        self.ticks = list(ticks)

    def perf_counter(self) -> float:
        return self.ticks.pop(0)


async def test_a_decisions_latency_is_measured_from_its_start_to_its_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("pdp.decision.time", Ticks(10.0, 10.25))
    svc, recorder, metrics = service(OPA(allowing()))

    await svc.decide(dict(REQUEST))

    assert recorder.records[0]["latency_us"] == 250_000
    assert count(metrics, "pdp_decision_duration_seconds_sum") == 0.25


async def test_a_refusals_latency_is_measured_from_its_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("pdp.decision.time", Ticks(5.0, 5.5))
    svc, recorder, _ = service(OPA())

    await svc.refuse(dict(REQUEST), [REFUSAL])

    assert recorder.records[0]["latency_us"] == 500_000


async def test_concurrent_decisions_are_each_counted_in_progress_and_in_flight() -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    seen: list[tuple[int, int]] = []
    box: list[DecisionService] = []

    class Held(OPA):
        """The first evaluation waits for ``release``; each notes the service's counters."""

        async def evaluate(self, input_doc: dict[str, Any]) -> OPAResult:
            seen.append((box[0].in_progress, box[0].in_flight))
            if len(seen) == 1:
                entered.set()
                await release.wait()
            return await super().evaluate(input_doc)

    svc, _, _ = service(Held(allowing(), allowing()))
    recorder = Watched(box)
    svc.recorder = recorder
    box.append(svc)

    first = asyncio.create_task(svc.decide(dict(REQUEST)))
    await entered.wait()
    second = await svc.decide(dict(REQUEST))
    await svc.refuse(dict(REQUEST), [REFUSAL])  # a refusal is in progress while written too
    release.set()
    await first

    assert seen == [(1, 1), (2, 2)]
    assert recorder.in_progress == [2, 2, 1]  # second, the refusal, then first
    assert second["allow"] is True
    assert (svc.in_progress, svc.in_flight) == (0, 0)


async def test_a_pdp_deny_of_an_allow_drops_the_policys_reasons_for_allowing() -> None:
    note = {"code": "low_risk_read", "message": "allowed: read", "rule": "r", "controls": []}
    creds = Credentials("active", "disabled")  # disabled between the decision and minting
    svc, _, _ = service(OPA(allowing(reasons=[note])), credentials=creds)

    response = await svc.decide(dict(REQUEST))

    assert response["allow"] is False
    assert [r["code"] for r in response["reasons"]] == ["agent_disabled"]


async def test_reasons_of_one_code_are_ordered_by_message() -> None:
    def tenant(message: str) -> dict[str, Any]:
        return {"code": "tenant_mismatch", "message": message, "rule": "r", "controls": []}

    svc, _, _ = pep_service()
    svc.opa = OPA(denying(tenant("b"), tenant("a")))  # type: ignore[assignment]
    caller = Caller(authenticated=True, id=AGENT.spiffe_id, method="mtls")

    response = await svc.decide(dict(REQUEST), caller=caller)

    assert [(r["code"], r["message"][:1]) for r in response["reasons"]] == [
        ("caller.is_agent", "t"),
        ("tenant_mismatch", "a"),
        ("tenant_mismatch", "b"),
    ]


async def test_an_unauthenticated_identity_gets_no_approval_binding_whatever_it_names() -> None:
    # Defense in depth: even an identity that failed verification yet carries a SPIFFE ID
    # (none does today) must not be bound to, or use, an approval.
    claimed = Identity(authenticated=False, spiffe_id=AGENT.spiffe_id, error_code="authn.x")
    approvals = Approvals()
    opa = OPA(allowing())
    svc, _, _ = service(opa, identity=claimed, approvals=approvals)

    await svc.decide({**REQUEST, "approval_id": "ap-1"})

    assert approvals.checked == []
    assert opa.inputs[0]["approval"]["refusal"] == "approval_unknown"
