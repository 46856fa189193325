"""The OPA client's transport: HTTP/1.1 keep-alive connections to one OPA, nothing more.

:class:`pdp.opa.OPAClient` is the one OPA client; this module is only how its bytes travel.
A decision is one small JSON POST to one known server, over a Unix socket or loopback, so
the transport is an asyncio protocol per connection with llhttp (``httptools``) parsing the
answer — no cookie jar, redirects, tracing, header multidicts or per-request objects of a
general HTTP client, which cost about half of the PDP's own CPU per decision (bench/README.md).

- One pool of keep-alive connections per client, at most ``limit`` open at once; a request
  waits for a free one (inside its caller's deadline).
- A request takes an idle connection, writes the request in one ``write`` and waits for the
  complete answer; a connection is reused only when the answer said keep-alive.
- Every transport failure is an :class:`OSError` (``ConnectionError`` for a connection lost
  or refused, :class:`ProtocolError` for an answer that is not HTTP or is too large): the
  client maps them to 503 (fail closed). A connection whose request was cancelled (deadline)
  is closed, never reused: its answer may still arrive.
- One retry, only for a connection taken from the pool that was lost before any byte of the
  answer arrived (OPA closed it while idle): the request was never read, so sending it again
  on a fresh connection is safe. Nothing else is retried.
- HTTP/1.1 answers carry no request id: an answer is matched to its request by order on
  its connection. The transport therefore trusts its peer to send exactly one answer per
  request — which is why it only ever talks to the PDP's own OPA (a Unix socket or
  loopback the operator configured) — and never reuses a connection on which anything
  unexpected happened: bytes no request asked for, two answers in one read, a cancelled
  request (its late answer could otherwise be read as the next request's).
- A closed pool opens nothing more: a request in flight when :meth:`HTTPPool.close` runs
  fails with ``ConnectionError`` instead of retrying on a fresh connection.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = ["HTTPPool", "ProtocolError"]

#: The largest answer body accepted (``/v1/policies`` carries every module's AST).
MAX_BODY_BYTES = 64 * 1024 * 1024


class ProtocolError(OSError):
    """OPA's answer is not a well-formed HTTP/1.1 response (or is larger than allowed)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request in flight."""

    __slots__ = (
        "_body",
        "_parser",
        "_size",
        "_transport",
        "_waiter",
        "closed",
        "received",
    )

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self._size = 0
        #: Lost or closed: never reused.
        self.closed = False
        #: Whether any byte of the current answer has arrived (decides the one retry).
        self.received = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both have write/close
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self._waiter is None:
            self._fail(ProtocolError("OPA sent bytes no request asked for"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # a callback's own error (a body too large)
            if not isinstance(cause, ProtocolError):
                cause = ProtocolError(f"OPA's answer is not HTTP/1.1: {exc}")
            self._fail(cause)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost fails a pending request

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            lost = ConnectionResetError("OPA closed the connection before answering")
            lost.__cause__ = exc
            waiter.set_exception(lost)

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        if self._waiter is None:  # a second answer in the same read
            raise ProtocolError("OPA sent bytes no request asked for")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY_BYTES:
            raise ProtocolError(f"OPA's answer is larger than {MAX_BODY_BYTES} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if not self._parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():  # not cancelled meanwhile
            waiter.set_result((self._parser.get_status_code(), b"".join(self._body)))

    # -- used by the pool
    def send(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Write one request; the future is its (status, body)."""
        if self._transport is None:
            raise ConnectionResetError("OPA connection is not open")
        self._body = []
        self._size = 0
        self.received = False
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()


class HTTPPool:
    """Keep-alive HTTP/1.1 connections to the OPA at ``url`` (``unix:///path``,
    ``http://host:port`` or ``https://host:port``)."""

    def __init__(self, url: str, *, limit: int = 64) -> None:
        parts = urlsplit(url)
        self._unix: str | None = parts.path if parts.scheme == "unix" else None
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        host = "opa" if self._unix is not None else parts.netloc
        #: Every request's fixed headers, after the request line.
        self._headers = f"Host: {host}\r\n".encode()
        #: The path prefix a TCP URL may carry (``http://host/opa`` -> ``/opa``).
        self.prefix = "" if self._unix is not None else parts.path.rstrip("/")
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)
        self._open: set[_Connection] = set()
        #: After close(): no connection is opened again (no retry of a request in flight).
        self._closed = False

    def head(self, method: str, target: str, content_type: str | None = None) -> bytes:
        """The request line and fixed headers of ``method`` ``target`` (computed once by
        callers that send the same request shape again and again)."""
        line = f"{method} {self.prefix}{target} HTTP/1.1\r\n".encode() + self._headers
        if content_type is not None:
            line += f"Content-Type: {content_type}\r\n".encode()
        return line

    async def request(self, head: bytes, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request (``head`` from :meth:`head`, then ``body``); (status, body).

        Raises :class:`OSError` on every transport failure; the caller bounds the wait
        (``asyncio.timeout``), and a request cancelled midway closes its connection.
        """
        if body is None:
            data = head + b"\r\n"
        else:
            data = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        async with self._slots:
            conn = self._take()
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            try:
                answer = await conn.send(data)
            except ConnectionError:
                conn.close()
                self._open.discard(conn)
                if not reused or conn.received:
                    raise
                # OPA closed an idle connection before reading the request: once, afresh.
                conn = await self._connect()
                try:
                    answer = await conn.send(data)
                except BaseException:
                    conn.close()
                    self._open.discard(conn)
                    raise
            except BaseException:
                conn.close()  # cancelled or failed midway: its answer may still arrive
                self._open.discard(conn)
                raise
            if conn.closed:
                self._open.discard(conn)
            else:
                self._idle.append(conn)
            return answer

    def _take(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
            self._open.discard(conn)
        return None

    async def _connect(self) -> _Connection:
        if self._closed:
            raise ConnectionAbortedError("the OPA client is closed")
        loop = asyncio.get_running_loop()
        if self._unix is not None:
            _, conn = await loop.create_unix_connection(_Connection, self._unix)
        else:
            _, conn = await loop.create_connection(
                _Connection, self._host, self._port, ssl=self._ssl
            )
        self._open.add(conn)
        return conn

    async def close(self) -> None:
        """Close every connection (idle or busy); the pool opens none after this."""
        self._closed = True
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost
