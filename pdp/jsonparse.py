"""One strict reading of JSON: what two parsers could read differently is refused.

Every JSON body the service accepts goes through :func:`loads`. Compared with a plain
``json.loads`` / ``orjson.loads`` it refuses, naming the field by JSON pointer:

    duplicate members      {"url": "a", "url": "b"} at any depth (parsers keep the first or
                           the last; a gateway and the PDP could read different requests)
    big integers           beyond +-(2**53 - 1): not exactly representable as an IEEE double,
                           so JavaScript, Go's float64 and orjson (which turns a 30-digit
                           integer into a float) read another number
    non-finite numbers     NaN, Infinity, 1e400 (overflows to infinity)
    over-precise numbers   a fraction or exponent with more digits than a double holds
                           (9007199254740993.0, 1.00000000000000000001): a double reader
                           (Python, Go's float64, JavaScript) rounds it, an exact reader
                           (OPA reading bundle data, BigDecimal) does not
    lone surrogates        "\\ud800" escapes that are not half of a surrogate pair: not
                           Unicode, unencodable as UTF-8, read as U+FFFD by some parsers
    deep nesting           more than MAX_DEPTH nested arrays/objects
    bad bytes              anything that is not UTF-8 (a BOM included), trailing data

Errors are :class:`~pdp.errors.MalformedJSONError` (400) whose ``fields`` point at the
offending member; no submitted value is echoed. The parser is the standard library's
C scanner with hooks: duplicates and out-of-range numbers are marked by the hooks and
reported by one iterative walk that also checks depth and strings. The walk is skipped when
it cannot find anything: no hook marked a value, the text has no surrogate escape, and it
has no more brackets than ``max_depth`` (so it cannot nest deeper) — the usual request.
"""

from __future__ import annotations

import json
import math
import re
import threading
from decimal import Decimal
from typing import Any, Final

from .errors import FieldError, MalformedJSONError

__all__ = ["MAX_DEPTH", "MAX_SAFE_INTEGER", "dumps_pointer", "loads"]

#: Largest integer every mainstream JSON reader represents exactly (IEEE 754 double).
MAX_SAFE_INTEGER: Final = 2**53 - 1
#: Most nested arrays/objects a document may have (the top-level value counts as 1).
MAX_DEPTH: Final = 32
#: Lone (unpaired) UTF-16 surrogates, as Python strings carry them after json.loads.
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


#: ``bad``: a hook marked a value (duplicate member, bad number) during this thread's parse.
_marks = threading.local()


class _Duplicated(dict[str, Any]):
    """An object in which ``key`` appeared more than once (kept for the error's path)."""

    key: str = ""


class _BadNumber:
    """A number outside what every reader agrees on; reported with its path by the walk."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        _marks.bad = True
        self.why = why


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        _marks.bad = True
        seen: set[str] = set()
        dup = _Duplicated(obj)
        for key, _ in pairs:
            if key in seen:
                dup.key = key
                break
            seen.add(key)
        return dup
    return obj


def _int(text: str) -> int | _BadNumber:
    if len(text) > 17:  # 2**53 has 16 digits; skip the conversion of absurd literals
        return _BadNumber(f"integers must be within +-{MAX_SAFE_INTEGER} (2^53 - 1)")
    value = int(text)
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    return _BadNumber(f"integers must be within +-{MAX_SAFE_INTEGER} (2^53 - 1)")


def _float(text: str) -> float | _BadNumber:
    value = float(text)
    if not math.isfinite(value):
        return _BadNumber("numbers must be finite (this one overflows a double)")
    # The shortest text of the double (repr) must denote the same number as the literal: else
    # the literal carries digits a double reader drops and an exact reader keeps.
    if text != repr(value) and Decimal(text) != Decimal(repr(value)):
        return _BadNumber("numbers must not carry more precision than a double holds")
    return value


def _constant(name: str) -> _BadNumber:
    return _BadNumber(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_int=_int, parse_float=_float, parse_constant=_constant
)


def dumps_pointer(path: list[str | int]) -> str:
    """A JSON pointer (RFC 6901) for ``path``."""
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _fail(path: list[str | int], message: str) -> MalformedJSONError:
    return MalformedJSONError(
        "body is not valid JSON: " + message,
        fields=[FieldError(dumps_pointer(path), message)],
    )


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw`` (UTF-8 bytes, or text) strictly; raise MalformedJSONError (400)."""
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _fail([], f"body is not UTF-8 (byte {exc.start})") from None
    else:
        text = raw
    if text.startswith("\ufeff"):
        raise _fail([], "a byte order mark is not allowed")
    _marks.bad = False
    try:
        doc = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise _fail([], f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise _fail([], f"nesting is deeper than {max_depth}") from None
    if isinstance(doc, dict | list):
        # Raw UTF-8 cannot carry a surrogate: only a \\uD8xx..\\uDFxx escape can make one.
        strings = _SURROGATE_ESCAPE.search(text) is not None
        if _marks.bad or strings or text.count("{") + text.count("[") > max_depth:
            _check(doc, max_depth, strings=strings)
    elif isinstance(doc, _BadNumber):
        raise _fail([], doc.why)
    elif isinstance(doc, str) and _SURROGATE.search(doc):
        raise _fail([], "contains a lone surrogate (not Unicode)")
    return doc


def _check(doc: Any, max_depth: int, *, strings: bool) -> None:
    """Find a marked duplicate or number, too deep a nesting, or (when ``strings``) a lone
    surrogate. A fast walk without paths first; the slow walk with paths only on a find."""
    if _bad(doc, max_depth, strings):
        _explain(doc, max_depth)


def _bad(doc: Any, max_depth: int, strings: bool) -> bool:
    containers: list[tuple[Any, int]] = [(doc, 1)]
    while containers:
        value, depth = containers.pop()
        if depth > max_depth or type(value) is _Duplicated:
            return True
        items = value.values() if isinstance(value, dict) else value
        if strings and isinstance(value, dict) and any(_SURROGATE.search(k) for k in value):
            return True
        for item in items:
            if isinstance(item, dict | list):
                containers.append((item, depth + 1))
            elif type(item) is _BadNumber or (
                strings and isinstance(item, str) and _SURROGATE.search(item)
            ):
                return True
    return False


def _explain(doc: Any, max_depth: int) -> None:
    """Walk with JSON pointers and raise the first problem found."""
    stack: list[tuple[Any, list[str | int], int]] = [(doc, [], 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict):
            if depth > max_depth:
                raise _fail(path, f"nesting is deeper than {max_depth}")
            if isinstance(value, _Duplicated):
                raise _fail([*path, value.key], "member appears more than once")
            for key, item in value.items():
                if _SURROGATE.search(key):
                    raise _fail(path, "a member name contains a lone surrogate (not Unicode)")
                stack.append((item, [*path, key], depth + 1))
        elif isinstance(value, list):
            if depth > max_depth:
                raise _fail(path, f"nesting is deeper than {max_depth}")
            stack.extend((item, [*path, i], depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            if _SURROGATE.search(value):
                raise _fail(path, "contains a lone surrogate (not Unicode)")
        elif isinstance(value, _BadNumber):
            raise _fail(path, value.why)
    raise _fail([], "is not acceptable JSON")  # _bad found something: never silently pass
