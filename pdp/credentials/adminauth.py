"""Bearer-token check of the admin and introspection endpoints (constant time)."""

from __future__ import annotations

import hmac

from aiohttp import web

from ..errors import AuthError, ForbiddenError

__all__ = ["AdminAuth"]


class AdminAuth:
    """Bearer-token check of the admin and introspection endpoints (constant time)."""

    def __init__(self, admin_token: str, introspection_token: str | None = None) -> None:
        self._admin = admin_token.encode()
        self._introspection = introspection_token.encode() if introspection_token else None

    def check(self, request: web.Request, *, introspection: bool = False) -> None:
        """Raise AuthError (401) without a Bearer credential, ForbiddenError (403) with a
        wrong one. ``introspection``: the introspection token is accepted too."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        presented = value.strip().encode()
        if scheme.lower() != "bearer" or not presented:
            raise AuthError("this endpoint requires Authorization: Bearer <admin token>")
        ok = hmac.compare_digest(presented, self._admin)
        if introspection and self._introspection is not None:
            ok = hmac.compare_digest(presented, self._introspection) or ok
        if not ok:
            raise ForbiddenError("the presented credential is not accepted here")
