"""The record of a decision, and the recorders that keep it.

:func:`build_record` assembles the record of a decision (``type: "decision"`` of
``pdp/schemas/audit-record.schema.json``); the decision path awaits
:meth:`Recorder.record` before it answers. The app's recorder is the audit trail
(:class:`pdp.audit.trail.AuditRecorder`: durable first, then the log line) or, with the
trail turned off, :class:`LogRecorder` alone.

A record never holds a token: tokens are named by ``jti``, credentials by their summary,
prompts by their SHA-256 (the text only with ``PDP_AUDIT_PROMPT=redacted|full``, and
never in the log line).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import orjson

from ..recordbounds import UNAUTHENTICATED_VALUE_BYTES, bound_key, bound_value
from .prompt import prompt_record

__all__ = [
    "CREDENTIAL_FIELDS",
    "DEFAULT_VALUE_LIMIT",
    "LogRecorder",
    "Recorder",
    "build_record",
    "replayable_input",
]

log = logging.getLogger("pdp.decisions")


class Recorder(Protocol):
    """Anything that can record a decision (log line today, audit trail later)."""

    async def record(self, record: dict[str, Any]) -> None: ...


class LogRecorder:
    """Writes each decision record as one JSON log line.

    The line leaves out the replayable ``input`` and any prompt text (hash only).
    ``deferred``: the line is formatted and written after the current step of the event
    loop (:meth:`flush`, scheduled once for every record that arrives in the same step), so
    it is off the answer's path; for use behind the durable audit trail, which is the
    record that must exist before the answer. Without the trail the line is written before
    :meth:`record` returns.
    """

    def __init__(self, *, deferred: bool = False) -> None:
        self.deferred = deferred
        self._pending: list[dict[str, Any]] = []

    async def record(self, record: dict[str, Any]) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        if not self.deferred:
            _log_line(record)
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(record)

    def flush(self) -> None:
        """Write the lines of the records waiting for it."""
        pending, self._pending = self._pending, []
        for record in pending:
            _log_line(record)


def _log_line(record: dict[str, Any]) -> None:
    line = {k: v for k, v in record.items() if k != "input"}
    prompt = line.get("prompt")
    if isinstance(prompt, dict) and ("text" in prompt or "redacted" in prompt):
        line["prompt"] = {k: v for k, v in prompt.items() if k not in {"text", "redacted"}}
    log.info(orjson.dumps(line).decode())


#: Free-form values (arguments, context) larger than this are recorded as digest + size.
DEFAULT_VALUE_LIMIT = 16 * 1024

#: The members of a credential summary a record keeps (never the token).
CREDENTIAL_FIELDS = ("jti", "aud", "scope", "exp")


def build_record(
    *,
    decision_id: str,
    input_doc: dict[str, Any] | None,
    request: dict[str, Any],
    response: dict[str, Any],
    latency_s: float,
    kid: str | None,
    error: str | None = None,
    credential: dict[str, Any] | None = None,
    prompt_mode: str = "hash",
    opa_decision_id: str | None = None,
    caller: dict[str, Any] | None = None,
    value_limit: int = DEFAULT_VALUE_LIMIT,
    status: int | None = None,
    cache: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the record of one decision from what the decision path already has.

    The shape is ``pdp/schemas/audit-record.schema.json`` (type "decision"); the audit
    trail adds ``seq``, ``prev`` and ``hash``. ``credential`` is the minted credential's
    summary: only its ``jti``, ``aud``, ``scope`` and ``exp`` are kept. ``input`` is the
    OPA input minus any prompt text, so the decision can be replayed. ``cache`` (only when
    the decision cache was involved): ``{"hit": true, "decision_id": <the decision whose
    answer was reused>, "ttl_seconds"}`` on a hit, ``{"hit": false, "decision_id": null,
    "ttl_seconds"}`` when this decision was stored for later hits.

    Sizes are bounded (pdp.recordbounds): free-form values over ``value_limit`` bytes (256
    when the agent did not authenticate) are kept as digest and size, and the prompt of an
    unauthenticated request by hash only. ``caller`` is the authenticated caller (the PEP,
    pdp.callers), None when caller authentication is off. ``status`` is the HTTP status
    answered (default: 503 when there is an ``error``, else 200).
    """
    doc = input_doc or {}
    identity = doc.get("identity")
    if not (isinstance(identity, dict) and identity.get("authenticated") is True):
        value_limit = min(value_limit, UNAUTHENTICATED_VALUE_BYTES)
        prompt_mode = "hash"
    action = request.get("action") or {}
    arguments = action.get("arguments") or {}
    task = request.get("task") or {}
    dest = doc.get("destination") or {}
    data = doc.get("data") or {}
    record: dict[str, Any] = {
        "type": "decision",
        "time": doc["now"]["rfc3339"] if doc else None,
        "decision_id": decision_id,
        "request_id": request.get("request_id"),
        "identity": None
        if identity is None
        else {
            "authenticated": identity["authenticated"],
            "spiffe_id": identity["spiffe_id"],
            "trust_domain": identity.get("trust_domain"),
            "kid": kid,
            "jti": identity["jti"],
            "exp": identity["expires_at"],
            "error": identity["error"]["code"] if identity["error"] else None,
        },
        "agent": {
            "id": (doc.get("agent") or {}).get("id"),
            "on_behalf_of": (request.get("agent") or {}).get("on_behalf_of") or {},
        },
        "tenant": request.get("tenant"),
        "task": {k: task.get(k) for k in ("id", "purpose", "session")},
        "action": {
            "type": action.get("type"),
            "name": action.get("name"),
            "operation": action.get("operation"),
            "argument_keys": sorted(bound_key(k) for k in arguments),
        },
        "destination": {
            "type": dest.get("type"),
            "name": dest.get("name"),
            "host": dest.get("host"),
            "environment": dest.get("environment"),
        },
        "data": {
            "sensitivity": data.get("sensitivity"),
            "categories": list(data.get("categories", [])),
        },
        "prompt": prompt_record(request.get("prompt"), doc.get("prompt"), prompt_mode),
        "input": _bounded_input(replayable_input(input_doc), value_limit),
        "decision": {
            "status": status if status is not None else 503 if error is not None else 200,
            "allow": response.get("allow", False) is True,
            "reasons": list(response.get("reasons", [])),
            "obligations": response.get("obligations", {}),
            "error": error,
        },
        # The minted credential by id only; never the token.
        "credential": None
        if credential is None
        else {k: credential.get(k) for k in CREDENTIAL_FIELDS},
        "policy": {
            "revision": (response.get("policy") or {}).get("revision"),
            "opa_decision_id": opa_decision_id,
        },
        "latency_us": round(latency_s * 1_000_000),
    }
    if cache is not None:
        record["cache"] = cache
    if caller is not None:
        record["caller"] = caller
    return record


def _bounded_input(input_doc: dict[str, Any] | None, limit: int) -> dict[str, Any] | None:
    """The recorded input with its free-form values bounded (pdp.recordbounds)."""
    if input_doc is None:
        return None
    out = dict(input_doc)
    action = out.get("action")
    if isinstance(action, dict) and "arguments" in action:
        out["action"] = {**action, "arguments": bound_value(action["arguments"], limit)}
    if "context" in out:
        out["context"] = bound_value(out["context"], limit)
    return out


def replayable_input(input_doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The OPA input as recorded: everything but the prompt text."""
    if input_doc is None:
        return None
    prompt = input_doc.get("prompt")
    if isinstance(prompt, dict) and "text" in prompt:
        return {**input_doc, "prompt": {k: v for k, v in prompt.items() if k != "text"}}
    return input_doc
