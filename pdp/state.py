"""The running app's state: one typed ``web.AppKey`` per resource.

:func:`pdp.app.create_app` sets ``SETTINGS`` and ``METRICS``; every other key is set once by
the ``cleanup_ctx`` that opens its resource (pdp/app.py) and is valid from startup on.
Front doors (pdp.admin, and adapters to come) read what they need from here, never from
pdp.app, so imports keep pointing down.
"""

from __future__ import annotations

from aiohttp import web

from .approvals import ApprovalService
from .audit.record import Recorder
from .audit.trail import AuditTrail
from .bundlestatus import BundleStatus
from .config import Settings
from .credentials import CredentialService
from .dataguard import DataGuard
from .decision import DecisionService
from .decision_cache import DecisionCache
from .identity import SVIDVerifier
from .metrics import Metrics
from .opa import OPAClient
from .shadow import ShadowEvaluator
from .sidecar import OPASidecar

__all__ = [
    "APPROVALS",
    "AUDIT",
    "BUNDLE_STATUS",
    "CREDENTIALS",
    "DATA_GUARD",
    "DECISION_CACHE",
    "DECISIONS",
    "METRICS",
    "OPA",
    "RECORDER",
    "SETTINGS",
    "SHADOW",
    "SIDECAR",
    "VERIFIER",
]

# One typed key per resource; each is opened and closed in its own cleanup_ctx (below), in
# dependency order, and set once. Handlers read what they need from its key.
SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
#: The durable audit trail; None when PDP_AUDIT_ENABLED=false.
AUDIT: web.AppKey[AuditTrail | None] = web.AppKey("audit")
#: Where decisions are recorded: the trail (durable first, then the log line) or the log.
RECORDER: web.AppKey[Recorder] = web.AppKey("recorder")
#: Credentials, revocation, agent lifecycle, keys, admin auth (pdp.admin reads it).
CREDENTIALS = web.AppKey("credentials", CredentialService)
#: Verifies agent tokens against the trust bundles (loaded from files at start).
VERIFIER = web.AppKey("verifier", SVIDVerifier)
#: The embedded OPA child process; None with a remote OPA (PDP_OPA_URL).
SIDECAR: web.AppKey[OPASidecar | None] = web.AppKey("sidecar")
#: OPA's bundle status in production mode (--opa-config / --max-bundle-age), else None.
BUNDLE_STATUS: web.AppKey[BundleStatus | None] = web.AppKey("bundle_status")
#: Shadow evaluation of a candidate bundle (--shadow-bundle), else None.
SHADOW: web.AppKey[ShadowEvaluator | None] = web.AppKey("shadow")
#: The one OPA client.
OPA = web.AppKey("opa", OPAClient)
#: Fails closed on a bundle whose data does not match its schemas (pdp.dataguard).
DATA_GUARD = web.AppKey("data_guard", DataGuard)
#: The policy-declared decision cache; None when PDP_DECISION_CACHE_SIZE=0.
DECISION_CACHE: web.AppKey[DecisionCache | None] = web.AppKey("decision_cache")
#: The decision path every front door calls.
DECISIONS = web.AppKey("decisions", DecisionService)
#: Pending approvals and grants (pdp.approvals_api and the decision path).
APPROVALS = web.AppKey("approvals", ApprovalService)
