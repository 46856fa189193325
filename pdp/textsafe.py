"""Text that is safe to show a human: control, bidi and zero-width characters escaped.

Values in records come from requests (tenant, tool names, reason messages, SPIFFE IDs):
shown raw, a ``U+202E`` (right-to-left override) or ``U+200B`` (zero-width space) makes a
table cell or a pull-request comment read differently from what it holds, and a newline or
an ANSI escape forges a line. :func:`safe` escapes every character of Unicode category
``Cc`` (controls), ``Cf`` (format: the bidi controls U+202A..U+202E and U+2066..U+2069,
zero-width U+200B..U+200F, U+2060, U+FEFF, ...), ``Zl``/``Zp`` (line and paragraph
separators), ``Cs`` and ``Co``/``Cn`` (surrogates, private use, unassigned) as ``\\uXXXX``
(``\\UXXXXXXXX`` above the BMP). The backslash itself is left as is.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

_ESCAPED = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


@lru_cache(maxsize=4096)
def _escape_char(ch: str) -> str:
    if unicodedata.category(ch) not in _ESCAPED:
        return ch
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def safe(value: object) -> str:
    """``str(value)`` with control, bidi and zero-width characters escaped."""
    text = str(value)
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape_char(ch) for ch in text)
