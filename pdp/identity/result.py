"""The outcome of authenticating one workload token: :class:`Identity`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Identity"]


@dataclass(frozen=True, slots=True)
class Identity:
    """The outcome of authenticating one workload token.

    When ``authenticated`` is true the SPIFFE fields describe the verified ``sub``; when it
    is false only ``error_code`` ("authn.*") and ``error_message`` are meaningful.
    ``error_message`` is for humans and never contains the token.
    """

    authenticated: bool
    spiffe_id: str | None = None
    trust_domain: str | None = None
    path: tuple[str, ...] = ()
    expires_at: int | None = None
    jti: str | None = None
    kid: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    def to_input(self) -> dict[str, Any]:
        """The ``identity`` object of the OPA input (``pdp/schemas/opa-input.schema.json``)."""
        if not self.authenticated:
            return {
                "authenticated": False,
                "spiffe_id": None,
                "trust_domain": None,
                "path": None,
                "expires_at": None,
                "jti": None,
                "error": {
                    # an Identity(authenticated=False) built by hand: the policy's own fallback
                    "code": self.error_code or "authn.unauthenticated",
                    "message": self.error_message or "not authenticated",
                },
            }
        return {
            "authenticated": True,
            "spiffe_id": self.spiffe_id,
            "trust_domain": self.trust_domain,
            "path": list(self.path),
            "expires_at": self.expires_at,
            "jti": self.jti,
            "error": None,
        }

    @classmethod
    def failure(cls, code: str, message: str) -> Identity:
        """An unauthenticated identity carrying why (``code`` must start with "authn.")."""
        if not code.startswith("authn."):
            raise ValueError(f"identity error codes start with 'authn.', got {code!r}")
        return cls(authenticated=False, error_code=code, error_message=message)
