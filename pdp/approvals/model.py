"""What an approval is: the call it is bound to, its state, and what each state allows.

An approval is opened (``pending``) when a decision is denied only because the action needs
a human's approval; an approver ``grant``\\ s or ``deny``\\ s it; the gateway re-sends the same
call with ``approval_id`` and the grant is *used*: one decision (or ``uses`` decisions, as
the policy says) within ``grant_ttl_s`` of the grant. The approval is bound to exactly one
call: everything decision-relevant the approver approves (:class:`Binding`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from ..normalize import DEFAULT_SENSITIVITY
from ..timefmt import rfc3339

__all__ = [
    "APPROVAL_CODES",
    "Approval",
    "Binding",
    "Status",
    "Unbindable",
    "arguments_digest",
    "canonical_url",
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


class Unbindable(ValueError):
    """The call's arguments (or context) hold a number that parsing may have changed (an
    integral float beyond 2**53, NaN, infinity): no digest could tell two such calls apart,
    so no approval can be bound to (or used for) it."""


#: Beyond this, an integral float stands for many integers (JSON text parsed lossily).
_EXACT_INT = 2**53


def _check_exact(value: Any) -> None:
    if isinstance(value, float) and (
        not math.isfinite(value) or (value.is_integer() and abs(value) >= _EXACT_INT)
    ):
        raise Unbindable("arguments hold a number that is not exactly representable")
    if isinstance(value, dict):
        for item in value.values():
            _check_exact(item)
    elif isinstance(value, list):
        for item in value:
            _check_exact(item)


def arguments_digest(arguments: Any) -> str:
    """SHA-256 (hex) of the arguments' canonical JSON (keys sorted, no whitespace, integers
    exact); :class:`Unbindable` for arguments whose numbers parsing may have rounded."""
    _check_exact(arguments)
    canonical = json.dumps(
        arguments or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_url(url: str | None) -> str | None:
    """The destination URL as the policy sees it: scheme and host lower-cased, the port
    explicit, userinfo, path, query and fragment verbatim (so two URLs the PDP or a target
    could tell apart never share a form). A URL it cannot parse stays as sent (the decision
    refuses it with 400 anyway)."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        port = parts.port if parts.port is not None else _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return url
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else None
    host = f"[{host}]" if ":" in host else host
    out = f"{scheme}://" + (f"{userinfo}@" if userinfo is not None else "") + host
    out += f":{port}" if port is not None else ""
    out += parts.path
    out += f"?{parts.query}" if parts.query or "?" in url.split("#", 1)[0] else ""
    out += f"#{parts.fragment}" if parts.fragment or "#" in url else ""
    return out


#: Bumped whenever the binding gains a fact: an approval stored under an older binding is
#: bound to no call this PDP sees (approval_mismatch), never to a looser one.
BINDING_VERSION = 3


@dataclass(frozen=True, slots=True)
class Binding:
    """The one call an approval covers: every decision-relevant fact the approver approves."""

    agent: str
    tenant: str
    action_type: str
    action_name: str | None
    operation: str | None
    #: The destination's name.
    destination: str
    arguments_digest: str
    destination_type: str | None = None
    #: :func:`canonical_url` of the destination URL.
    destination_url: str | None = None
    destination_environment: str | None = None
    on_behalf_of_subject: str | None = None
    on_behalf_of_tenant: str | None = None
    task_id: str | None = None
    task_purpose: str | None = None
    task_session: str | None = None
    data_sensitivity: str | None = None
    data_categories: tuple[str, ...] = ()
    #: SHA-256 of the context's canonical JSON (as :func:`arguments_digest`; absent = {}):
    #: it reaches policy, and at the ext_authz doors it names the real call
    #: (``context.http``: the original method, host and path).
    context_digest: str | None = None
    version: int = BINDING_VERSION

    @classmethod
    def of(cls, request: dict[str, Any], spiffe_id: str) -> Binding:
        """The binding of a schema-valid decision request made by ``spiffe_id``;
        :class:`Unbindable` when its arguments or context cannot be digested exactly."""
        action = request["action"]
        dest = request["destination"]
        on_behalf_of = (request.get("agent") or {}).get("on_behalf_of") or {}
        task = request.get("task") or {}
        data = request.get("data") or {}
        return cls(
            agent=spiffe_id,
            tenant=request["tenant"],
            action_type=action["type"],
            action_name=action.get("name"),
            operation=action.get("operation"),
            destination=dest["name"],
            arguments_digest=arguments_digest(action.get("arguments")),
            destination_type=dest.get("type"),
            destination_url=canonical_url(dest.get("url")),
            destination_environment=dest.get("environment"),
            on_behalf_of_subject=on_behalf_of.get("subject"),
            on_behalf_of_tenant=on_behalf_of.get("tenant"),
            task_id=task.get("id"),
            task_purpose=task.get("purpose"),
            task_session=task.get("session"),
            data_sensitivity=data.get("sensitivity", DEFAULT_SENSITIVITY),
            data_categories=tuple(sorted(set(data.get("categories", ())))),
            context_digest=arguments_digest(request.get("context")),
        )

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Binding:
        """A stored binding; one stored before a fact was bound keeps its old version (and
        so matches no call)."""
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in doc.items() if k in known}
        kept.setdefault("version", 1)
        kept["data_categories"] = tuple(kept.get("data_categories") or ())
        return cls(**kept)

    def view(self) -> dict[str, Any]:
        """Everything the approval is bound to, as the approver and the audit trail see it."""
        return {
            "agent": self.agent,
            "tenant": self.tenant,
            "action": {
                "type": self.action_type,
                "name": self.action_name,
                "operation": self.operation,
                "arguments_digest": self.arguments_digest,
            },
            "destination": {
                "type": self.destination_type,
                "name": self.destination,
                "url": self.destination_url,
                "environment": self.destination_environment,
            },
            "on_behalf_of": {
                "subject": self.on_behalf_of_subject,
                "tenant": self.on_behalf_of_tenant,
            },
            "task": {
                "id": self.task_id,
                "purpose": self.task_purpose,
                "session": self.task_session,
            },
            "data": {
                "sensitivity": self.data_sensitivity,
                "categories": list(self.data_categories),
            },
            "context_digest": self.context_digest,
        }

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
            "binding": b.view(),
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
        doc["binding"] = Binding.from_json(doc["binding"])
        return cls(**doc)


def rfc3339_s(seconds: float) -> str:
    """RFC 3339 (UTC, microseconds) of a time in seconds."""
    return rfc3339(int(seconds * 1_000_000_000))
