"""Shared by the trust-boundary tests: raw HTTP, signing SVIDs with the dev keys, records."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from pdp import server
from pdp.app import create_app
from pdp.config import Settings
from tests.audit_helpers import records
from tests.conftest import DEV_DOMAINS, free_port
from tests.credential_helpers import ADMIN, ALLOW_EXAMPLE, SUPPORT_BOT
from tests.opa_process import OPAProcess

DECISIONS = "/v1/decisions"


def dev_signing_key(state: Path, domain: str = "acme.example") -> tuple[Any, str]:
    """(private key, kid) of a dev trust domain in ``state``."""
    directory = state / "dev-trust" / domain
    key = serialization.load_pem_private_key((directory / "key.pem").read_bytes(), None)
    kid = json.loads((directory / "bundle.json").read_text())["keys"][0]["kid"]
    return key, kid


def sign_svid(key: Any, kid: str, **claims: Any) -> str:
    """A JWT-SVID for support-bot signed with ``key``; ``claims`` override (None drops)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": SUPPORT_BOT,
        "aud": ["agent-pdp"],
        "iat": now,
        "exp": now + 300,
        "jti": f"t-{time.monotonic_ns()}",
    }
    base.update(claims)
    body = {k: v for k, v in base.items() if v is not None}
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": kid, "typ": "JWT"})


def allow_request(token: str | None) -> dict[str, Any]:
    """The README's allow example with ``token`` (None: no token)."""
    request: dict[str, Any] = json.loads(json.dumps(ALLOW_EXAMPLE["request"]))
    agent = dict(request.get("agent", {}))
    if token is None:
        agent.pop("token", None)
    else:
        agent["token"] = token
    request["agent"] = agent
    return request


async def raw_http(host: str, port: int, data: bytes, timeout: float = 10.0) -> tuple[int, Any]:
    """Send raw bytes as one HTTP/1.1 request; return (status, JSON body or text)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def request_bytes(
    method: str, path: str, body: bytes, headers: dict[str, bytes] | None = None
) -> bytes:
    """An HTTP/1.1 request with ``Connection: close`` (header values as raw bytes)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: localhost", b"Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(name.encode() + b": " + value)
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def decision_records(audit_dir: Path) -> list[dict[str, Any]]:
    return [r for r in records(audit_dir) if r.get("type") == "decision"]


def schema_error(path: str, message: str) -> dict[str, Any]:
    return {
        "allow": False,
        "error": {
            "code": "invalid_request",
            "message": "request does not match the schema",
            "fields": [{"path": path, "message": message}],
        },
    }


def json_error(path: str, message: str) -> dict[str, Any]:
    return {
        "allow": False,
        "error": {
            "code": "malformed_json",
            "message": f"body is not valid JSON: {message}",
            "fields": [{"path": path, "message": message}],
        },
    }


Serve = Callable[..., Awaitable[tuple[str, Any]]]


@pytest.fixture(name="serve")
async def serve_fixture(
    shared_opa: OPAProcess, dev_state: Path, tmp_path: Path
) -> AsyncIterator[Serve]:
    """Start the service on its real listener(s); returns (base URL, started app)."""
    running: list[server.Started] = []

    async def _serve(**overrides: Any) -> tuple[str, Any]:
        values: dict[str, Any] = {
            "state_dir": tmp_path / "state",
            "port": free_port(),
            "opa_url": shared_opa.url,
            "opa_timeout_ms": 5000,
            "dev_trust_domains": (),
            "trust_bundles": {d: dev_state / "dev-trust" / d / "bundle.json" for d in DEV_DOMAINS},
            "admin_token": ADMIN,
        }
        values.update(overrides)
        settings = Settings(**values)
        app = create_app(settings)
        started = await server.start(app, settings)
        running.append(started)
        scheme = "https" if settings.tls_cert is not None else "http"
        return f"{scheme}://127.0.0.1:{started.port}", started

    yield _serve
    for started in running:
        await started.stop()
