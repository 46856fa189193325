"""JSON over HTTP for every front door: one strict reading of bodies and headers, bounded in
size and time, and JSON answers.

Every route (every front door, the admin API) reads its body through :func:`read_json` or
:func:`read_form` and the headers it cares about through :func:`header`; nothing else
touches ``request.json()`` or ``request.post()`` (whose readings are lenient: last
duplicate wins, any charset a client names, lone surrogates, 30-digit integers turned into
floats).

    read_json   application/json (or +json), UTF-8 only (a charset parameter other than
                utf-8 is 415), strict JSON (pdp.jsonparse): 400/413/415/408
    read_form   application/x-www-form-urlencoded, UTF-8, each parameter at most once
                (RFC 6749 §3.1: "parameters MUST NOT be included more than once"): 400
    header      a header's value as visible ASCII, else 400 naming the header
"""

from __future__ import annotations

import asyncio
from typing import Any, Final
from urllib.parse import unquote_to_bytes

import orjson
from aiohttp import web

from . import jsonparse
from .errors import (
    BodyTooLargeError,
    FieldError,
    MalformedJSONError,
    RequestError,
    RequestTimeoutError,
    UnsupportedMediaError,
)

__all__ = [
    "header",
    "json_response",
    "read_form",
    "read_json",
    "read_json_body",
    "read_json_object",
]

#: Seconds a client may take to send its whole body once the headers are in.
DEFAULT_BODY_TIMEOUT_S: Final = 10.0
_UTF8: Final = frozenset({"utf-8", "utf8"})
#: Most parameters a form body may carry (the admin forms take one or two).
MAX_FORM_FIELDS: Final = 16


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def header(request: web.Request, name: str) -> str | None:
    """The value of header ``name`` if present; 400 if it is not visible ASCII (plus
    spaces and tabs between words), which is all the headers we read may contain, or if
    it is sent more than once (a proxy reading the last value and the PDP the first would
    disagree on what was asked; RFC 9110 §5.3 allows repeats only for list fields)."""
    values = request.headers.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise RequestError(
            f"header {name} was sent more than once",
            fields=[FieldError(f"/headers/{name.lower()}", "sent more than once")],
        )
    value = values[0]
    # aiohttp hands undecodable bytes over as surrogate escapes: refuse them here, before
    # anything encodes the value (an encode error would be a 500).
    if not value.isascii() or not value.isprintable():
        raise RequestError(
            f"header {name} must be visible ASCII",
            fields=[FieldError(f"/headers/{name.lower()}", "must be visible ASCII")],
        )
    return value


def _check_charset(request: web.Request, what: str) -> None:
    if header(request, "Content-Type") is None:
        return
    charset = request.charset
    if charset is not None and charset.lower() not in _UTF8:
        raise UnsupportedMediaError(f"{what} must be UTF-8 (charset={charset!r} is not)")


async def _read(request: web.Request, limit: int, timeout_s: float) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLargeError(f"body is larger than {limit} bytes")
    content = request.content
    if limit and content.is_eof():
        # The whole body arrived with the head (the usual small request): nothing to wait
        # for, so no deadline to arm (a timer per request costs more than the read).
        raw = content.read_nowait(limit + 1)
        if len(raw) > limit:
            raise BodyTooLargeError(f"body is larger than {limit} bytes")
        return raw
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.content.read(limit + 1) if limit else b""
            while len(raw) <= limit and not request.content.at_eof():
                more = await request.content.read(limit + 1 - len(raw))
                if not more:
                    break
                raw += more
    except TimeoutError:
        raise RequestTimeoutError(f"the body did not arrive within {timeout_s:g} s") from None
    if len(raw) > limit:
        raise BodyTooLargeError(f"body is larger than {limit} bytes")
    return raw


async def read_json(
    request: web.Request, limit: int, *, timeout_s: float = DEFAULT_BODY_TIMEOUT_S
) -> Any:
    """The body as strict JSON (any JSON value: callers check its type)."""
    header(request, "Content-Type")
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaError("Content-Type must be application/json")
    _check_charset(request, "a JSON body")
    return jsonparse.loads(await _read(request, limit, timeout_s))


async def read_json_body(
    request: web.Request, limit: int, *, timeout_s: float = DEFAULT_BODY_TIMEOUT_S
) -> Any:
    """:func:`read_json` under the name the front doors know it by."""
    return await read_json(request, limit, timeout_s=timeout_s)


async def read_json_object(
    request: web.Request, limit: int, *, timeout_s: float = DEFAULT_BODY_TIMEOUT_S
) -> dict[str, Any]:
    """The body as a strict JSON object."""
    doc = await read_json(request, limit, timeout_s=timeout_s)
    if not isinstance(doc, dict):
        raise MalformedJSONError("body must be a JSON object")
    return doc


async def read_form(
    request: web.Request, limit: int, *, timeout_s: float = DEFAULT_BODY_TIMEOUT_S
) -> dict[str, str]:
    """An application/x-www-form-urlencoded body; every parameter at most once."""
    _check_charset(request, "a form body")
    raw = await _read(request, limit, timeout_s)
    fields: dict[str, str] = {}
    pairs = [p for p in raw.split(b"&") if p] if raw else []
    if len(pairs) > MAX_FORM_FIELDS:
        raise RequestError(f"a form body carries at most {MAX_FORM_FIELDS} parameters")
    for pair in pairs:
        name_raw, _, value_raw = pair.partition(b"=")
        try:
            name = unquote_to_bytes(name_raw.replace(b"+", b" ")).decode("utf-8")
            value = unquote_to_bytes(value_raw.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(
                "request does not match the schema",
                fields=[FieldError("/", "is not UTF-8 after percent-decoding")],
            ) from None
        path = jsonparse.dumps_pointer([name])
        if name in fields:
            # RFC 6749 §3.1 (and so RFC 7009 / 7662): a repeated parameter is an error, not
            # a choice between the first and the last.
            raise RequestError(
                "request does not match the schema",
                fields=[FieldError(path, "must appear at most once")],
            )
        if not value.isprintable():
            raise RequestError(
                "request does not match the schema",
                fields=[FieldError(path, "must not contain control characters")],
            )
        fields[name] = value
    return fields
