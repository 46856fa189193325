"""Where the admin and introspection credentials come from: the setting, a file it names,
or (admin only) ``STATE_DIR/admin-token``, generated 0600 on first start. Never logged."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Final

from ..config import Settings
from ..errors import ConfigError
from ..keys import private_dir, write_private

__all__ = [
    "ADMIN_TOKEN_FILE",
    "approver_token",
    "introspection_token",
    "read_secret",
    "resolve_admin_token",
]

log = logging.getLogger("pdp.credentials")

#: Name of the generated admin credential in the state directory.
ADMIN_TOKEN_FILE: Final = "admin-token"


def resolve_admin_token(settings: Settings) -> str:
    """The admin credential: PDP_ADMIN_TOKEN, else the file PDP_ADMIN_TOKEN_FILE names,
    else STATE_DIR/admin-token, generated (0600) on first start. Never logged."""
    if settings.admin_token:
        log.info("admin API credential: from PDP_ADMIN_TOKEN")
        return settings.admin_token
    path = settings.admin_token_file
    if path is None:
        path = settings.state_dir / ADMIN_TOKEN_FILE
        if not path.exists():
            private_dir(settings.state_dir)
            write_private(path, secrets.token_urlsafe(32).encode() + b"\n")
            log.warning("generated an admin API credential into %s (mode 0600)", path)
    token = read_secret(path)
    log.info("admin API credential: from %s", path)
    return token


def introspection_token(settings: Settings) -> str | None:
    """The extra credential introspection accepts (PDP_INTROSPECTION_TOKEN[_FILE]), if any."""
    if settings.introspection_token:
        return settings.introspection_token
    if settings.introspection_token_file is not None:
        return read_secret(settings.introspection_token_file)
    return None


def approver_token(settings: Settings) -> str | None:
    """The approvers' credential (PDP_APPROVER_TOKEN[_FILE]), if any."""
    if settings.approver_token:
        return settings.approver_token
    if settings.approver_token_file is not None:
        return read_secret(settings.approver_token_file)
    return None


def read_secret(path: Path) -> str:
    """A credential from a file (stripped); ConfigError when unreadable or too short."""
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the credential file {str(path)!r}: {exc}") from None
    if len(token) < 16:
        raise ConfigError(f"the credential in {str(path)!r} is shorter than 16 characters")
    return token
