"""Envoy ext_authz, gRPC mode: ``envoy.service.auth.v3.Authorization/Check``.

Served by ``pdpctl serve --ext-authz-grpc-port N`` on PDP_HOST, with the generated Envoy
API packages from PyPI (``xds-protos``) and ``grpcio``'s asyncio server on the app's event
loop. The verdict (:func:`pdp.adapters.ext_authz.check`) goes on the wire as:

    allow  status OK, OkHttpResponse: authorization overwritten with the minted credential,
           x-pdp-decision-id added, a non-Authorization token header removed
    deny   status PERMISSION_DENIED, DeniedHttpResponse 403 with the JSON body
    down   the RPC fails with UNAVAILABLE (Envoy denies with failure_mode_allow: false)

Every answer carries ``dynamic_metadata`` {decision_id, allow, reasons}.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import orjson
from aiohttp import web
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

from ..routes import RouteTable
from ..state import DECISIONS
from .ext_authz import DECISION_HEADER, HttpAttributes, Verdict, check

__all__ = ["GRPC_PORT", "grpc_ctx", "to_check_response"]

log = logging.getLogger("pdp.ext_authz")

#: The port the gRPC server is bound to (the configured one, or the free one for 0).
GRPC_PORT = web.AppKey("ext_authz_grpc_port", int)

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header(key: str, value: str) -> Any:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE
    )


def to_check_response(verdict: Verdict) -> Any:
    """The CheckResponse of an allow or deny verdict (a 503 verdict is an RPC error)."""
    metadata = struct_pb2.Struct()
    metadata.update(verdict.metadata())
    if verdict.allowed:
        headers = [_header("authorization", f"Bearer {verdict.credential}")]
        if verdict.decision_id is not None:
            headers.append(_header(DECISION_HEADER, verdict.decision_id))
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=headers, headers_to_remove=list(verdict.remove_headers)
            ),
            dynamic_metadata=metadata,
        )
    headers = [_header("content-type", "application/json")]
    if verdict.decision_id is not None:
        headers.append(_header(DECISION_HEADER, verdict.decision_id))
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
            headers=headers,
            body=orjson.dumps(verdict.body()).decode(),
        ),
        dynamic_metadata=metadata,
    )


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """envoy.service.auth.v3.Authorization over the app's decision service."""

    def __init__(self, app: web.Application, table: RouteTable) -> None:
        self._app = app
        self._table = table

    async def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC name)
        http = request.attributes.request.http
        attrs = HttpAttributes(
            method=http.method,
            host=http.host,
            path=http.path,
            headers={k.lower(): v for k, v in http.headers.items()},
        )
        verdict = await check(self._app[DECISIONS], self._table, attrs)
        if verdict.status == 503:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"agent-pdp cannot decide: {verdict.error}"
            )
        return to_check_response(verdict)


def grpc_ctx(
    host: str, port: int, table: RouteTable
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx serving the gRPC mode for the app's life (after the decision service)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        server = grpc.aio.server()
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            AuthorizationService(app, table), server
        )
        bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"ext_authz gRPC: cannot listen on {host}:{port}")
        app[GRPC_PORT] = bound
        await server.start()
        log.info("ext_authz gRPC (envoy.service.auth.v3.Authorization) on %s:%d", host, bound)
        try:
            yield
        finally:
            await server.stop(grace=1.0)

    return ctx
