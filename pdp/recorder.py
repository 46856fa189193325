"""The one place a decision is recorded.

Today a record is one structured log line on the ``pdp.decisions`` logger. The durable,
tamper-evident audit trail plugs in here: :meth:`DecisionRecorder.record` is awaited
before the response is sent, so a durable implementation can hold the answer until its
record is on disk.

A record never holds a token or raw prompt text: tokens are named by ``jti``, prompts
by their SHA-256.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import orjson

log = logging.getLogger("pdp.decisions")


class Recorder(Protocol):
    """Anything that can record a decision (log line today, audit trail later)."""

    async def record(self, record: dict[str, Any]) -> None: ...


class LogRecorder:
    """Writes each decision record as one JSON log line."""

    async def record(self, record: dict[str, Any]) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(orjson.dumps(record).decode())


def build_record(
    *,
    decision_id: str,
    input_doc: dict[str, Any] | None,
    request: dict[str, Any],
    response: dict[str, Any],
    latency_s: float,
    kid: str | None,
    error: str | None = None,
) -> dict[str, Any]:
    """Assemble the record of one decision from what the decision path already has."""
    identity = input_doc["identity"] if input_doc else None
    action = request.get("action", {})
    return {
        "decision_id": decision_id,
        "request_id": request.get("request_id"),
        "time": input_doc["now"]["rfc3339"] if input_doc else None,
        "identity": None
        if identity is None
        else {
            "authenticated": identity["authenticated"],
            "spiffe_id": identity["spiffe_id"],
            "jti": identity["jti"],
            "kid": kid,
            "exp": identity["expires_at"],
            "error": identity["error"]["code"] if identity["error"] else None,
        },
        "tenant": request.get("tenant"),
        "task": request.get("task", {}).get("id"),
        "action": {
            "type": action.get("type"),
            "name": action.get("name"),
            "operation": action.get("operation"),
            "argument_keys": sorted(action.get("arguments", {})),
        },
        "destination": request.get("destination", {}).get("name"),
        "sensitivity": input_doc["data"]["sensitivity"] if input_doc else None,
        "prompt_sha256": input_doc["prompt"]["sha256"] if input_doc else None,
        "allow": response.get("allow", False),
        "reasons": [r["code"] for r in response.get("reasons", ())],
        "revision": response.get("policy", {}).get("revision"),
        "latency_ms": round(latency_s * 1000, 3),
        "error": error,
    }
