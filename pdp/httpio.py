"""JSON over HTTP for every front door: read a bounded JSON body, answer JSON."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from .errors import BodyTooLargeError, MalformedJSONError, UnsupportedMediaError


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def read_json_body(request: web.Request, limit: int) -> Any:
    """Read a JSON body under the size limit, or raise the matching 413/415/400 error."""
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaError("Content-Type must be application/json")
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLargeError(f"body is larger than {limit} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLargeError(f"body is larger than {limit} bytes") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSONError(f"body is not valid JSON: {exc.msg}") from None
