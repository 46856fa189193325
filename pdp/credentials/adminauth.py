"""Bearer-token check of the admin and introspection endpoints (constant time)."""

from __future__ import annotations

import hmac

from aiohttp import web

from ..errors import AuthError, ForbiddenError

__all__ = ["AdminAuth"]


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
        presented (both compared in constant time); AuthError / ForbiddenError otherwise."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        presented = value.strip().encode()
        if scheme.lower() != "bearer" or not presented:
            raise AuthError(
                "this endpoint requires Authorization: Bearer <admin or approver token>"
            )
        admin = hmac.compare_digest(presented, self._admin)
        approver = self._approver is not None and hmac.compare_digest(presented, self._approver)
        if admin:
            return "admin"
        if approver:
            return "approver"
        raise ForbiddenError("the presented credential is not accepted here")

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
