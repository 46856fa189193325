"""httpio's body reading: a body already in with the head and one still arriving are read
alike (the first without arming a deadline), over the limit refused alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from pdp.errors import PDPError
from pdp.httpio import json_response, read_json_object

LIMIT = 64


async def _echo(request: web.Request) -> web.Response:
    try:
        doc = await read_json_object(request, LIMIT, timeout_s=5)
    except PDPError as exc:
        return json_response(exc.body(), exc.status)
    return json_response({"got": doc})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_post("/", _echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    yield server.sockets[0].getsockname()[1]
    await runner.cleanup()


async def _post(port: int, parts: list[bytes], *, chunked: bool = False) -> tuple[int, object]:
    """POST the body in ``parts``, the first with the head, each later one 50 ms after."""
    body = b"".join(parts)
    framing = (
        b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % len(body)
    )
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + framing
    head += b"Connection: close\r\n\r\n"
    if chunked:
        parts = [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]
        parts = [parts[0], b"".join(parts[1:])] if len(parts) > 2 else [b"".join(parts)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + parts[0])
    for part in parts[1:]:
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(part)
    raw = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    status = int(raw.split(b" ", 2)[1])
    return status, orjson.loads(raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n")[-1] or b"null")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("split", [False, True], ids=["with-the-head", "arriving-later"])
async def test_a_body_is_read_the_same_whether_it_came_with_the_head_or_later(
    port: int, chunked: bool, split: bool
) -> None:
    doc = {"tenant": "acme", "n": 1}
    raw = orjson.dumps(doc)
    parts = [raw[:5], raw[5:]] if split else [raw]

    assert await _post(port, parts, chunked=chunked) == (200, {"got": doc})


@pytest.mark.parametrize("split", [False, True], ids=["with-the-head", "arriving-later"])
async def test_a_chunked_body_over_the_limit_is_413_however_it_arrives(
    port: int, split: bool
) -> None:
    raw = orjson.dumps({"pad": "x" * LIMIT})
    parts = [raw[:10], raw[10:]] if split else [raw]

    status, body = await _post(port, parts, chunked=True)

    assert status == 413
    assert body == {
        "allow": False,
        "error": {"code": "body_too_large", "message": f"body is larger than {LIMIT} bytes"},
    }


async def test_a_body_of_exactly_the_limit_is_read(port: int) -> None:
    frame = orjson.dumps({"p": ""})
    doc = {"p": "x" * (LIMIT - len(frame))}

    assert await _post(port, [orjson.dumps(doc)], chunked=True) == (200, {"got": doc})
