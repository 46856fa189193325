"""Request + verified identity + clock -> the OPA input document (version 1).

A pure function: no I/O, no clock reads, no randomness. The shape is specified by
``pdp/schemas/opa-input.schema.json`` and documented in docs/policy-authoring.md.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .errors import FieldError, RequestError
from .identity import Identity
from .timefmt import rfc3339
from .urls import URLError, canonical_url

__all__ = ["DEFAULT_SENSITIVITY", "SENSITIVITY_RANKS", "normalize", "rfc3339"]

INPUT_VERSION = 1
#: input.pep when caller authentication is off (pdp.callers.ANONYMOUS).
_NO_PEP = {"authenticated": False, "id": None, "method": "none"}

#: Sensitivity labels in rising order; the index is the rank policies compare.
SENSITIVITY_RANKS = {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}
#: What a request that does not label its data is treated as.
DEFAULT_SENSITIVITY = "internal"


def normalize(
    request: dict[str, Any],
    identity: Identity,
    now_ns: int,
    *,
    prompt_to_policy: bool = False,
    agent_status: str | None = None,
    pep: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the OPA input from a schema-valid decision request.

    ``identity`` comes only from token verification; nothing in ``request`` can set it.
    ``pep`` is the authenticated caller (pdp.callers: ``{authenticated, id, method}``),
    which becomes ``input.pep``; ``None`` means no caller authentication.
    ``agent_status`` is the PDP's lifecycle status of the authenticated agent ("active" or
    "disabled", from the credential service); it becomes ``input.agent.status`` and is
    null for an unauthenticated request or when the caller tracks no lifecycle.
    Raises :class:`RequestError` only for a URL that is not one unambiguous reading
    (:mod:`pdp.urls`): policy sees the canonical URL, scheme, host and port.
    """
    now = rfc3339(now_ns)
    agent = request.get("agent", {})
    action = request["action"]
    data = request.get("data", {})
    sensitivity = data.get("sensitivity", DEFAULT_SENSITIVITY)
    doc: dict[str, Any] = {
        "version": INPUT_VERSION,
        "now": {"rfc3339": now, "unix_ns": now_ns},
        "identity": identity.to_input(),
        "agent": {
            "id": identity.path[-1] if identity.authenticated and identity.path else None,
            "status": agent_status if identity.authenticated else None,
            "on_behalf_of": dict(agent.get("on_behalf_of", {})),
        },
        "tenant": request["tenant"],
        "task": dict(request.get("task", {})),
        "action": {
            "type": action["type"],
            "name": action.get("name"),
            "operation": action.get("operation"),
            "arguments": action.get("arguments", {}),
        },
        "destination": _destination(request["destination"]),
        "data": {
            "sensitivity": sensitivity,
            "sensitivity_rank": SENSITIVITY_RANKS[sensitivity],
            "categories": sorted(set(data.get("categories", ()))),
        },
        "prompt": _prompt(request.get("prompt", {}), prompt_to_policy),
        "context": request.get("context", {}),
        "request": {"id": request.get("request_id"), "received_at": now},
        # The authenticated caller (gateway) that asked: {authenticated, id, method}.
        "pep": dict(pep) if pep is not None else dict(_NO_PEP),
    }
    return doc


def _destination(dest: dict[str, Any]) -> dict[str, Any]:
    url = dest.get("url")
    host = scheme = port = None
    if url is not None:
        try:
            canonical = canonical_url(url)
        except URLError as exc:
            raise RequestError(
                "request does not match the schema",
                fields=[FieldError("/destination/url", str(exc))],
            ) from None
        url, host, scheme, port = canonical.url, canonical.host, canonical.scheme, canonical.port
    return {
        "type": dest["type"],
        "name": dest["name"],
        "url": url,
        "host": host,
        "scheme": scheme,
        "port": port,
        "environment": dest.get("environment"),
    }


def _prompt(prompt: dict[str, Any], include_text: bool) -> dict[str, Any]:
    text = prompt.get("text")
    out: dict[str, Any] = {
        "present": text is not None,
        "sha256": hashlib.sha256(text.encode()).hexdigest() if text is not None else None,
        "length": len(text) if text is not None else 0,
        "risk_signals": sorted(set(prompt.get("risk_signals", ()))),
    }
    if include_text and text is not None:
        out["text"] = text
    return out
