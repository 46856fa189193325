"""The strict JSON reader: what two parsers could read differently is refused, by pointer."""

from __future__ import annotations

from typing import Any

import pytest

from pdp.errors import MalformedJSONError
from pdp.jsonparse import MAX_SAFE_INTEGER, loads

DUP = "member appears more than once"
BIG = "integers must be within +-9007199254740991 (2^53 - 1)"
SURROGATE = "contains a lone surrogate (not Unicode)"
DEEP = "nesting is deeper than 32"
PRECISE = "numbers must not carry more precision than a double holds"


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        # duplicate members, at any depth (orjson keeps the last, many parsers the first)
        (b'{"a": 1, "a": 2}', "/a", DUP),
        (b'{"a": 1, "a": 1}', "/a", DUP),
        (b'{"d": {"url": "x", "url": "y"}}', "/d/url", DUP),
        (b'{"a": [{"b": {"c": 1, "c": 2}}]}', "/a/0/b/c", DUP),
        (b'{"a/b": {"~": 1, "~": 2}}', "/a~1b/~0", DUP),
        (b'{"\\u0061": 1, "a": 2}', "/a", DUP),  # the same name, escaped once
        # numbers every reader does not read the same
        (b'{"n": 123456789012345678901234567890}', "/n", BIG),
        (b'{"n": 9007199254740992}', "/n", BIG),
        (b'{"n": -9007199254740992}', "/n", BIG),
        (b"[1e400]", "/0", "numbers must be finite (this one overflows a double)"),
        (b'{"n": NaN}', "/n", "NaN is not JSON"),
        (b'{"n": -Infinity}', "/n", "-Infinity is not JSON"),
        (b"9007199254740993", "/", BIG),
        # more digits than a double holds: a double reader rounds, an exact one (OPA) does not
        (b'{"n": 9007199254740993.0}', "/n", PRECISE),
        (b'{"n": 20.00000000000000001}', "/n", PRECISE),
        (b'{"n": [0.1000000000000000000001]}', "/n/0", PRECISE),
        # lone surrogates (values, names, at the top)
        (b'{"r": "r\\ud800"}', "/r", SURROGATE),
        (b'{"r": ["\\udfff"]}', "/r/0", SURROGATE),
        (b'{"r": "\\ude00\\ud83d"}', "/r", SURROGATE),  # a pair in the wrong order
        (b'{"\\ud800": 1}', "/", "a member name contains a lone surrogate (not Unicode)"),
        (b'"\\udbff"', "/", SURROGATE),
        # depth
        (b"[" * 33 + b"]" * 33, "/" + "/".join(["0"] * 32), DEEP),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "/" + "/".join(["a"] * 32), DEEP),
        (b"[" * 100_000, "/", DEEP),
        # bytes
        (b'{"a": "\xff"}', "/", "body is not UTF-8 (byte 7)"),
        (b'\xef\xbb\xbf{"a": 1}', "/", "a byte order mark is not allowed"),
        (b'{"a": "\xed\xa0\x80"}', "/", "body is not UTF-8 (byte 7)"),  # a UTF-8 surrogate
    ],
)
def test_ambiguous_json_is_refused_naming_the_member(raw: bytes, path: str, message: str) -> None:
    with pytest.raises(MalformedJSONError) as info:
        loads(raw)

    assert [(f.path, f.message) for f in info.value.fields] == [(path, message)]
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a": 1, "b": {"a": 2}}', {"a": 1, "b": {"a": 2}}),  # same name, other objects
        (b'{"n": 9007199254740991}', {"n": MAX_SAFE_INTEGER}),
        (b'{"n": -9007199254740991}', {"n": -MAX_SAFE_INTEGER}),
        (b'{"n": 1.5e300}', {"n": 1.5e300}),
        # as precise as a double: written the double's shortest way, or with trailing zeros
        (b'{"n": 0.1}', {"n": 0.1}),
        (b'{"n": 0.30000000000000004}', {"n": 0.30000000000000004}),
        (b'{"n": [20.0, 20.000, 2E1, 1e20, 5e-324]}', {"n": [20.0, 20.0, 20.0, 1e20, 5e-324]}),
        (b'{"n": 1.00000000000000000000e0}', {"n": 1.0}),
        (b'{"s": "\\ud83d\\ude00 caf\\u00e9"}', {"s": "\U0001f600 caf\u00e9"}),
        (b'{"s": "\\\\ud800"}', {"s": "\\ud800"}),  # an escaped backslash, not an escape
        ('{"s": "h\u00e9"}'.encode(), {"s": "h\u00e9"}),
        (b"[" * 32 + b"]" * 32, [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
    ],
)
def test_unambiguous_json_reads_as_usual(raw: bytes, expected: Any) -> None:
    assert loads(raw) == expected


def test_a_syntax_error_names_where() -> None:
    with pytest.raises(MalformedJSONError) as info:
        loads(b'{"tenant": "acme",')

    assert info.value.message.startswith("body is not valid JSON: ")
    assert info.value.fields[0].path == "/"
