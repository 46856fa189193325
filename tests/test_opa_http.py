"""The OPA client's transport (pdp.opahttp): keep-alive reuse, the answers' framing
(Content-Length, chunked, close), and every way a connection can fail mapping to an
OSError (which pdp.opa turns into a 503). A real OPA is behind tests/test_api.py and the
embedded-sidecar tests; here a raw asyncio server sends exact bytes, including the ones a
real OPA never sends (garbage, early close, an answer nobody asked for)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pdp import opahttp
from pdp.errors import EngineUnavailableError
from pdp.opa import OPAClient
from pdp.opahttp import HTTPPool, ProtocolError

Reply = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"a": true}'


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request (head + Content-Length body), or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + (await reader.readexactly(length) if length else b"")


class FakeOPA:
    """A raw HTTP/1.1 server: ``reply(request, writer)`` answers, returning False to close."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while (request := await read_request(reader)) is not None:
                self.requests.append(request)
                if not await self.reply(request, writer):
                    break
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def fake_opa(
    tmp_path: Path,
) -> AsyncIterator[Callable[[Reply], Awaitable[tuple[FakeOPA, str]]]]:
    """``await fake_opa(reply)`` -> (server, unix URL)."""
    servers: list[asyncio.Server] = []

    async def start(reply: Reply) -> tuple[FakeOPA, str]:
        fake = FakeOPA(reply)
        path = tmp_path / f"opa{len(servers)}.sock"
        fake.server = await asyncio.start_unix_server(fake.handle, path=str(path))
        servers.append(fake.server)
        return fake, f"unix://{path}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def answer_ok(request: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(OK)
    return True


async def test_requests_reuse_one_keep_alive_connection(fake_opa: Any) -> None:
    fake, url = await fake_opa(answer_ok)
    pool = HTTPPool(url)
    head = pool.head("POST", "/v1/data/pdp/decision?provenance=true", "application/json")

    answers = [await pool.request(head, b'{"input": {}}') for _ in range(3)]
    await pool.close()

    assert answers == [(200, b'{"a": true}')] * 3
    assert fake.connections == 1
    assert fake.requests[0] == (
        b"POST /v1/data/pdp/decision?provenance=true HTTP/1.1\r\nHost: opa\r\n"
        b'Content-Type: application/json\r\nContent-Length: 13\r\n\r\n{"input": {}}'
    )


async def test_a_get_has_no_body_and_no_content_headers(fake_opa: Any) -> None:
    fake, url = await fake_opa(answer_ok)
    pool = HTTPPool(url)

    await pool.request(pool.head("GET", "/health?bundles"))
    await pool.close()

    assert fake.requests == [b"GET /health?bundles HTTP/1.1\r\nHost: opa\r\n\r\n"]


def test_a_tcp_url_sends_its_host_and_keeps_its_path_prefix() -> None:
    pool = HTTPPool("http://127.0.0.1:8181/opa/")

    assert pool.head("GET", "/health") == b"GET /opa/health HTTP/1.1\r\nHost: 127.0.0.1:8181\r\n"


async def test_a_tcp_url_connects_over_tcp() -> None:
    requests: list[bytes] = []
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            requests.append(request)
            writer.write(OK)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = HTTPPool(f"http://127.0.0.1:{port}/opa")
    try:
        assert await pool.request(pool.head("GET", "/health")) == (200, b'{"a": true}')
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()
    await asyncio.wait_for(done.wait(), 5)  # the server side saw the close
    assert requests == [f"GET /opa/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()]


def test_a_path_prefix_loses_only_its_trailing_slashes() -> None:
    assert HTTPPool("http://opa.internal/opaX//").prefix == "/opaX"
    assert HTTPPool("http://opa.internal").prefix == ""
    assert HTTPPool("unix:///run/opa.sock").prefix == ""


@pytest.mark.parametrize(
    ("url", "host", "port", "tls"),
    [
        ("http://opa.internal", "opa.internal", 80, False),
        ("https://opa.internal", "opa.internal", 443, True),
        ("http://opa.internal:8181", "opa.internal", 8181, False),
        ("https://opa.internal:8443/x", "opa.internal", 8443, True),
        ("http://:8181", "localhost", 8181, False),
    ],
)
def test_a_tcp_url_gets_its_scheme_default_port_and_tls_only_for_https(
    url: str, host: str, port: int, tls: bool
) -> None:
    pool = HTTPPool(url)  # where it connects (no server listens on these)
    assert (pool._host, pool._port) == (host, port)
    assert isinstance(pool._ssl, ssl.SSLContext) is tls
    if tls:
        assert pool._ssl is not None and pool._ssl.verify_mode == ssl.CERT_REQUIRED


async def test_concurrent_requests_open_at_most_limit_connections(fake_opa: Any) -> None:
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.01)
        writer.write(OK)
        return True

    fake, url = await fake_opa(slow)
    pool = HTTPPool(url, limit=2)
    head = pool.head("GET", "/")

    answers = await asyncio.gather(*(pool.request(head) for _ in range(6)))
    await pool.close()

    assert [a[0] for a in answers] == [200] * 6
    assert fake.connections == 2


async def test_a_chunked_answer_is_joined(fake_opa: Any) -> None:
    async def chunked(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'4\r\n{"a"\r\n7\r\n: true}\r\n0\r\n\r\n'
        )
        return True

    fake, url = await fake_opa(chunked)
    pool = HTTPPool(url)

    assert await pool.request(pool.head("GET", "/")) == (200, b'{"a": true}')
    assert await pool.request(pool.head("GET", "/")) == (200, b'{"a": true}')
    await pool.close()
    assert fake.connections == 1


async def test_an_answer_with_connection_close_is_not_reused(fake_opa: Any) -> None:
    async def close(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 503 Unavailable\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
        )
        return False

    fake, url = await fake_opa(close)
    pool = HTTPPool(url)

    assert await pool.request(pool.head("GET", "/")) == (503, b"{}")
    assert await pool.request(pool.head("GET", "/")) == (503, b"{}")
    await pool.close()
    assert fake.connections == 2


async def test_an_idle_connection_opa_closed_is_replaced_once(fake_opa: Any) -> None:
    async def once(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK)
        return False  # answers keep-alive, then closes: the pooled connection goes stale

    fake, url = await fake_opa(once)
    pool = HTTPPool(url)
    head = pool.head("GET", "/")
    assert await pool.request(head) == (200, b'{"a": true}')
    conn = pool._idle[0]
    conn.closed = False  # as if the close had not been seen yet when the request is sent

    assert await pool.request(head) == (200, b'{"a": true}')
    await pool.close()
    assert fake.connections == 2


async def test_a_connection_lost_after_the_answer_began_is_not_retried(fake_opa: Any) -> None:
    async def half(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"a"')
        return False

    fake, url = await fake_opa(half)
    pool = HTTPPool(url)

    with pytest.raises(ConnectionResetError, match="closed the connection before answering"):
        await pool.request(pool.head("GET", "/"))
    await pool.close()
    assert len(fake.requests) == 1


async def test_a_reused_connection_lost_after_the_answer_began_is_not_retried(
    fake_opa: Any,
) -> None:
    async def ok_then_half(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if len(fake.requests) == 1:
            writer.write(OK)
            return True
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"a"')
        return False

    fake, url = await fake_opa(ok_then_half)
    pool = HTTPPool(url)

    assert await pool.request(pool.head("GET", "/")) == (200, b'{"a": true}')
    with pytest.raises(ConnectionResetError, match="closed the connection before answering"):
        await pool.request(pool.head("GET", "/"))  # on the kept-alive connection
    await pool.close()
    assert (len(fake.requests), fake.connections) == (2, 1)  # the answer had begun: no retry


@pytest.mark.parametrize(
    "garbage",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    ],
    ids=["not-http", "bad-status", "bad-length"],
)
async def test_an_answer_that_is_not_http_is_a_protocol_error(
    fake_opa: Any, garbage: bytes
) -> None:
    async def junk(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(garbage)
        return True

    _, url = await fake_opa(junk)
    pool = HTTPPool(url)

    with pytest.raises(ProtocolError, match="not HTTP/1.1"):
        await pool.request(pool.head("GET", "/"))
    assert pool._idle == []
    await pool.close()


def test_the_answer_bound_is_64_mib() -> None:
    # /v1/policies carries every module's AST; the bound is a documented limit, not tuning
    assert opahttp.MAX_BODY_BYTES == 64 * 1024 * 1024
    assert isinstance(opahttp.MAX_BODY_BYTES, int)


async def test_an_answer_larger_than_the_bound_is_refused(
    fake_opa: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(opahttp, "MAX_BODY_BYTES", 10)

    async def big(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n" + b"x" * 11)
        return True

    _, url = await fake_opa(big)
    pool = HTTPPool(url)

    with pytest.raises(ProtocolError, match="larger than 10 bytes"):
        await pool.request(pool.head("GET", "/"))
    await pool.close()


class _Transport:
    def __init__(self) -> None:
        self.closed = False
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


def test_a_connection_not_yet_made_refuses_to_send_and_closes_quietly() -> None:
    conn = opahttp._Connection()
    with pytest.raises(ConnectionResetError, match="^OPA connection is not open$"):
        conn.send(b"GET / HTTP/1.1\r\n\r\n")
    conn.close()
    assert conn.closed


def test_bytes_before_the_first_request_close_a_fresh_connection() -> None:
    conn = opahttp._Connection()
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    assert (conn.closed, conn.received) == (False, False)
    conn.data_received(OK)
    assert conn.closed and conn.received and transport.closed
    assert transport.written == []


async def test_bytes_nobody_asked_for_close_the_connection(fake_opa: Any) -> None:
    async def twice(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK + OK)
        return True

    _, url = await fake_opa(twice)
    pool = HTTPPool(url)

    assert await pool.request(pool.head("GET", "/")) == (200, b'{"a": true}')
    await asyncio.sleep(0.05)
    assert pool._take() is None  # the stray second answer closed it
    await pool.close()


async def test_a_cancelled_request_closes_its_connection(fake_opa: Any) -> None:
    async def stall(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.2)
        writer.write(OK)
        return True

    fake, url = await fake_opa(stall)
    pool = HTTPPool(url)
    head = pool.head("GET", "/")

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            await pool.request(head)
    assert pool._idle == [] and pool._open == set()
    assert await pool.request(head) == (200, b'{"a": true}')  # a fresh connection
    await pool.close()
    assert fake.connections == 2


async def test_a_missing_socket_is_an_os_error(tmp_path: Path) -> None:
    pool = HTTPPool(f"unix://{tmp_path}/none.sock")

    with pytest.raises(FileNotFoundError):
        await pool.request(pool.head("GET", "/"))


# ----------------------------------------------------- through the client: fail closed


@pytest.mark.parametrize(
    ("reply_bytes", "message"),
    [
        (b"", "policy engine unreachable: ConnectionResetError: OPA closed the connection"),
        (b"garbage\r\n\r\n", "policy engine unreachable: ProtocolError: OPA's answer is not HTTP"),
    ],
    ids=["closed", "garbage"],
)
async def test_a_broken_answer_to_a_decision_is_a_connection_503(
    fake_opa: Any, reply_bytes: bytes, message: str
) -> None:
    async def broken(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply_bytes)
        return False

    _, url = await fake_opa(broken)
    client = OPAClient(url, timeout_s=1.0)
    await client.start()
    try:
        with pytest.raises(EngineUnavailableError) as info:
            await client.evaluate({"tenant": "acme"})
        assert info.value.kind == "connection"
        assert info.value.message.startswith(message)
    finally:
        await client.close()


async def test_a_missing_socket_is_a_connection_503_and_unhealthy(tmp_path: Path) -> None:
    client = OPAClient(f"unix://{tmp_path}/none.sock", timeout_s=1.0)
    await client.start()
    try:
        with pytest.raises(EngineUnavailableError) as info:
            await client.evaluate({})
        assert info.value.kind == "connection"
        assert info.value.message.startswith("policy engine unreachable: FileNotFoundError")
        assert await client.health() is False
    finally:
        await client.close()


async def test_metrics_text_is_the_body_decoded(fake_opa: Any) -> None:
    async def metrics(request: bytes, writer: asyncio.StreamWriter) -> bool:
        assert request.startswith(b"GET /metrics HTTP/1.1\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nup 1\n\xff")
        return True

    _, url = await fake_opa(metrics)
    client = OPAClient(url, timeout_s=1.0)
    await client.start()
    try:
        assert await client.metrics_text() == "up 1\n\ufffd"
    finally:
        await client.close()


async def test_metrics_text_that_is_not_200_is_a_503(fake_opa: Any) -> None:
    async def err(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 500 Internal\r\nContent-Length: 0\r\n\r\n")
        return True

    _, url = await fake_opa(err)
    client = OPAClient(url, timeout_s=1.0)
    await client.start()
    try:
        with pytest.raises(EngineUnavailableError, match="answered 500 on /metrics"):
            await client.metrics_text()
    finally:
        await client.close()


def test_the_pool_works_on_uvloop(tmp_path: Path) -> None:
    """`pdpctl serve` runs on uvloop when installed, whose transports are not asyncio's."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[tuple[int, bytes]]:
        fake = FakeOPA(answer_ok)
        path = tmp_path / "uv.sock"
        server = await asyncio.start_unix_server(fake.handle, path=str(path))
        pool = HTTPPool(f"unix://{path}")
        try:
            return [await pool.request(pool.head("GET", "/")) for _ in range(2)]
        finally:
            await pool.close()
            server.close()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == [(200, b'{"a": true}')] * 2


async def test_a_closed_pool_opens_no_connection_and_retries_nothing(fake_opa: Any) -> None:
    async def silent(request: bytes, writer: asyncio.StreamWriter) -> bool:
        return False  # reads the request, answers nothing, closes

    fake, url = await fake_opa(answer_ok)
    pool = HTTPPool(url)
    head = pool.head("GET", "/")
    assert await pool.request(head) == (200, b'{"a": true}')
    await pool.close()

    with pytest.raises(ConnectionAbortedError, match="^the OPA client is closed$"):
        await pool.request(head)
    assert fake.connections == 1  # nothing opened after close()

    # A request in flight when the pool closes is not retried on a fresh connection.
    fake2, url2 = await fake_opa(silent)
    pool2 = HTTPPool(url2)
    pending = asyncio.create_task(pool2.request(pool2.head("GET", "/")))
    while not fake2.requests:
        await asyncio.sleep(0.01)
    await pool2.close()
    with pytest.raises(ConnectionError):
        await pending
    assert fake2.connections == 1
