"""The listeners: the decision API, the admin surface apart, and the guards on both.

    decision listener   --host/--port; TLS with --tls-cert/--tls-key; client certificates
                        with --client-ca (pdp.callers)
    admin listener      --admin-host/--admin-port (optional): the admin API and /metrics.
                        When it is configured, the admin surface is served only there; when
                        it is not, only a loopback decision listener serves it (a decision
                        listener on another address answers 404 for it).

Guards, so that slow or excessive clients cannot starve real decisions:

    connection cap      past PDP_MAX_CONNECTIONS open connections, a new one is answered
                        503 (Retry-After) and closed at once
    header timeout      a connection that has not sent a complete request head within
                        PDP_HEADER_TIMEOUT_S (also the keep-alive idle limit) is closed
    body timeout        a body not received within PDP_BODY_TIMEOUT_S is answered 408
                        (pdp.httpio) and the connection closed (after at most 1 s of
                        reading what is left)
    in-flight bound     past PDP_MAX_IN_FLIGHT decisions being evaluated, a decision is
                        answered 503 + Retry-After at once (pdp.decision), never queued
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .callers import server_ssl_context
from .config import Settings, is_loopback
from .eventloop import new_event_loop

__all__ = [
    "LISTENERS",
    "Listeners",
    "check_surface",
    "is_loopback",
    "run",
    "start",
]

log = logging.getLogger("pdp.server")

#: Seconds aiohttp keeps reading an unwanted body after an early answer.
_LINGER_S: Final = 1.0
_REFUSAL_BODY: Final = (
    b'{"allow":false,"error":{"code":"overloaded","message":"too many open connections"}}'
)
_REFUSAL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)


@dataclass
class Listeners:
    """Which surface a connection belongs to; filled in once the sites are bound."""

    #: Serve the admin surface on the decision listener (loopback, no admin listener).
    admin_on_decision: bool = True
    #: Local ports of the admin listener, once bound.
    admin_ports: set[int] = field(default_factory=set)
    #: Connections refused by the connection cap (for the metrics).
    refused: int = 0


LISTENERS: Final = web.AppKey("listeners", Listeners)


def _local_port(request: web.Request) -> int | None:
    if request.transport is None:
        return None
    sockname = request.transport.get_extra_info("sockname")
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return int(sockname[1])
    return None


def check_surface(request: web.Request, listeners: Listeners, admin_path: bool) -> None:
    """Serve admin paths (``admin_path``: ``request`` is for one) only where the admin
    surface lives, decision paths only on the decision listener; elsewhere raise 404 (the
    JSON one of the app's middleware, :func:`pdp.app.error_middleware`)."""
    on_admin = bool(listeners.admin_ports) and _local_port(request) in listeners.admin_ports
    if admin_path and not (on_admin or listeners.admin_on_decision):
        raise web.HTTPNotFound()
    if on_admin and not admin_path and request.path not in {"/healthz", "/readyz"}:
        raise web.HTTPNotFound()


class _JSONErrors(RequestHandler):
    """aiohttp's connection handler, answering what its HTTP parser refuses (a bad header
    byte, a bad Content-Length, a request line that is not HTTP) with the service's JSON
    error body instead of a text page that quotes the offending line (which may hold a
    credential), and logging one line without it rather than a traceback."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        log.warning(
            "refused a request from %s that is not valid HTTP: %d %s",
            request.remote,
            status,
            type(exc).__name__ if exc is not None else "error",
        )
        if request.writer.output_size > 0:
            raise ConnectionError("the answer has started: cannot send an error instead")
        code = "bad_request" if status < 500 else "internal"
        text = "the request is not valid HTTP" if status < 500 else "internal error"
        body = {"allow": False, "error": {"code": code, "message": text}}
        response = web.Response(
            status=status, body=orjson.dumps(body), content_type="application/json"
        )
        response.force_close()
        return response


class _Refuse(asyncio.Protocol):
    """Answers one fixed 503 and closes: what a connection past the cap gets."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_REFUSAL)
        transport.close()


class _GuardedSite(web.TCPSite):
    """A TCPSite whose protocol factory refuses connections past the cap."""

    __slots__ = ("_cap", "_listeners")

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, *, cap: int, listeners: Listeners,
        ssl_context: ssl.SSLContext | None,
    ) -> None:  # fmt: skip
        super().__init__(runner, host, port, ssl_context=ssl_context, backlog=1024)
        self._cap = cap
        self._listeners = listeners

    def _factory(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) >= self._cap:
            self._listeners.refused += 1
            return _Refuse()
        # what web.Server.__call__ builds, with JSON answers to unparseable requests
        return _JSONErrors(server, loop=server._loop, **server._kwargs)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]


@dataclass
class Started:
    """A running service: its runner and the ports it listens on."""

    runner: web.AppRunner
    port: int
    admin_port: int | None

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start(app: web.Application, settings: Settings) -> Started:
    """Start ``app`` on the configured listener(s); ``settings.port`` 0 picks a free port."""
    listeners = app[LISTENERS]
    runner = web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=settings.header_timeout_s,
        # After an early answer (413, 408) aiohttp reads what is left of the body before it
        # closes; a slow client must not hold the connection long that way either.
        lingering_time=_LINGER_S,
        handle_signals=False,
    )
    await runner.setup()
    try:
        context = None
        if settings.tls_cert is not None and settings.tls_key is not None:
            context = server_ssl_context(settings.tls_cert, settings.tls_key, settings.client_ca)
        site = _GuardedSite(
            runner, settings.host, settings.port, cap=settings.max_connections,
            listeners=listeners, ssl_context=context,
        )  # fmt: skip
        await site.start()
        admin_port = None
        if settings.admin_port is not None:
            admin_context = None
            if settings.tls_cert is not None and settings.tls_key is not None:
                admin_context = server_ssl_context(settings.tls_cert, settings.tls_key)
            admin_site = _GuardedSite(
                runner, settings.admin_host, settings.admin_port, cap=settings.max_connections,
                listeners=listeners, ssl_context=admin_context,
            )  # fmt: skip
            await admin_site.start()
            admin_port = admin_site.port
            listeners.admin_ports.add(admin_port)
    except BaseException:
        await runner.cleanup()
        raise
    return Started(runner, site.port, admin_port)


def run(app: web.Application, settings: Settings, *, on_ready: Callable[[Started], Any]) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly (exit status 0)."""

    async def main() -> None:
        started = await start(app, settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            on_ready(started)
            await stop.wait()
        finally:
            await started.stop()

    loop = new_event_loop(settings.event_loop)
    try:
        loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
