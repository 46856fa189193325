"""Prometheus metrics, in a registry owned by the app (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    """The service's metrics; one instance per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter(
            "pdp_decisions",
            "Decisions answered, by outcome (allow, deny, error).",
            ["outcome"],
            registry=r,
        )
        self.reasons = Counter(
            "pdp_decision_reasons", "Reason codes carried by decisions.", ["code"], registry=r
        )
        self.latency = Histogram(
            "pdp_decision_duration_seconds",
            "Time to answer a decision, end to end.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.opa_latency = Histogram(
            "pdp_opa_request_duration_seconds",
            "Round trip of one OPA evaluation.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.opa_errors = Counter(
            "pdp_opa_errors",
            "OPA failures by kind (connection, timeout, policy.* codes).",
            ["kind"],
            registry=r,
        )
        self.authn_failures = Counter(
            "pdp_authn_failures",
            "Workload authentication failures, by authn.* code.",
            ["code"],
            registry=r,
        )
        self.invalid_requests = Counter(
            "pdp_invalid_requests",
            "Requests refused before a decision, by error code.",
            ["code"],
            registry=r,
        )
        self.opa_restarts = Gauge(
            "pdp_opa_sidecar_restarts", "Times the embedded OPA was restarted.", registry=r
        )
