"""The MCP gateway's client of the PDP: the one decision path over ``POST /v1/decisions``.

Errors are classes, so the gateway maps each to its JSON-RPC answer once:

    PDPError (base)
    ├── PDPUnavailable   no answer, a timeout or a 5xx/401/403: the call is refused -32603
    └── PDPRefused       the PDP answered 400 (the request it was sent is invalid): -32602
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import orjson

log = logging.getLogger("pdp.mcp")

__all__ = ["PDPClient", "PDPClientError", "PDPRefused", "PDPUnavailable"]


class PDPClientError(Exception):
    """The PDP gave no usable decision."""


class PDPUnavailable(PDPClientError):
    """The PDP could not be reached, timed out, or failed (fail closed: nothing forwarded)."""


class PDPRefused(PDPClientError):
    """The PDP refused the decision request as invalid (HTTP 400/413/415)."""


class PDPClient:
    """One keep-alive HTTP session to the PDP for the life of the gateway."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=self.timeout, json_serialize=lambda o: orjson.dumps(o).decode()
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
        raise PDPUnavailable(f"the PDP answered HTTP {status}: {message}")

    async def outcome(self, decision_id: str, credential: str, outcome: dict[str, Any]) -> None:
        """Report a forwarded call's outcome (linked audit record); failures are logged."""
        url = f"{self.url}/v1/decisions/{decision_id}/outcome"
        headers = {"Authorization": f"Bearer {credential}"}
        try:
            async with self.session.post(url, json=outcome, headers=headers) as resp:
                if resp.status != 204:
                    log.warning("outcome of %s not recorded: HTTP %s", decision_id, resp.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("outcome of %s not recorded: %r", decision_id, exc)
