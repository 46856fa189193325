"""One canonical reading of a destination URL, or a refusal.

Parsers disagree about URLs: Python's ``urlsplit`` reads the host of
``https://attacker.example\\@jira.internal.acme/`` as ``jira.internal.acme`` while WHATWG
parsers (browsers, Node, Rust ``url``, most gateways) end the authority at ``\\`` and
connect to ``attacker.example``. A policy that checks one host while the gateway connects
to another is no policy. :func:`canonical_url` therefore accepts only URLs that every
mainstream parser reads the same way, and hands policy one canonical form.

Refused (each a 400 naming ``/destination/url``):

* ``\\``, ASCII control characters, any whitespace (WHATWG strips tabs and newlines and
  turns ``\\`` into ``/``);
* characters that NFKC normalisation changes (full-width ``．``, ``ｈｔｔｐｓ``, ligatures:
  one parser normalises, the other does not);
* userinfo (``user@host``): the classic "which host is it" confusion;
* anything but ``scheme://authority``: ``https:host`` and ``https:///host`` name a host to
  WHATWG and none to ``urlsplit``;
* an empty host, ``%`` in the host (WHATWG percent-decodes hosts), brackets that are not
  exactly one valid IPv6 literal (no zone id), hosts ending in a number that are not a
  canonical dotted-quad IPv4 address (``127.1``, ``0x7f.0.0.1``, ``010.0.0.1`` are read
  as IPv4 by WHATWG, as names by others), labels that are not LDH (plus ``_``) or not
  valid IDNA, a host over 253 characters;
* a port that is empty, not decimal, or outside 1..65535.

The canonical form: scheme in lower case; host in lower case, without a trailing dot,
internationalised names as IDNA 2008 A-labels (``xn--``), IPv6 compressed in brackets;
the port explicit (the scheme's default when absent; None for a scheme without one);
path, query and fragment as given.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from typing import Final

import idna

__all__ = ["DEFAULT_PORTS", "CanonicalURL", "URLError", "canonical_url"]

#: Default port of the schemes destinations use; other schemes must name their port.
DEFAULT_PORTS: Final = {
    "https": 443,
    "http": 80,
    "wss": 443,
    "ws": 80,
    "postgres": 5432,
    "postgresql": 5432,
    "mysql": 3306,
    "redis": 6379,
    "rediss": 6379,
    "grpc": 443,
}
MAX_HOST_LENGTH: Final = 253

_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_FORBIDDEN: Final = re.compile(r"[\\\x00-\x20\x7f]|\s")
_LABEL: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_PORT: Final = re.compile(r"[0-9]{1,5}")


class URLError(ValueError):
    """The URL is not one every parser reads the same way; the message says why."""


@dataclass(frozen=True, slots=True)
class CanonicalURL:
    """A URL in its one canonical reading."""

    scheme: str
    host: str
    port: int | None
    #: Path, query and fragment exactly as given ("" when absent).
    rest: str

    @property
    def url(self) -> str:
        """The canonical string: default ports left out, everything else explicit."""
        authority = f"[{self.host}]" if ":" in self.host else self.host
        if self.port is not None and self.port != DEFAULT_PORTS.get(self.scheme):
            authority += f":{self.port}"
        return f"{self.scheme}://{authority}{self.rest}"


#: URLs whose canonical reading is kept (the readings are immutable; a refusal is not kept).
CACHE_SIZE: Final = 1024


@functools.lru_cache(maxsize=CACHE_SIZE)
def canonical_url(raw: str) -> CanonicalURL:
    """Read ``raw`` the one way, or raise :class:`URLError` saying what is ambiguous.

    Pure, and every decision naming a destination URL reads one: the last
    :data:`CACHE_SIZE` readings are kept (a gateway's destinations repeat; IDNA and the
    host checks cost ~15 us, a hit ~0.1 us)."""
    if _FORBIDDEN.search(raw):
        raise URLError("backslashes, spaces and control characters are not allowed")
    if not raw.isascii() and unicodedata.normalize("NFKC", raw) != raw:
        raise URLError("has characters that Unicode (NFKC) normalisation changes")
    scheme, sep, after = raw.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise URLError("must be scheme://host[:port][/path]")
    end = len(after)
    for stop in "/?#":
        index = after.find(stop)
        if index != -1:
            end = min(end, index)
    authority, rest = after[:end], after[end:]
    if "@" in authority:
        raise URLError("userinfo (user@host) is not allowed")
    host, port_text = _split_port(authority)
    host = _canonical_host(host)
    scheme = scheme.lower()
    if port_text is None:
        port = DEFAULT_PORTS.get(scheme)
    else:
        if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
            raise URLError("port is not a valid number (1-65535)")
        port = int(port_text)
    return CanonicalURL(scheme=scheme, host=host, port=port, rest=rest)


def _split_port(authority: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        close = authority.find("]")
        if close == -1:
            raise URLError("'[' without ']' in the host")
        host, tail = authority[: close + 1], authority[close + 1 :]
        if tail and not tail.startswith(":"):
            raise URLError("only a port may follow an IPv6 literal")
        return host, tail[1:] if tail else None
    if "[" in authority or "]" in authority:
        raise URLError("brackets are allowed only around an IPv6 address")
    host, colon, port = authority.partition(":")
    if colon and ":" in port:
        raise URLError("more than one ':' in the host")
    return host, port if colon else None


def _canonical_host(host: str) -> str:
    if not host:
        raise URLError("has no host")
    if host.startswith("["):
        inner = host[1:-1]
        if "%" in inner or not inner:
            raise URLError("an IPv6 literal must not carry a zone id or be empty")
        try:
            return ipaddress.IPv6Address(inner).compressed
        except ValueError:
            raise URLError("the brackets do not hold a valid IPv6 address") from None
    if "%" in host:
        raise URLError("percent-encoding is not allowed in the host")
    name = host.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or name.startswith(".") or ".." in name:
        raise URLError("the host has an empty label")
    if not name.isascii():
        try:
            name = idna.encode(name).decode("ascii")
        except idna.IDNAError:
            raise URLError("the host is not a valid internationalised domain name") from None
    labels = name.split(".")
    if labels[-1][:1].isdigit() or labels[-1].startswith("0x"):
        # WHATWG reads a host whose last label is a number as IPv4 (127.1, 0x7f.1, 010.1):
        # accept only the one unambiguous form, the canonical dotted quad.
        if _is_numeric(labels[-1]):
            try:
                # strict: four decimal octets, no leading zeros, nothing else
                return str(ipaddress.IPv4Address(name))
            except ValueError:
                raise URLError("the host looks like an IPv4 address but is not one") from None
    if len(name) > MAX_HOST_LENGTH:
        raise URLError(f"the host is longer than {MAX_HOST_LENGTH} characters")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise URLError("the host has a label that is not letters, digits, '-' or '_'")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError):
                raise URLError("the host has an invalid xn-- (IDNA) label") from None
    return name


def _is_numeric(label: str) -> bool:
    """WHATWG's "ends in a number": all decimal digits, or 0x/0X followed by hex digits."""
    if label.isdigit():
        return True
    return label[:2] == "0x" and all(c in "0123456789abcdef" for c in label[2:])
