"""OPA result -> answer (pdp.answer): the PDP's own deny rules over whatever a policy says.

These are the defences a policy bug cannot switch off: a policy error denies, an allow for an
unauthenticated agent is overruled, a disabled agent is denied even when the policy forgets.
Unit tests of our own logic (OPAResult values built by hand; the policies' own behaviour is
tested against a real OPA elsewhere).
"""

from __future__ import annotations

from typing import Any

import pytest

from pdp.answer import AGENT_DISABLED, APPROVAL_MESSAGES, answer, reason
from pdp.identity import Identity
from pdp.opa import OPAResult

AGENT = Identity(
    authenticated=True,
    spiffe_id="spiffe://acme.example/agents/support-bot",
    trust_domain="acme.example",
    path=("agents", "support-bot"),
)
ANONYMOUS = Identity.failure("authn.expired", "token has expired")
OBLIGATIONS = {"credential": {"ttl_seconds": 60}, "recheck_at_target": False}
TENANCY = {"code": "tenant_mismatch", "message": "m", "rule": "pdp.rules.tenancy", "controls": []}


def allowing() -> OPAResult:
    decision = {"allow": True, "reasons": [], "obligations": OBLIGATIONS}
    return OPAResult(decision=decision, revision="rev-1", duration_s=0.001)


def denying(*reasons: dict[str, Any]) -> OPAResult:
    decision = {"allow": False, "reasons": list(reasons), "obligations": OBLIGATIONS}
    return OPAResult(decision=decision, revision="rev-1", duration_s=0.001)


def codes(response: dict[str, Any]) -> list[str]:
    return [r["code"] for r in response["reasons"]]


def test_an_allow_for_an_active_agent_keeps_the_policy_obligations() -> None:
    response = answer("d-1", {}, AGENT, allowing(), "active")

    assert response == {
        "decision_id": "d-1",
        "allow": True,
        "reasons": [],
        "obligations": OBLIGATIONS,
        "policy": {"revision": "rev-1"},
    }


def test_a_disabled_agent_is_denied_even_when_the_policy_allows() -> None:
    response = answer("d-1", {}, AGENT, allowing(), "disabled")

    assert response["allow"] is False
    assert response["reasons"] == [
        reason(
            AGENT_DISABLED,
            "agent 'spiffe://acme.example/agents/support-bot' is disabled in the PDP",
        )
    ]
    assert response["obligations"] == {}


def test_a_disabled_agent_denied_for_another_reason_also_gets_agent_disabled() -> None:
    response = answer("d-1", {}, AGENT, denying(TENANCY), "disabled")

    assert response["allow"] is False
    assert codes(response) == ["tenant_mismatch", AGENT_DISABLED]


def test_agent_disabled_is_not_repeated_when_the_policy_already_gave_it() -> None:
    policy_reason = {**TENANCY, "code": AGENT_DISABLED, "rule": "pdp.rules.lifecycle"}

    response = answer("d-1", {}, AGENT, denying(policy_reason), "disabled")

    assert response["reasons"] == [policy_reason]


@pytest.mark.parametrize("status", [None, "active"])
def test_an_agent_that_is_not_disabled_gets_the_policy_answer(status: str | None) -> None:
    response = answer("d-1", {}, AGENT, denying(TENANCY), status)

    assert response["reasons"] == [TENANCY]


def test_an_allow_for_an_unauthenticated_agent_is_overruled_with_its_authn_code() -> None:
    response = answer("d-1", {}, ANONYMOUS, allowing(), None)

    assert response["allow"] is False
    assert response["reasons"] == [
        reason("authn.expired", "policy allowed an unauthenticated agent; denied by the PDP")
    ]
    assert response["obligations"] == {}


def test_an_unauthenticated_identity_without_a_code_is_overruled_as_unauthenticated() -> None:
    response = answer("d-1", {}, Identity(authenticated=False), allowing(), None)

    assert codes(response) == ["authn.unauthenticated"]


def test_a_deny_for_an_unauthenticated_agent_keeps_the_policy_reasons() -> None:
    response = answer("d-1", {}, ANONYMOUS, denying(TENANCY), None)

    assert response["reasons"] == [TENANCY]


def test_a_policy_error_denies_with_its_code_and_message() -> None:
    result = OPAResult(
        decision=None,
        revision="rev-2",
        duration_s=0.0,
        error_code="policy.undefined",
        error_message="the decision is undefined",
    )

    response = answer("d-1", {}, AGENT, result, "active")

    assert response == {
        "decision_id": "d-1",
        "allow": False,
        "reasons": [reason("policy.undefined", "the decision is undefined")],
        "obligations": {},
        "policy": {"revision": "rev-2"},
    }


def test_a_policy_error_without_a_code_is_policy_error() -> None:
    result = OPAResult(decision=None, revision=None, duration_s=0.0)

    assert answer("d-1", {}, AGENT, result)["reasons"] == [reason("policy.error", "")]


def test_only_a_literal_true_allows() -> None:
    result = OPAResult(
        decision={"allow": "yes", "reasons": [], "obligations": OBLIGATIONS},
        revision="r",
        duration_s=0.0,
    )

    response = answer("d-1", {}, AGENT, result, "active")

    assert (response["allow"], response["obligations"]) == (False, {})


def test_a_decision_without_obligations_allows_with_none() -> None:
    result = OPAResult(decision={"allow": True, "reasons": []}, revision="r", duration_s=0.0)

    assert answer("d-1", {}, AGENT, result)["obligations"] == {}


def test_the_request_id_is_echoed_only_when_the_request_has_one() -> None:
    assert answer("d-1", {"request_id": "r-7"}, AGENT, allowing())["request_id"] == "r-7"
    assert "request_id" not in answer("d-1", {}, AGENT, allowing())


def test_pdp_reasons_name_the_pdp_as_their_rule() -> None:
    assert reason("x", "y") == {"code": "x", "message": "y", "rule": "pdp", "controls": []}


# --------------------------------------------------------------------------- approvals


def test_the_pdp_reason_codes_are_the_documented_ones() -> None:
    assert AGENT_DISABLED == "agent_disabled"
    assert APPROVAL_MESSAGES == {
        "approval_unknown": "the request names an approval that does not exist",
        "approval_pending": "the approval has not been granted yet",
        "approval_denied": "an approver denied the approval",
        "approval_expired": "the approval, or its grant, has expired",
        "approval_used": "the approval's grant has no uses left",
        "approval_mismatch": "the approval is bound to another agent, tenant, action, "
        "destination or arguments",
    }


REFUSALS = [
    "approval_denied",
    "approval_expired",
    "approval_mismatch",
    "approval_pending",
    "approval_unknown",
    "approval_used",
]


@pytest.mark.parametrize("refusal", REFUSALS)
def test_an_approval_that_does_not_apply_denies_even_an_allow(refusal: str) -> None:
    response = answer("d-1", {}, AGENT, allowing(), "active", approval_refusal=refusal)

    assert response["allow"] is False
    assert response["reasons"] == [reason(refusal, APPROVAL_MESSAGES[refusal])]
    assert response["obligations"] == {}


def test_an_approval_refusal_joins_the_policy_reasons_in_code_order() -> None:
    late = {**TENANCY, "code": "z_rule"}
    response = answer("d-1", {}, AGENT, denying(late, TENANCY), approval_refusal="approval_used")

    assert codes(response) == ["approval_used", "tenant_mismatch", "z_rule"]


def test_reasons_of_one_code_are_ordered_by_message() -> None:
    second = {**TENANCY, "message": "b"}
    first = {**TENANCY, "message": "a"}
    result = denying(second, first)

    response = answer("d-1", {}, AGENT, result, approval_refusal="approval_denied")

    assert [r["message"] for r in response["reasons"]][1:] == ["a", "b"]


def test_an_approval_refusal_the_policy_already_gave_is_not_repeated() -> None:
    given = reason("approval_pending", "from the policy")

    response = answer("d-1", {}, AGENT, denying(given), approval_refusal="approval_pending")

    assert response["reasons"] == [given]


def test_an_unknown_approval_refusal_still_denies_with_an_empty_message() -> None:
    response = answer("d-1", {}, AGENT, allowing(), approval_refusal="approval_new_kind")

    assert response["allow"] is False
    assert response["reasons"] == [reason("approval_new_kind", "")]


def test_a_pep_asserted_subject_is_decided_by_the_policy_alone() -> None:
    response = answer("d-1", {}, Identity(authenticated=False), allowing(), asserted=True)

    assert (response["allow"], response["obligations"]) == (True, OBLIGATIONS)
