"""The decision path's own logic (pdp.decision.DecisionService), with fakes for what it
calls: an OPA that answers what the test says, a recorder that keeps records, a verifier
that returns a fixed identity, a credential service that counts. The real OPA, store and
trail are exercised by tests/test_api.py, test_failclosed.py and test_credentials_api.py;
these tests pin the guards and bookkeeping of the path itself (the mutation targets).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pdp.decision import DecisionService
from pdp.errors import EngineUnavailableError, HistoryUnavailableError, StoreError
from pdp.identity import Identity
from pdp.metrics import Metrics
from pdp.opa import OPAResult
from tests.http_helpers import metric

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
