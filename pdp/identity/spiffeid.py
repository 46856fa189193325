"""SPIFFE IDs: ``spiffe://<trust domain>/<path>``, parsed and validated (SPIFFE-ID spec)."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_SPIFFE_ID_LENGTH", "check_trust_domain", "clip", "parse_spiffe_id", "shorten"]

#: SPIFFE-ID spec §2.3: implementations must support IDs up to 2048 bytes; longer is refused.
MAX_SPIFFE_ID_LENGTH: Final = 2048
#: RFC 3986 host limit, which the SPIFFE-ID spec applies to trust domain names.
MAX_TRUST_DOMAIN_LENGTH: Final = 255
_SPIFFE_SCHEME: Final = "spiffe://"
_TRUST_DOMAIN_RE: Final = re.compile(r"[a-z0-9._-]+")
_PATH_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9._-]+")
_UNRESERVED_TD_HINT: Final = "lowercase letters, digits, '.', '-' and '_'"


def clip(value: object, limit: int = 80) -> str:
    """``repr`` of an untrusted value, bounded so it can go into messages and logs."""
    return shorten(repr(value), limit)


def shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_trust_domain(domain: str) -> None:
    if not domain:
        raise ValueError("trust domain is missing")
    if len(domain) > MAX_TRUST_DOMAIN_LENGTH:
        raise ValueError(f"trust domain is longer than {MAX_TRUST_DOMAIN_LENGTH} characters")
    if "@" in domain:
        raise ValueError("userinfo is not allowed in a SPIFFE ID")
    if ":" in domain:
        raise ValueError("a port is not allowed in a SPIFFE ID trust domain")
    if not _TRUST_DOMAIN_RE.fullmatch(domain):
        raise ValueError(
            f"trust domain {clip(domain)} may contain only {_UNRESERVED_TD_HINT}"
            + (" (it must be lowercase)" if domain.lower() != domain else "")
        )


def parse_spiffe_id(value: str) -> tuple[str, tuple[str, ...]]:
    """Validate a SPIFFE ID and split it into ``(trust_domain, path_segments)``.

    Follows the SPIFFE-ID spec (as enforced by go-spiffe): scheme exactly ``spiffe``; a
    non-empty trust domain of ``[a-z0-9._-]`` (no userinfo, no port); no query or fragment;
    each path segment non-empty, of ``[A-Za-z0-9._-]``, and neither ``.`` nor ``..`` (so no
    trailing slash and no percent-encoding). ``spiffe://example.org`` (no path) is a valid
    SPIFFE ID naming the trust domain itself and yields ``()``; callers wanting a workload
    must check the path. Raises ``ValueError`` saying what is wrong.
    """
    if not isinstance(value, str):
        raise ValueError(f"a SPIFFE ID must be a string, not {type(value).__name__}")
    if not value:
        raise ValueError("SPIFFE ID is empty")
    if not value.isascii():
        raise ValueError("SPIFFE ID must be ASCII")
    if len(value) > MAX_SPIFFE_ID_LENGTH:
        raise ValueError(f"SPIFFE ID is longer than {MAX_SPIFFE_ID_LENGTH} bytes")
    if not value.startswith(_SPIFFE_SCHEME):
        raise ValueError(f"{clip(value)} is not a SPIFFE ID: the scheme must be 'spiffe://'")
    if "?" in value:
        raise ValueError("a query is not allowed in a SPIFFE ID")
    if "#" in value:
        raise ValueError("a fragment is not allowed in a SPIFFE ID")
    domain, slash, path = value[len(_SPIFFE_SCHEME) :].partition("/")
    check_trust_domain(domain)
    if not slash:
        return domain, ()
    segments = tuple(path.split("/"))
    for index, segment in enumerate(segments):
        if not segment:
            where = "a trailing '/'" if index == len(segments) - 1 else "an empty segment ('//')"
            raise ValueError(f"SPIFFE ID path has {where}")
        if segment in (".", ".."):
            raise ValueError(f"SPIFFE ID path segment {segment!r} is not allowed")
        if not _PATH_SEGMENT_RE.fullmatch(segment):
            raise ValueError(
                f"SPIFFE ID path segment {clip(segment)} may contain only letters, digits, "
                "'.', '-' and '_'"
            )
    return domain, segments
