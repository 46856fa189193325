"""OPA result -> the PDP's answer: the rules every decision (and every replay) is held to.

:func:`answer` is pure: a policy error denies with its ``policy.*`` reason, a policy that
allows an unauthenticated agent is overruled, and a disabled agent is denied even when the
policy forgets to. The decision service calls it for live decisions; replay
(:mod:`pdp.replay`) calls it on recorded inputs, so both apply the same rules.
"""

from __future__ import annotations

from typing import Any, Final

from .identity import Identity
from .opa import OPAResult

__all__ = ["AGENT_DISABLED", "POLICY_RULE", "answer", "reason"]

#: Reason code of a decision denied because an operator disabled the agent.
AGENT_DISABLED: Final = "agent_disabled"
#: ``rule`` of the reasons the PDP itself adds (not from a policy module).
POLICY_RULE: Final = "pdp"
#: Messages of the approval_* reasons (the approval named by approval_id does not apply).
APPROVAL_MESSAGES: Final = {
    "approval_unknown": "the request names an approval that does not exist",
    "approval_pending": "the approval has not been granted yet",
    "approval_denied": "an approver denied the approval",
    "approval_expired": "the approval, or its grant, has expired",
    "approval_used": "the approval's grant has no uses left",
    "approval_mismatch": "the approval is bound to another agent, tenant, action, destination "
    "or arguments",
}


def reason(code: str, message: str) -> dict[str, Any]:
    """A reason the PDP adds itself, in the shape policies build theirs (DESIGN §3.3)."""
    return {"code": code, "message": message, "rule": POLICY_RULE, "controls": []}


def answer(
    decision_id: str,
    request: dict[str, Any],
    identity: Identity,
    result: OPAResult,
    agent_status: str | None = None,
    *,
    asserted: bool = False,
    approval_refusal: str | None = None,
) -> dict[str, Any]:
    """The decision response for ``result`` (without a credential, which minting adds).

    ``asserted``: the subject is asserted by the PEP (AuthZEN, no agent token; see
    :func:`pdp.normalize.is_asserted`), so the policy alone decides it.
    ``approval_refusal``: the request named an ``approval_id`` that does not let it through
    (an ``approval_*`` code, as ``input.approval.refusal`` records it): always a deny.
    """
    if result.decision is None:
        allow = False
        reasons = [reason(result.error_code or "policy.error", result.error_message or "")]
        obligations: dict[str, Any] = {}
    else:
        allow = result.decision["allow"] is True
        reasons = list(result.decision["reasons"])
        obligations = result.decision.get("obligations", {})
        if allow and not identity.authenticated and not asserted:
            # A policy must never allow an unauthenticated agent; guard against bugs.
            # (A PEP-asserted subject carries no agent token: the PEP vouches for it.)
            allow = False
            reasons = [
                reason(
                    identity.error_code or "authn.unauthenticated",
                    "policy allowed an unauthenticated agent; denied by the PDP",
                )
            ]
    if agent_status == "disabled" and AGENT_DISABLED not in {r.get("code") for r in reasons}:
        # Defense in depth: a disabled agent is denied even if a policy forgets to.
        if allow:
            allow, reasons = False, []
        reasons.append(
            reason(AGENT_DISABLED, f"agent {identity.spiffe_id!r} is disabled in the PDP")
        )
    if approval_refusal is not None:
        allow = False
        if approval_refusal not in {r.get("code") for r in reasons}:
            reasons.append(reason(approval_refusal, APPROVAL_MESSAGES.get(approval_refusal, "")))
            reasons.sort(key=lambda r: (str(r.get("code")), str(r.get("message"))))
    response: dict[str, Any] = {"decision_id": decision_id}
    if "request_id" in request:
        response["request_id"] = request["request_id"]
    response.update(
        allow=allow,
        reasons=reasons,
        obligations=obligations if allow else {},
        policy={"revision": result.revision},
    )
    return response
