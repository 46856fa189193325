"""Action-scoped credentials: minted on allow, introspected, revoked; and the background
work that keeps keys, the disabled-agent cache and agent activity in step with the store.

One concept per module:

    minting.py     IssuedCredential and the Minter: claims of one allowed action, signed
    adminauth.py   AdminAuth: the Bearer check of the admin and introspection endpoints
    tokenfiles.py  where the admin / introspection credentials come from (env, file, generated)
    refresh.py     RefreshLoop: keys, disabled agents and activity kept in step with the store
    service.py     CredentialService: what the decision path and the admin API hold

The credential format itself (typ, scope, offline verification) is shared with the target
library and lives below both, in :mod:`pdp.credential_token`.
"""

from __future__ import annotations

from ..answer import AGENT_DISABLED
from .adminauth import AdminAuth
from .minting import IssuedCredential, Minter
from .refresh import RefreshLoop
from .service import CredentialService
from .tokenfiles import ADMIN_TOKEN_FILE, resolve_admin_token

__all__ = [
    "ADMIN_TOKEN_FILE",
    "AGENT_DISABLED",
    "AdminAuth",
    "CredentialService",
    "IssuedCredential",
    "Minter",
    "RefreshLoop",
    "resolve_admin_token",
]
