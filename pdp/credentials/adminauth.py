"""Bearer-token check of the admin and introspection endpoints (constant time)."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from ..errors import AuthError, ForbiddenError, RequestError
from ..httpio import header

__all__ = ["AdminAuth"]

log = logging.getLogger("pdp.admin")


class AdminAuth:
    """Bearer-token check of the admin and introspection endpoints (constant time)."""

    def __init__(
        self,
        admin_token: str,
        introspection_token: str | None = None,
        approver_token: str | None = None,
    ) -> None:
        self._admin = admin_token.encode()
        self._introspection = introspection_token.encode() if introspection_token else None
        self._approver = approver_token.encode() if approver_token else None

    def check_approver(self, request: web.Request) -> str:
        """The approvals endpoints: "admin" or "approver", whichever credential was
        presented (both compared in constant time); AuthError / ForbiddenError otherwise,
        each logged like a failed admin authentication."""
        presented = _presented(request, "admin or approver token")
        admin = hmac.compare_digest(presented, self._admin)
        approver = self._approver is not None and hmac.compare_digest(presented, self._approver)
        if admin:
            return "admin"
        if approver:
            return "approver"
        _log_failed_auth(request, "a wrong Bearer credential")
        raise ForbiddenError("the presented credential is not accepted here")

    def check(self, request: web.Request, *, introspection: bool = False) -> None:
        """Raise AuthError (401) without a Bearer credential, ForbiddenError (403) with a
        wrong one. ``introspection``: the introspection token is accepted too."""
        presented = _presented(request, "admin token")
        ok = hmac.compare_digest(presented, self._admin)
        if introspection and self._introspection is not None:
            ok = hmac.compare_digest(presented, self._introspection) or ok
        if not ok:
            _log_failed_auth(request, "a wrong Bearer credential")
            raise ForbiddenError("the presented credential is not accepted here")


def _presented(request: web.Request, what: str) -> bytes:
    """The Bearer credential of the request's one Authorization header (the one reading
    of :func:`pdp.httpio.header`: visible ASCII, sent once, else 400); AuthError without
    one. Every failure is logged (:func:`_log_failed_auth`), never the value."""
    try:
        raw = header(request, "Authorization") or ""
    except RequestError:
        _log_failed_auth(request, "an Authorization header that is not one visible ASCII value")
        raise
    scheme, _, value = raw.partition(" ")
    presented = value.strip().encode("ascii")
    if scheme.lower() != "bearer" or not presented:
        _log_failed_auth(request, "no Bearer credential")
        raise AuthError(f"this endpoint requires Authorization: Bearer <{what}>")
    return presented


def _log_failed_auth(request: web.Request, what: str) -> None:
    """One warning per failed admin authentication: what kind of failure, where, from
    whom; never the presented secret."""
    log.warning(
        "admin authentication failed: %s on %s %s from %s",
        what,
        request.method,
        request.path,
        request.remote,
    )
