"""What an approval is: the call it is bound to, its state, and what each state allows.

An approval is opened (``pending``) when a decision is denied only because the action needs
a human's approval; an approver ``grant``\\ s or ``deny``\\ s it; the gateway re-sends the same
call with ``approval_id`` and the grant is *used*: one decision (or ``uses`` decisions, as
the policy says) within ``grant_ttl_s`` of the grant. The approval is bound to exactly one
call: agent, tenant, action (type, name, operation), destination and arguments digest.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import orjson

from ..timefmt import rfc3339

__all__ = [
    "APPROVAL_CODES",
    "Approval",
    "Binding",
    "Status",
    "arguments_digest",
]

Status = Literal["pending", "granted", "denied"]

#: Reason codes the PDP answers for an approval_id that does not let the call through.
APPROVAL_CODES = {
    "approval_unknown": "no approval has this id",
    "approval_pending": "the approval has not been granted yet",
    "approval_denied": "an approver denied the approval",
    "approval_expired": "the approval (or its grant) has expired",
    "approval_used": "the grant has no uses left",
    "approval_mismatch": "the approval is bound to another call",
}


def arguments_digest(arguments: Any) -> str:
    """SHA-256 (hex) of the arguments' canonical JSON (keys sorted, no whitespace)."""
    return hashlib.sha256(orjson.dumps(arguments or {}, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Binding:
    """The one call an approval covers."""

    agent: str
    tenant: str
    action_type: str
    action_name: str | None
    operation: str | None
    destination: str
    arguments_digest: str

    @classmethod
    def of(cls, request: dict[str, Any], spiffe_id: str) -> Binding:
        """The binding of a schema-valid decision request made by ``spiffe_id``."""
        action = request["action"]
        return cls(
            agent=spiffe_id,
            tenant=request["tenant"],
            action_type=action["type"],
            action_name=action.get("name"),
            operation=action.get("operation"),
            destination=request["destination"]["name"],
            arguments_digest=arguments_digest(action.get("arguments")),
        )

    def digest(self) -> str:
        """SHA-256 (hex) of the binding's canonical JSON: equal bindings, equal digests."""
        return hashlib.sha256(orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Approval:
    """One approval as the store keeps it (times are seconds since the epoch)."""

    id: str
    status: Status
    binding: Binding
    #: Why the policy asked for approval (its obligation's reason).
    reason: str
    #: The decision that opened it.
    decision_id: str
    created_at: float
    #: Until when an approver may act on it.
    expires_at: float
    #: How long a grant lasts, and how many decisions it allows (from the policy).
    grant_ttl_s: int
    uses: int
    uses_left: int
    decided_at: float | None = None
    #: Which credential decided ("admin" or "approver") and the approver's name and note.
    decided_by: str | None = None
    approver: str | None = None
    note: str | None = None
    grant_expires_at: float | None = None

    def effective(self, now: float) -> str:
        """The status as of ``now``: pending or granted past its deadline is "expired", a
        grant without uses left is "used"."""
        if self.status == "pending" and now >= self.expires_at:
            return "expired"
        if self.status == "granted":
            if self.uses_left <= 0:
                return "used"
            if self.grant_expires_at is not None and now >= self.grant_expires_at:
                return "expired"
        return self.status

    def refusal(self, binding: Binding, now: float) -> str | None:
        """Why this approval does not let ``binding`` through at ``now`` (an approval_*
        code), or None when it does."""
        if self.binding != binding:
            return "approval_mismatch"
        state = self.effective(now)
        return None if state == "granted" else f"approval_{state}"

    def granted(self, by: str, approver: str | None, note: str | None, now: float) -> Approval:
        return replace(
            self,
            status="granted",
            decided_at=now,
            decided_by=by,
            approver=approver,
            note=note,
            grant_expires_at=now + self.grant_ttl_s,
        )

    def denied(self, by: str, approver: str | None, note: str | None, now: float) -> Approval:
        return replace(
            self, status="denied", decided_at=now, decided_by=by, approver=approver, note=note
        )

    def used_once(self) -> Approval:
        return replace(self, uses_left=self.uses_left - 1)

    def input_view(self) -> dict[str, Any]:
        """input.approval: what the policy sees of a granted, bound approval."""
        assert self.grant_expires_at is not None
        out: dict[str, Any] = {
            "id": self.id,
            "status": "granted",
            "expires_at": int(self.grant_expires_at),
            "uses_left": max(self.uses_left - 1, 0),
        }
        if self.approver:
            out["approver"] = self.approver
        return out

    def pending_view(self) -> dict[str, Any]:
        """The ``approval`` member of a decision that needs one (requestable denial)."""
        return {"id": self.id, "status": "pending", "expires_at": rfc3339_s(self.expires_at)}

    def view(self, now: float) -> dict[str, Any]:
        """GET /v1/approvals: everything but nothing secret (there is nothing secret)."""
        b = self.binding
        return {
            "id": self.id,
            "status": self.effective(now),
            "reason": self.reason,
            "decision_id": self.decision_id,
            "agent": b.agent,
            "tenant": b.tenant,
            "action": {"type": b.action_type, "name": b.action_name, "operation": b.operation},
            "destination": b.destination,
            "arguments_digest": b.arguments_digest,
            "created_at": rfc3339_s(self.created_at),
            "expires_at": rfc3339_s(self.expires_at),
            "grant": {"ttl_seconds": self.grant_ttl_s, "uses": self.uses},
            "uses_left": self.uses_left,
            "decided_at": None if self.decided_at is None else rfc3339_s(self.decided_at),
            "decided_by": self.decided_by,
            "approver": self.approver,
            "note": self.note,
            "grant_expires_at": None
            if self.grant_expires_at is None
            else rfc3339_s(self.grant_expires_at),
        }

    def dumps(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def loads(cls, raw: str | bytes) -> Approval:
        doc = orjson.loads(raw)
        doc["binding"] = Binding(**doc["binding"])
        return cls(**doc)


def rfc3339_s(seconds: float) -> str:
    """RFC 3339 (UTC, microseconds) of a time in seconds."""
    return rfc3339(int(seconds * 1_000_000_000))
