"""Request + verified identity + clock -> the OPA input document (version 1).

A pure function: no I/O, no clock reads, no randomness. The shape is specified by
``pdp/schemas/opa-input.schema.json`` and documented in docs/policy-authoring.md.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .errors import FieldError, RequestError
from .identity import Identity
from .prompthash import PromptHasher
from .timefmt import rfc3339

__all__ = ["DEFAULT_SENSITIVITY", "SENSITIVITY_RANKS", "normalize", "rfc3339"]

INPUT_VERSION = 1

#: Sensitivity labels in rising order; the index is the rank policies compare.
SENSITIVITY_RANKS = {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}
#: What a request that does not label its data is treated as: the most restrictive label
#: (docs/policy-authoring.md, "Secure defaults"); omission never widens access.
DEFAULT_SENSITIVITY = "restricted"

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize(
    request: dict[str, Any],
    identity: Identity,
    now_ns: int,
    *,
    prompt_to_policy: bool = False,
    agent_status: str | None = None,
    prompt_hasher: PromptHasher | None = None,
    session: dict[str, Any] | None = None,
    chain: dict[str, Any] | None = None,
    approval: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the OPA input from a schema-valid decision request.

    ``approval`` is what the approval service found for the request's ``approval_id``
    (``input.approval``: granted and bound, or refused with its code); ``user`` the claims
    of a verified user assertion (``input.user``). A delegation is marked
    ``verified: true`` only when ``user`` names its subject (and tenant, if it has one);
    it is ``false`` otherwise. Neither ever comes from the request body itself.

    ``identity`` comes only from token verification; nothing in ``request`` can set it.
    ``agent_status`` is the PDP's lifecycle status of the authenticated agent ("active" or
    "disabled", from the credential service); it becomes ``input.agent.status`` and is
    null for an unauthenticated request or when the caller tracks no lifecycle.
    ``prompt_hasher`` keys the prompt's digest (``input.prompt.hmac_sha256``); without one
    the digest is null.
    ``session`` is the task/session history snapshot (:mod:`pdp.sessions`; default: no
    history, origin null) and ``chain`` the verified delegation chain (:mod:`pdp.delegation`;
    default: none); both are passed through as ``input.session`` and ``input.chain``.
    Raises :class:`RequestError` only for a URL the schema could not rule out (a bad port).

    A PEP-asserted subject request (:func:`is_asserted`) becomes the AuthZEN input
    instead (:func:`_asserted_input`).
    """
    now = rfc3339(now_ns)
    if is_asserted(request):
        return _asserted_input(request, identity, now_ns, now)
    agent = request.get("agent", {})
    action = request["action"]
    data = request.get("data", {})
    sensitivity = data.get("sensitivity", DEFAULT_SENSITIVITY)
    on_behalf_of = dict(agent.get("on_behalf_of", {}))
    if on_behalf_of:
        on_behalf_of["verified"] = _verified(on_behalf_of, user)
    doc: dict[str, Any] = {
        "version": INPUT_VERSION,
        "now": {"rfc3339": now, "unix_ns": now_ns},
        "identity": identity.to_input(),
        "agent": {
            "id": identity.path[-1] if identity.authenticated and identity.path else None,
            "status": agent_status if identity.authenticated else None,
            "on_behalf_of": on_behalf_of,
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
        "prompt": _prompt(request.get("prompt", {}), prompt_to_policy, prompt_hasher),
        "context": request.get("context", {}),
        "request": {"id": request.get("request_id"), "received_at": now},
        "session": session if session is not None else no_history(now_ns),
        "chain": chain if chain is not None else dict(NO_CHAIN),
    }
    if approval is not None:
        doc["approval"] = approval
    if user is not None:
        doc["user"] = user
    return doc


#: ``input.chain`` without a delegation assertion.
NO_CHAIN: dict[str, Any] = {
    "present": False,
    "verified": False,
    "error": None,
    "subject": None,
    "subject_tenant": None,
    "issuer": None,
    "actors": [],
    "depth": 0,
}


def no_history(now_ns: int) -> dict[str, Any]:
    """``input.session`` of a caller that keeps no history (no task, or no store)."""
    return {
        "available": True,
        "origin": None,
        "error": None,
        "read_at_ns": now_ns,
        "task": None,
        "session": None,
    }


def _verified(on_behalf_of: dict[str, Any], user: dict[str, Any] | None) -> bool:
    """The delegation names the user a verified assertion names (and the same tenant)."""
    if user is None or on_behalf_of.get("subject") != user.get("sub"):
        return False
    tenant = on_behalf_of.get("tenant")
    return tenant is None or user.get("tenant") in (None, tenant)


def is_asserted(request: dict[str, Any]) -> bool:
    """True for a request whose subject the PEP asserts (AuthZEN, not an agent token).

    Only the AuthZEN front door builds one: it has a ``subject`` member, which the
    decision request schema forbids, so no JSON API request can be read as one.
    """
    return "subject" in request


def _asserted_input(
    request: dict[str, Any], identity: Identity, now_ns: int, now: str
) -> dict[str, Any]:
    """The OPA input of a PEP-asserted AuthZEN request (docs/authzen.md).

    The subject, action, resource and context are passed as the PEP sent them (unknown
    members included, the AuthZEN rule); ``subject.asserted`` is always true and
    ``identity`` is the (unauthenticated) agent identity: no agent token was verified.
    """
    return {
        "version": INPUT_VERSION,
        "now": {"rfc3339": now, "unix_ns": now_ns},
        "identity": identity.to_input(),
        "subject": {**request["subject"], "asserted": True},
        "action": request["action"],
        "resource": request["resource"],
        "context": request.get("context", {}),
        "request": {"id": request.get("request_id"), "received_at": now},
    }


def _destination(dest: dict[str, Any]) -> dict[str, Any]:
    url = dest.get("url")
    host = scheme = port = None
    if url is not None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname  # lower-cased by urlsplit, userinfo stripped
        try:
            port = parts.port if parts.port is not None else _DEFAULT_PORTS.get(scheme)
        except ValueError:
            raise RequestError(
                "request does not match the schema",
                fields=[FieldError("/destination/url", "port is not a valid number (0-65535)")],
            ) from None
        if not host:
            raise RequestError(
                "request does not match the schema",
                fields=[FieldError("/destination/url", "URL has no host")],
            )
    return {
        "type": dest["type"],
        "name": dest["name"],
        "url": url,
        "host": host,
        "scheme": scheme,
        "port": port,
        "environment": dest.get("environment"),
    }


def _prompt(
    prompt: dict[str, Any], include_text: bool, hasher: PromptHasher | None
) -> dict[str, Any]:
    text = prompt.get("text")
    keyed = isinstance(text, str) and hasher is not None
    out: dict[str, Any] = {
        "present": text is not None,
        "hmac_sha256": hasher.digest(text) if isinstance(text, str) and hasher else None,
        "hmac_key_id": hasher.key_id if keyed and hasher else None,
        "length": len(text) if text is not None else 0,
        "risk_signals": sorted(set(prompt.get("risk_signals", ()))),
    }
    if include_text and text is not None:
        out["text"] = text
    return out
