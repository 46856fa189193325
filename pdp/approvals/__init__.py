"""Just-in-time approval: a decision that needs a human's approval is a denial with a
pending approval (no credential) until an approver grants it and the gateway re-sends the
same call with its ``approval_id`` (docs/approvals.md).

    model.py    Approval, Binding (the one call it covers), the approval_* reason codes
    store.py    approvals in SQLite or Redis, every change atomic
    service.py  ApprovalService: request, check, use, decide, list; each step audited
"""

from .model import APPROVAL_CODES, Approval, Binding
from .service import ApprovalService
from .store import ApprovalConflict, ApprovalStore

__all__ = [
    "APPROVAL_CODES",
    "Approval",
    "ApprovalConflict",
    "ApprovalService",
    "ApprovalStore",
    "Binding",
]
