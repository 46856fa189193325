"""Keyed prompt hashes: HMAC-SHA256 of the prompt text with a per-deployment secret.

A plain SHA-256 of a short prompt ("yes", "delete all") can be confirmed by anyone who
guesses it and hashes the guess; an HMAC cannot without the secret. Records and the OPA
input carry ``hmac_sha256`` and ``hmac_key_id`` (a public id of the secret, so that
digests made with different secrets are never compared by mistake); ``sha256`` is only in
records written before the change (docs/audit.md#prompts).

The secret: PDP_PROMPT_HASH_KEY, else the file PDP_PROMPT_HASH_KEY_FILE names, else
STATE_DIR/prompt-hash-key, generated (0600) on first start. Replicas that must produce
comparable digests share one secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from .config import Settings

log = logging.getLogger("pdp")

PROMPT_KEY_FILE = "prompt-hash-key"
_KEY_ID_LABEL = b"agent-pdp prompt-hash key id"


class PromptHasher:
    """HMAC-SHA256 of prompt texts under one secret."""

    __slots__ = ("_key", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the prompt-hash secret must be at least 16 bytes")
        self._key = key
        #: Names the secret without revealing it (HMAC of a fixed label, 16 hex digits).
        self.key_id = hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]

    def digest(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()


def resolve_prompt_hasher(settings: Settings) -> PromptHasher:
    """The deployment's prompt hasher (see the module docstring for where the secret is)."""
    if settings.prompt_hash_key:
        return PromptHasher(settings.prompt_hash_key.encode())
    path = settings.prompt_hash_key_file
    if path is None:
        path = settings.state_dir / PROMPT_KEY_FILE
        if not path.exists():
            _generate(path)
            log.warning("generated a prompt-hash secret into %s (mode 0600)", path)
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the prompt-hash secret {str(path)!r}: {exc}") from None
    return PromptHasher(key)


def _generate(path: Path) -> None:
    """A new random secret in ``path`` (0600, created exclusively: never overwritten)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_urlsafe(32).encode() + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
