"""Envoy ext_authz, gRPC mode: ``envoy.service.auth.v3.Authorization/Check``.

Served by ``pdpctl serve --ext-authz-grpc-port N`` on PDP_HOST, with the generated Envoy
API packages from PyPI (``xds-protos``) and ``grpcio``'s asyncio server on the app's event
loop. The verdict (:func:`pdp.adapters.ext_authz.check`) goes on the wire as:

    allow  status OK, OkHttpResponse: authorization overwritten with the minted credential,
           x-pdp-decision-id added, a non-Authorization token header removed
    deny   status PERMISSION_DENIED, DeniedHttpResponse 403 with the JSON body
    down   the RPC fails with UNAVAILABLE (Envoy denies with failure_mode_allow: false)

Every answer carries ``dynamic_metadata`` {decision_id, allow, reasons}.

Callers (the gateway) authenticate with the HTTP doors' rules and registry
(:class:`pdp.callers.CallerAuthenticator`):

    --client-ca   TLS with a *required* client certificate verified against the caller CA
                  (``grpc.ssl_server_credentials(require_client_auth=True)``: grpcio cannot
                  ask for one optionally); the caller is the verified peer certificate's
                  identity (its SPIFFE ID, in ``--client-trust-domain`` when set), read from
                  the call's auth context. A certificate of another CA, or none, fails the
                  handshake; one without an acceptable identity gets UNAUTHENTICATED.
    --caller-keys ``authorization: Bearer <caller key>`` in the call's metadata (Envoy:
                  ``grpc_service.initial_metadata``), over TLS when --tls-cert is set.
                  None, a wrong one, or one sent twice: UNAUTHENTICATED.

The caller goes to the decision (``input.pep``, the record's ``caller``) as on the JSON API.
An UNAUTHENTICATED call is refused before its CheckRequest is looked at: nothing is
decided, minted or recorded (as the HTTP doors' 401).
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

from ..callers import (
    ANONYMOUS,
    CALLER,
    Caller,
    CallerAuthenticator,
    client_ca_pem,
    peercert_of_pem,
)
from ..config import Settings
from ..errors import CallerAuthError
from ..routes import RouteTable
from ..state import DECISIONS
from .ext_authz import DECISION_HEADER, HttpAttributes, Verdict, check
from .ext_authz_wire import encode_allow

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
        authenticator = app.get(CALLER)
        #: None: caller authentication is off (every call is ANONYMOUS's).
        self._callers = authenticator if authenticator and authenticator.enabled else None

    async def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC name)
        caller = ANONYMOUS
        if self._callers is not None:
            try:
                caller = grpc_caller(self._callers, context)
            except CallerAuthError as exc:  # before the CheckRequest is looked at
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
        http = request.attributes.request.http
        attrs = HttpAttributes(
            method=http.method,
            host=http.host,
            path=http.path,
            headers={k.lower(): v for k, v in http.headers.items()},
        )
        verdict = await check(self._app[DECISIONS], self._table, attrs, caller)
        if verdict.status == 503:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"agent-pdp cannot decide: {verdict.error}"
            )
        if verdict.allowed and verdict.credential and verdict.decision_id:
            # The hot path: the same message, encoded from a skeleton (ext_authz_wire).
            return encode_allow(verdict.credential, verdict.decision_id, verdict.remove_headers)
        return to_check_response(verdict)


def _serialize(response: Any) -> bytes:
    """A CheckResponse, or the bytes of one already encoded (an allow)."""
    if isinstance(response, bytes):
        return response
    data: bytes = response.SerializeToString()
    return data


def add_to_server(service: AuthorizationService, server: Any) -> None:
    """Register ``Authorization/Check`` as the generated code does, with a serializer that
    passes pre-encoded allows through."""
    handlers = {
        "Check": grpc.unary_unary_rpc_method_handler(
            service.Check,
            request_deserializer=external_auth_pb2.CheckRequest.FromString,
            response_serializer=_serialize,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))
    server.add_registered_method_handlers(_SERVICE, handlers)


_SERVICE = "envoy.service.auth.v3.Authorization"


def grpc_caller(authenticator: CallerAuthenticator, context: Any) -> Caller:
    """The caller of a gRPC call by the HTTP doors' rules (CallerAuthenticator.identify):
    the peer certificate gRPC's TLS verified against --client-ca (auth context
    ``x509_pem_cert``), else ``authorization`` metadata. Raises CallerAuthError."""
    peercert = None
    if authenticator.mtls:
        pems = context.auth_context().get("x509_pem_cert") or []
        if pems:
            peercert = peercert_of_pem(pems[0])
    authorization = [
        v if isinstance(v, str) else ""
        for k, v in context.invocation_metadata() or ()
        if k == "authorization"
    ]
    return authenticator.identify(peercert, authorization, f"gRPC Check from {context.peer()}")


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS for the gRPC listener from the HTTP listener's settings: --tls-cert/--tls-key,
    and with --client-ca a client certificate required and verified against it. None:
    plaintext (no --tls-cert: loopback, or --insecure-no-caller-auth)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    pair = (settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())
    if settings.client_ca is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=client_ca_pem(settings.client_ca).encode("ascii"),
        require_client_auth=True,
    )


def grpc_ctx(
    settings: Settings, table: RouteTable
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx serving the gRPC mode for the app's life (after the decision service),
    on PDP_HOST, with the HTTP listener's TLS and caller authentication."""
    host, port = settings.host, settings.ext_authz_grpc_port or 0

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        server = grpc.aio.server(
            options=[
                # A CheckRequest carries the original request's headers, never its body.
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.max_concurrent_streams", settings.max_in_flight * 4),
                ("grpc.max_connection_idle_ms", 300_000),
            ]
        )
        add_to_server(AuthorizationService(app, table), server)
        credentials = server_credentials(settings)
        address = f"{host}:{port}"
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
        if bound == 0:
            raise OSError(f"ext_authz gRPC: cannot listen on {address}")
        app[GRPC_PORT] = bound
        await server.start()
        log.info(
            "ext_authz gRPC (envoy.service.auth.v3.Authorization) on %s:%d (%s)",
            host,
            bound,
            "plaintext" if credentials is None else "TLS",
        )
        try:
            yield
        finally:
            await server.stop(grace=1.0)

    return ctx
