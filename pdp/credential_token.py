"""The credential format agent-pdp mints and targets verify: one place for both sides.

A credential is a compact JWS (``typ`` ``txn+jwt``, ES256/384/512) whose ``scope`` is one
action, ``<type>:<name>:<operation>`` (:func:`action_scope`). The PDP mints it
(:mod:`pdp.credentials.minting`) and introspects it; a target verifies it offline
(:func:`verify_credential`, re-exported by the target library :mod:`pdp.target`). Error codes
of :class:`CredentialError` are listed in :mod:`pdp.target`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from .jws import ALGORITHMS, verify_es

__all__ = [
    "CREDENTIAL_TYP",
    "MAX_CREDENTIAL_LENGTH",
    "CredentialError",
    "KeyLookup",
    "action_scope",
    "resource_action_name",
    "peek_header",
    "verify_credential",
]

#: The JWS "typ" of agent-pdp credentials (explicit typing, RFC 8725 §3.11).
CREDENTIAL_TYP: Final = "txn+jwt"
#: Credentials longer than this are refused before parsing.
MAX_CREDENTIAL_LENGTH: Final = 16 * 1024
_COMPACT_JWS: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

KeyLookup = Callable[[str], "tuple[str, ec.EllipticCurvePublicKey] | None"]


class CredentialError(Exception):
    """A credential was refused; ``code`` says why (see the module doc)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def action_scope(action: Mapping[str, Any]) -> str:
    """The scope of one approved action: ``<type>:<name>:<operation>``, e.g.
    ``tool.call:jira.search_issues:read``. An absent name or operation is empty
    (``model.invoke:internal-llm:``); type and operation never contain ':', so the form
    is unambiguous even for names that do."""
    return f"{action['type']}:{action.get('name') or ''}:{action.get('operation') or ''}"


def resource_action_name(uri: str) -> str:
    """The action name (and so the scope's name) of an MCP resource or other URI, in the
    action-name character set ``[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`` policies require:
    ``hr://policies/leave`` -> ``hr.policies.leave`` (``://`` and ``/`` become ``.``, any
    other character outside the set ``_``). A URI that still does not fit is
    ``resource.<sha256 prefix>``. The MCP gateway names resources with it and a target
    checks the scope with it, so both agree; policies see the URI itself in the call's
    ``arguments.uri``."""
    scheme, sep, rest = uri.partition("://")
    name = re.sub(r"/+", ".", f"{scheme}.{rest}" if sep else uri)
    name = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9_.-]", "_", name)).strip(".")
    if _ACTION_NAME.fullmatch(name):
        return name
    return "resource." + hashlib.sha256(uri.encode()).hexdigest()[:32]


_ACTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json_segment(segment: str, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(_b64decode(segment))
    except (binascii.Error, ValueError):
        raise CredentialError("malformed", f"credential {what} is not base64url JSON") from None
    if not isinstance(doc, dict):
        raise CredentialError("malformed", f"credential {what} is not a JSON object")
    return doc


def peek_header(token: str) -> dict[str, Any]:
    """The unverified JWS header (to pick the key), or CredentialError("malformed")."""
    if not isinstance(token, str) or not token:
        raise CredentialError("missing", "no credential was presented")
    if len(token) > MAX_CREDENTIAL_LENGTH or not _COMPACT_JWS.fullmatch(token):
        raise CredentialError("malformed", "credential is not a compact JWS")
    return _json_segment(token.split(".", 1)[0], "header")


def _number(claims: Mapping[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise CredentialError("malformed", f"credential has no {name!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CredentialError("malformed", f"claim {name!r} must be a number")
    return float(value)


def verify_credential(
    token: str,
    keys: KeyLookup,
    *,
    issuer: str,
    audience: str | None,
    scope: str | None,
    now: float | None = None,
    leeway_s: float = 30,
    verify_time: bool = True,
) -> dict[str, Any]:
    """Verify an agent-pdp credential offline and return its claims.

    ``keys(kid)`` gives ``(alg, public key)`` of a key in the PDP's JWKS. ``audience``
    (this service) and ``scope`` (the operation being served) are checked unless None.
    ``verify_time=False`` skips exp/nbf (for revoking a credential whatever its age).
    Raises :class:`CredentialError`. No I/O, no clock read unless ``now`` is None.
    """
    header = peek_header(token)
    if header.get("typ") != CREDENTIAL_TYP:
        raise CredentialError("wrong_type", f"typ is not {CREDENTIAL_TYP!r}")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise CredentialError("alg_not_allowed", "alg is not ES256, ES384 or ES512")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise CredentialError("unknown_kid", "credential header has no kid")
    entry = keys(kid)
    if entry is None:
        raise CredentialError("unknown_kid", "credential is signed with an unknown key")
    key_alg, public_key = entry
    if key_alg != alg:
        raise CredentialError("alg_not_allowed", f"alg {alg} is not the key's {key_alg}")
    encoded_header, encoded_claims, encoded_sig = token.split(".")
    try:
        signature = _b64decode(encoded_sig)
    except (binascii.Error, ValueError):
        raise CredentialError("malformed", "credential signature is not base64url") from None
    signing_input = f"{encoded_header}.{encoded_claims}".encode("ascii")
    if not verify_es(public_key, alg, signing_input, signature):
        raise CredentialError("invalid_signature", "credential signature does not verify")

    claims = _json_segment(encoded_claims, "payload")
    if claims.get("iss") != issuer:
        raise CredentialError("wrong_issuer", "credential was not issued by this PDP")
    exp = _number(claims, "exp", True)
    nbf = _number(claims, "nbf", False)
    _number(claims, "iat", False)
    if verify_time:
        clock = time.time() if now is None else now
        if exp is not None and clock >= exp + leeway_s:
            raise CredentialError("expired", "credential has expired")
        if nbf is not None and nbf - leeway_s > clock:
            raise CredentialError("not_yet_valid", "credential is not valid yet")
    for name in ("sub", "jti", "scope"):
        if not isinstance(claims.get(name), str) or not claims[name]:
            raise CredentialError("malformed", f"credential has no {name!r}")
    if audience is not None:
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if audience not in audiences:
            raise CredentialError("wrong_audience", "credential is not for this service")
    if scope is not None and scope not in claims["scope"].split(" "):
        raise CredentialError("insufficient_scope", f"credential does not cover {scope!r}")
    return claims
