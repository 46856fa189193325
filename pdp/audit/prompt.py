"""How a prompt is recorded: ``PDP_AUDIT_PROMPT`` = hash | redacted | full.

- ``hash`` (default): keyed digest (HMAC-SHA256, :mod:`pdp.prompthash`), length and risk
  signals; the text is not kept.
- ``redacted``: the above plus the text with, in this order, JWTs -> ``[token]``, URLs'
  user:password@ -> ``[credentials]@``, e-mail addresses -> ``[email]``, IPv4 addresses ->
  ``[ip]``, runs of 20+ letters/digits/``+/=_-`` that mix letters and digits (keys,
  secrets) -> ``[secret]``, and runs of 6+ digits (allowing spaces, dots and dashes
  between them: card, phone and account numbers) -> ``[number]``; cut to 4096 characters.
  Masking is best effort, not a guarantee: treat a redacted trail as sensitive.
- ``full``: the above plus the raw text (only where the trail is as protected as the
  prompts themselves).
"""

from __future__ import annotations

import re
from typing import Any

#: Longest redacted text kept in a record, characters.
REDACTED_MAX_CHARS = 4096

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "[token]"),
    (re.compile(r"(?<=://)[^\s/@:]+:[^\s/@]+@"), "[credentials]@"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[email]"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), "[ip]"),
    (
        re.compile(r"(?=[A-Za-z0-9+/=_-]*\d)(?=[A-Za-z0-9+/=_-]*[A-Za-z])[A-Za-z0-9+/=_-]{20,}"),
        "[secret]",
    ),  # fmt: skip
    (re.compile(r"\d(?:[ .-]?\d){5,}"), "[number]"),
)


def redact(text: str) -> str:
    """``text`` with tokens, e-mails, credentials, IPs, secrets and long numbers masked."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text[:REDACTED_MAX_CHARS]


def prompt_record(
    request_prompt: dict[str, Any] | None, input_prompt: dict[str, Any] | None, mode: str
) -> dict[str, Any]:
    """The ``prompt`` member of a decision record under ``mode``."""
    src = input_prompt or {}
    out: dict[str, Any] = {
        "mode": mode,
        "present": bool(src.get("present", False)),
        "hmac_sha256": src.get("hmac_sha256"),
        "hmac_key_id": src.get("hmac_key_id"),
        "length": src.get("length", 0),
        "risk_signals": list(src.get("risk_signals", [])),
        "to_policy": "text" in src,
    }
    text = (request_prompt or {}).get("text")
    if isinstance(text, str):
        if mode == "redacted":
            out["redacted"] = redact(text)
        elif mode == "full":
            out["text"] = text
    return out
