""":class:`ApprovalService`: opening, checking, using and deciding approvals, each step
recorded in the audit trail (records of type "approval", docs/approvals.md)."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from ..audit.record import Recorder
from ..config import Settings
from ..errors import StoreError
from ..store import Store
from ..timefmt import rfc3339
from .model import Approval, Binding
from .store import ApprovalConflict, ApprovalStore, open_approval_store

__all__ = ["ApprovalService"]

log = logging.getLogger("pdp.approvals")

#: Grant lifetime and uses when the policy's approval obligation names none.
DEFAULT_GRANT_TTL_S = 900
DEFAULT_USES = 1


class ApprovalService:
    """Approvals over one :class:`ApprovalStore`, audited through ``recorder``."""

    def __init__(
        self,
        store: ApprovalStore,
        recorder: Recorder,
        *,
        pending_ttl_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.pending_ttl_s = pending_ttl_s
        self.clock = clock

    @classmethod
    async def start(
        cls,
        settings: Settings,
        recorder: Recorder,
        *,
        shared: Store | None = None,
        clock: Callable[[], float] = time.time,
    ) -> ApprovalService:
        """Approvals in the store ``settings`` name; ``shared``: the credential store open
        on it, whose Redis client the approvals reuse."""
        url = settings.store_url or f"sqlite://{settings.state_dir / 'pdp.sqlite3'}"
        store = await open_approval_store(url, password=settings.store_password(), shared=shared)
        return cls(store, recorder, pending_ttl_s=settings.approval_pending_ttl_s, clock=clock)

    async def close(self) -> None:
        await self.store.close()

    # -- decision path ----------------------------------------------------------------
    async def request(
        self,
        decision_id: str,
        binding: Binding,
        obligation: dict[str, Any],
    ) -> Approval:
        """The pending approval of a call the policy says needs one: a new one, or the one
        already pending for the same bound call (repeated requests open only one)."""
        now = self.clock()
        ttl = _whole(obligation.get("ttl_seconds"), DEFAULT_GRANT_TTL_S)
        uses = _whole(obligation.get("uses"), DEFAULT_USES)
        fresh = Approval(
            id="apr_" + secrets.token_urlsafe(16),
            status="pending",
            binding=binding,
            reason=str(obligation.get("reason") or "the policy requires a human's approval"),
            decision_id=decision_id,
            created_at=now,
            expires_at=now + self.pending_ttl_s,
            grant_ttl_s=ttl,
            uses=uses,
            uses_left=uses,
        )
        approval = await self.store.open_pending(fresh, now)
        if approval.id == fresh.id:
            await self._audit("requested", approval, now, decision_id=decision_id)
        return approval

    async def check(self, approval_id: str, binding: Binding) -> tuple[Approval | None, str | None]:
        """(the approval, None) when ``approval_id`` is granted, unexpired, has a use left
        and is bound to ``binding``; else (it or None, the approval_* code). A read: the
        use is taken by :meth:`use` once the policy allowed."""
        try:
            approval = await self.store.get(approval_id)
        except StoreError as exc:
            log.warning("approval %s could not be read: %s", approval_id, exc)
            return None, "approval_unknown"
        if approval is None:
            return None, "approval_unknown"
        return approval, approval.refusal(binding, self.clock())

    async def use(self, approval_id: str, binding: Binding, decision_id: str) -> str | None:
        """Take one use (atomically, across replicas); None, else the approval_* code."""
        now = self.clock()
        try:
            approval = await self.store.use(approval_id, binding, now)
        except ApprovalConflict as exc:
            return exc.status
        except StoreError as exc:
            log.warning("approval %s could not be used: %s", approval_id, exc)
            return "approval_unknown"
        await self._audit("used", approval, now, decision_id=decision_id)
        return None

    # -- approvers --------------------------------------------------------------------
    async def decide(
        self, approval_id: str, *, grant: bool, by: str, approver: str | None, note: str | None
    ) -> Approval:
        """Grant or deny a pending approval; ApprovalConflict when it is not pending."""
        now = self.clock()

        def change(a: Approval) -> Approval:
            return (a.granted if grant else a.denied)(by, approver, note, now)

        approval = await self.store.decide(approval_id, change, now)
        await self._audit("granted" if grant else "denied", approval, now)
        log.warning(
            "approval %s %s by %s (%s)", approval_id, approval.status, by, approver or "unnamed"
        )
        return approval

    async def get(self, approval_id: str) -> Approval | None:
        return await self.store.get(approval_id)

    async def list(self, status: str | None = None) -> list[dict[str, Any]]:
        now = self.clock()
        views = [a.view(now) for a in await self.store.list(now)]
        return [v for v in views if status is None or v["status"] == status]

    async def _audit(
        self, event: str, approval: Approval, now: float, *, decision_id: str | None = None
    ) -> None:
        """One audit record per step (the trail makes it durable before the answer)."""
        b = approval.binding
        await self.recorder.record(
            {
                "type": "approval",
                "time": rfc3339(int(now * 1_000_000_000)),
                "event": event,
                "approval_id": approval.id,
                "status": approval.effective(now),
                "decision_id": decision_id or approval.decision_id,
                "agent": b.agent,
                "tenant": b.tenant,
                "action": {"type": b.action_type, "name": b.action_name, "operation": b.operation},
                "destination": b.destination,
                "arguments_digest": b.arguments_digest,
                "binding": b.view(),
                "uses_left": approval.uses_left,
                "decided_by": approval.decided_by,
                "approver": approval.approver,
                "note": approval.note,
            }
        )


def _whole(value: Any, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else default
    )
