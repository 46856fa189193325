"""The strict JSON reader skips its walk only when the walk cannot find anything: the
answers are those of the full walk, for small documents and for wide ones alike."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdp import jsonparse
from pdp.errors import MalformedJSONError

DUP = "member appears more than once"

_WIDE = ",".join(f'"k{i}": [{{}}]' for i in range(40))  # 80 brackets, depth 3


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b'{"a": {"b": 1, "b": 1}}', "/a/b"),  # few brackets: the walk is skipped
        (('{"w": {' + _WIDE + '}, "d": {"x": 1, "x": 2}}').encode(), "/d/x"),  # walked
    ],
)
def test_a_duplicate_is_found_in_small_and_wide_documents(raw: bytes, path: str) -> None:
    with pytest.raises(MalformedJSONError) as info:
        jsonparse.loads(raw)

    assert [(f.path, f.message) for f in info.value.fields] == [(path, DUP)]


def test_a_refused_document_leaves_no_mark_on_the_next_one() -> None:
    with pytest.raises(MalformedJSONError):
        jsonparse.loads(b'{"a": 1, "a": 2}')

    assert jsonparse.loads(b'{"a": 1}') == {"a": 1}


def test_a_wide_shallow_document_is_read() -> None:
    doc = json.loads("{" + _WIDE + "}")

    assert jsonparse.loads(("{" + _WIDE + "}").encode()) == doc


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.lists(st.tuples(st.sampled_from("abc"), inner), max_size=4)
    ),
    max_leaves=12,
)


def _dump(value: object) -> str:
    """JSON text of ``value``, pairs lists as objects (so names may repeat)."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        return "{" + ",".join(f"{json.dumps(k)}:{_dump(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    return json.dumps(value)


def _walked(text: str) -> object:
    """What the reader answered before the walk could be skipped: always walk."""
    doc = jsonparse._DECODER.decode(text)
    if isinstance(doc, dict | list):
        jsonparse._check(doc, jsonparse.MAX_DEPTH, strings=True)
    elif isinstance(doc, jsonparse._BadNumber):
        raise jsonparse._fail([], doc.why)
    return doc


@given(_json)
def test_the_reader_answers_as_the_full_walk(value: object) -> None:
    text = _dump(value)
    try:
        expected: object = ("ok", _walked(text))
    except MalformedJSONError as exc:
        expected = ("refused", [(f.path, f.message) for f in exc.fields])
    try:
        got: object = ("ok", jsonparse.loads(text.encode()))
    except MalformedJSONError as exc:
        got = ("refused", [(f.path, f.message) for f in exc.fields])

    assert got == expected
