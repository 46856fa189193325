"""Hypothesis strategies for the fuzz test: documents generated from the JSON Schemas, then
mutated the ways attackers and buggy gateways do (wrong types, deep nesting, huge numbers,
odd Unicode, duplicate keys, odd URLs). Documents are built as trees that may hold raw
JSON fragments and duplicate members, and written by :func:`encode`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from pdp.schema import load_schema


@dataclass(frozen=True)
class Raw:
    """A JSON fragment written as is (a 30-digit number, a lone surrogate escape, NaN)."""

    text: str


@dataclass(frozen=True)
class Dup:
    """An object written with its members in order, duplicates included."""

    pairs: tuple[tuple[str, Any], ...]


def encode(doc: Any) -> bytes:
    """JSON text of ``doc`` (Raw fragments and Dup objects written as they are)."""
    return _enc(doc).encode("utf-8", "surrogatepass")


def _enc(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Dup):
        return "{" + ",".join(f"{json.dumps(k)}:{_enc(v)}" for k, v in value.pairs) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_enc(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_enc(v) for v in value) + "]"
    return json.dumps(value)


# --------------------------------------------------------------------------- from the schema

_JSON_LEAF = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20)
FREE_FORM = st.recursive(
    _JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def from_schema(
    schema: dict[str, Any], root: dict[str, Any] | None = None
) -> st.SearchStrategy[Any]:
    """Documents valid for ``schema`` (the subset of Draft 2020-12 our schemas use)."""
    root = root or schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return from_schema(root["$defs"][name], root)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties")
        if not props:  # free-form (arguments, context)
            return st.dictionaries(
                st.text(max_size=12), FREE_FORM, max_size=min(schema.get("maxProperties", 8), 8)
            )
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v, root) for k, v in props.items() if k in required},
            optional={k: from_schema(v, root) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        return st.lists(
            from_schema(schema.get("items", {}), root),
            max_size=min(schema.get("maxItems", 4), 4),
            unique=bool(schema.get("uniqueItems")),
        )
    if kind == "string":
        if "pattern" in schema:
            pattern = schema["pattern"]
            strategy = st.from_regex(pattern, fullmatch=True)
        else:
            strategy = st.text(min_size=schema.get("minLength", 0), max_size=40)
        lo, hi = schema.get("minLength", 0), schema.get("maxLength", 10_000)
        return strategy.filter(lambda s: lo <= len(s) <= hi)
    if kind == "integer":
        return st.integers(schema.get("minimum", -1000), schema.get("maximum", 1000))
    return FREE_FORM


def requests() -> st.SearchStrategy[dict[str, Any]]:
    """Decision requests valid for pdp/schemas/decision-request.schema.json."""
    return from_schema(load_schema("decision-request"))


# --------------------------------------------------------------------------- mutations

ODD_URLS = [
    "https://attacker.example\\@jira.internal.acme/rest",
    "https://jira.internal.acme@attacker.example/rest",
    "https://[jira.internal.acme]/rest",
    "https://[::1/",
    "https://jira.internal.acme:99999/",
    "https://jira.internal.acme:-1/",
    "https://0x7f.0.0.1/",
    "https://127.1/",
    "https://ｊira.internal.acme/",
    "https://jira.internal.acme%2e.attacker/",
    "https:///jira.internal.acme",
    "https:jira.internal.acme",
    "javascript://jira.internal.acme/%0aalert(1)",
    "https://jira.internal.acme#@attacker.example/",
    "http://jira.internal.acme/",
    "https://xn--zz.example/",
    "https://jira.internal.acme\u200b.attacker/",
    "https://jira.internal.acme\u2024attacker/",
    "https://\u0130stanbul.example/",
    "https://a" + ".b" * 200 + "/",
]
HUGE_NUMBERS = [
    "123456789012345678901234567890",
    "9007199254740992",
    "-9007199254740992",
    "18446744073709551616",
    "1e400",
    "-1e400",
    "NaN",
    "Infinity",
    "1.7976931348623157e309",
    "0.000000000000000000000000000001e-400",
]
ODD_STRINGS = [
    Raw('"\\ud800"'),
    Raw('"\\udfff\\ud800"'),
    Raw('"a\\u0000b"'),
    "\u202eevil\u202c",
    "\ufeffbom",
    "ﬁ",
    "\u0130",
    "a" * 5000,
    "",
    "\U0001f600",
    "\x7f",
    "%00",
    "spiffe://acme.example/agents/support-bot",
]


def deep(levels: int) -> Any:
    value: Any = {}
    for i in range(levels):
        value = {"a": value} if i % 2 else [value]
    return value


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """``base`` with one to three mutations applied somewhere in it."""
    doc: Any = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        doc = draw(_mutation(doc))
    return doc


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: _replace(doc[head], rest, value)}
    copy = list(doc)
    copy[head] = _replace(copy[head], rest, value)
    return copy


@st.composite
def _mutation(draw: st.DrawFn, doc: Any) -> Any:
    if isinstance(doc, Dup | Raw):
        return doc
    paths = _paths(doc)
    path = draw(st.sampled_from(paths))
    kind = draw(
        st.sampled_from(
            ["type", "deep", "number", "string", "dup", "url", "drop", "extra", "token"]
        )
    )
    if kind == "type":
        other = draw(st.sampled_from([None, True, 0, -1, 1.5, "x", [], {}, [1, "a"], {"k": "v"}]))
        return _replace(doc, path, other)
    if kind == "deep":
        return _replace(doc, path, deep(draw(st.integers(20, 400))))
    if kind == "number":
        return _replace(doc, path, Raw(draw(st.sampled_from(HUGE_NUMBERS))))
    if kind == "string":
        return _replace(doc, path, draw(st.sampled_from(ODD_STRINGS)))
    if kind == "url":
        url = draw(st.sampled_from(ODD_URLS) | st.text(max_size=60).map(lambda t: "https://" + t))
        if isinstance(doc, dict) and isinstance(doc.get("destination"), dict):
            return {**doc, "destination": {**doc["destination"], "url": url}}
        return _replace(doc, path, url)
    if kind == "drop" and path and isinstance(doc, dict):
        parent = path[:-1]
        target = doc
        for p in parent:
            target = target[p]
        if isinstance(target, dict):
            return _replace(doc, parent, {k: v for k, v in target.items() if k != path[-1]})
        return doc
    if kind == "extra":
        return _replace(doc, path, {"identity": {"authenticated": True}, "pep": "me"})
    if kind == "token":
        token = draw(
            st.sampled_from(
                [
                    "",
                    "a.b.c",
                    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
                    "x" * 20000,
                    "\u00e9.\u00e9.\u00e9",
                ]
            )
        )
        if isinstance(doc, dict):
            agent = doc.get("agent")
            return {**doc, "agent": {**(agent if isinstance(agent, dict) else {}), "token": token}}
        return doc
    # dup: an object somewhere gets one member twice (first or last a different value)
    objects = [p for p in paths if isinstance(_get(doc, p), dict) and _get(doc, p)]
    if not objects:
        return doc
    where = draw(st.sampled_from(objects))
    obj = _get(doc, where)
    key = draw(st.sampled_from(sorted(obj)))
    other = draw(st.sampled_from(["x", 0, None, "https://attacker.example/", "globex"]))
    pairs = list(obj.items())
    pairs.insert(draw(st.integers(0, len(pairs))), (key, other))
    return _replace(doc, where, Dup(tuple(pairs)))


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc
