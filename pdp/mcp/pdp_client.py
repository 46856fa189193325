"""The MCP gateway's client of the PDP: the one decision path over ``POST /v1/decisions``.

The gateway is the PDP's caller (its PEP): when the PDP requires caller authentication
(docs/security.md), the gateway presents :class:`CallerCredentials` - a client certificate
over TLS (mTLS), a caller key as ``Authorization: Bearer``, or both - on every request. An
outcome report carries the decision's credential in ``X-PDP-Credential``, so it never
competes with the caller key for the Authorization header.

Errors are classes, so the gateway maps each to its JSON-RPC answer once:

    PDPClientError (base)
    ├── PDPUnavailable   no answer, a timeout or a 5xx: the call is refused -32603
    │   └── PDPCallerRefused  401/403: the PDP did not accept this gateway as its caller
    └── PDPRefused       the PDP answered 400 (the request it was sent is invalid): -32602
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from ..target import OUTCOME_CREDENTIAL_HEADER

log = logging.getLogger("pdp.mcp")

__all__ = [
    "CallerCredentials",
    "PDPCallerRefused",
    "PDPClient",
    "PDPClientError",
    "PDPRefused",
    "PDPUnavailable",
]


class PDPClientError(Exception):
    """The PDP gave no usable decision."""


class PDPUnavailable(PDPClientError):
    """The PDP could not be reached, timed out, or failed (fail closed: nothing forwarded)."""


class PDPCallerRefused(PDPUnavailable):
    """The PDP answered 401/403: it does not accept this gateway's caller credentials."""


class PDPRefused(PDPClientError):
    """The PDP refused the decision request as invalid (HTTP 400/413/415)."""


@dataclass(frozen=True)
class CallerCredentials:
    """How the gateway authenticates to the PDP as its caller (all optional; files are
    read at start, so nothing secret is on a command line)."""

    #: PEM CA certificates the PDP's server certificate must chain to (https); None: the
    #: system's CAs.
    ca_file: Path | None = None
    #: PEM client certificate (chain) for mTLS, and its key (None: in the certificate file).
    cert_file: Path | None = None
    key_file: Path | None = None
    #: The caller key (`pdpctl callers add`), sent as ``Authorization: Bearer``. Never logged.
    caller_key: str | None = field(default=None, repr=False)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS client context (None: aiohttp's default verification)."""
        if self.ca_file is None and self.cert_file is None:
            return None
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            key = str(self.key_file) if self.key_file is not None else None
            context.load_cert_chain(str(self.cert_file), key)
        return context

    def headers(self) -> dict[str, str]:
        return {} if self.caller_key is None else {"Authorization": f"Bearer {self.caller_key}"}


class PDPClient:
    """One keep-alive HTTP session to the PDP for the life of the gateway."""

    def __init__(
        self, url: str, *, timeout_s: float = 5.0, caller: CallerCredentials | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.caller = caller or CallerCredentials()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        context = self.caller.ssl_context()
        connector = aiohttp.TCPConnector(ssl=context) if context is not None else None
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self.timeout,
            headers=self.caller.headers(),
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("PDPClient.start() was not awaited")
        return self._session

    async def decide(self, request: dict[str, Any]) -> dict[str, Any]:
        """The PDP's decision for ``request`` (HTTP 200), else raise."""
        try:
            async with self.session.post(self.url + "/v1/decisions", json=request) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PDPUnavailable(f"the PDP at {self.url} did not answer: {exc!r}") from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if status == 200 and isinstance(body, dict) and isinstance(body.get("allow"), bool):
            return body
        message = ""
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = str(body["error"].get("message", ""))
        if status in (400, 413, 415):
            raise PDPRefused(message or f"HTTP {status}")
        if status in (401, 403):
            raise PDPCallerRefused(
                f"the PDP at {self.url} refused this gateway as its caller (HTTP {status}: "
                f"{message}); see `pdpctl mcp-gateway --help` (--pdp-client-cert, "
                "--pdp-caller-key-file)"
            )
        raise PDPUnavailable(f"the PDP answered HTTP {status}: {message}")

    async def outcome(self, decision_id: str, credential: str, outcome: dict[str, Any]) -> None:
        """Report a forwarded call's outcome (linked audit record); failures are logged."""
        url = f"{self.url}/v1/decisions/{decision_id}/outcome"
        headers = {OUTCOME_CREDENTIAL_HEADER: credential}
        try:
            async with self.session.post(url, json=outcome, headers=headers) as resp:
                if resp.status != 204:
                    log.warning("outcome of %s not recorded: HTTP %s", decision_id, resp.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("outcome of %s not recorded: %r", decision_id, exc)
