"""The listeners (pdp.server): the admin surface apart, overload answered at once, slow
and excessive clients cut off, unparseable HTTP answered in JSON without echoing it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pdp.app import create_app
from pdp.config import Settings
from pdp.server import LISTENERS
from tests.boundary_helpers import Serve, allow_request, raw_http, serve_fixture  # noqa: F401  (fixture)
from tests.credential_helpers import ADMIN, SUPPORT_BOT, Client, Factory, make_pdp_fixture  # noqa: F401
from tests.opa_process import OPAProcess

ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
NOT_FOUND = {"allow": False, "error": {"code": "not_found", "message": "Not Found"}}


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers or {}) as resp:
            body = (
                await resp.json(content_type=None)
                if resp.content_type.endswith("json")
                else await resp.text()
            )
            return resp.status, body


# --------------------------------------------------------------------------- admin apart


async def test_with_an_admin_listener_the_admin_surface_is_served_only_there(
    serve: Serve, mint: Any
) -> None:
    from tests.conftest import free_port

    url, started = await serve(admin_port=free_port())
    admin_url = f"http://127.0.0.1:{started.admin_port}"

    assert await get(url + "/v1/agents", ADMIN_HEADERS) == (404, NOT_FOUND)
    assert (await get(url + "/metrics"))[0] == 404
    assert (await get(admin_url + "/v1/agents", ADMIN_HEADERS))[0] == 200
    assert (await get(admin_url + "/metrics"))[0] == 200
    # ...and the decision API is not on the admin listener
    async with aiohttp.ClientSession() as session:
        async with session.post(admin_url + "/v1/decisions", json={}) as resp:
            assert resp.status == 404
        async with session.post(
            url + "/v1/decisions", json=allow_request(mint(SUPPORT_BOT))
        ) as resp:
            assert resp.status == 200


async def test_a_decision_listener_beyond_loopback_never_serves_the_admin_surface(
    aiohttp_client: Any, shared_opa: OPAProcess, dev_state: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("gw sha256:" + "0" * 64 + "\n")
    # Settings as for a public address (TLS and caller auth elided with the explicit
    # opt-out); the test server itself still binds loopback.
    settings = Settings(
        host="0.0.0.0",
        insecure_no_caller_auth=True,
        state_dir=tmp_path / "state",
        opa_url=shared_opa.url,
        admin_token=ADMIN,
    )
    app = create_app(settings)
    assert app[LISTENERS].admin_on_decision is False
    client: Client = await aiohttp_client(app)

    for path in ("/v1/agents", "/v1/keys", "/metrics"):
        resp = await client.get(path, headers=ADMIN_HEADERS)
        assert (resp.status, await resp.json()) == (404, NOT_FOUND), path
    assert (await client.get("/healthz")).status == 200


async def test_failed_admin_authentication_is_logged_without_the_secret(
    make_pdp: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    pdp = await make_pdp()
    secret = "not-the-admin-token-but-a-guess-1234"

    resp = await pdp.get("/v1/agents", headers={"Authorization": f"Bearer {secret}"})
    missing = await pdp.get("/v1/agents")

    assert (resp.status, missing.status) == (403, 401)
    lines = [r.getMessage() for r in caplog.records if r.name == "pdp.admin"]
    assert any("admin authentication failed: a wrong Bearer credential" in m for m in lines)
    assert any("admin authentication failed: no Bearer credential" in m for m in lines)
    assert not any(secret in m for m in lines)


# --------------------------------------------------------------------------- overload


async def test_a_full_evaluation_slot_table_answers_503_with_retry_after_at_once(
    make_pdp: Factory, own_opa: OPAProcess, mint: Any
) -> None:
    pdp = await make_pdp(opa_url=own_opa.url, opa_timeout_ms=5000, max_in_flight=1)
    request = allow_request(mint(SUPPORT_BOT))
    assert (await pdp.post("/v1/decisions", json=request)).status == 200  # warm
    own_opa.pause()  # the next decision holds the only slot until OPA answers
    try:
        stuck = asyncio.create_task(pdp.post("/v1/decisions", json=request))
        await asyncio.sleep(0.2)

        shed = await pdp.post("/v1/decisions", json=request)

        assert (shed.status, shed.headers.get("Retry-After"), await shed.json()) == (
            503,
            "1",
            {
                "allow": False,
                "error": {
                    "code": "overloaded",
                    "message": "1 decisions are being evaluated; retry shortly",
                },
            },
        )
        assert not stuck.done()  # shed without waiting for the slot
    finally:
        own_opa.resume()
    assert (await stuck).status == 200
    assert (await pdp.post("/v1/decisions", json=request)).status == 200  # slot released


# --------------------------------------------------------------------------- slow clients


async def test_a_request_head_that_never_completes_is_cut_off(serve: Serve) -> None:
    url, started = await serve(header_timeout_s=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", started.port)
    writer.write(b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Ty")  # and nothing more
    await writer.drain()

    data = await asyncio.wait_for(reader.read(), timeout=10)  # EOF once the server closes

    assert data == b""
    writer.close()


async def test_a_body_that_never_arrives_is_a_408(serve: Serve) -> None:
    url, started = await serve(body_timeout_s=0.3)
    head = (
        b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"tenant"'
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", started.port)
    writer.write(head)
    await writer.drain()

    raw = await asyncio.wait_for(reader.read(), timeout=10)

    writer.close()
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert raw.endswith(
        b'{"allow":false,"error":{"code":"request_timeout",'
        b'"message":"the body did not arrive within 0.3 s"}}'
    )


async def test_connections_past_the_cap_are_answered_503_and_closed(serve: Serve) -> None:
    url, started = await serve(max_connections=2)
    held = [await asyncio.open_connection("127.0.0.1", started.port) for _ in range(2)]
    await asyncio.sleep(0.1)

    status, body = await raw_http("127.0.0.1", started.port, b"GET /healthz HTTP/1.1\r\n\r\n")

    assert (status, body) == (
        503,
        {"allow": False, "error": {"code": "overloaded", "message": "too many open connections"}},
    )
    for _, writer in held:
        writer.close()
    await asyncio.sleep(0.1)
    assert (await get(url + "/healthz"))[0] == 200  # room again


@pytest.mark.parametrize(
    "raw",
    [
        b"Authorization: Bearer secret-admin-token\x01",
        b"Bad Header: x",
        b"Content-Length: abc",
        b"Content-Length: 1\r\nContent-Length: 2",
        b"Transfer-Encoding: chunked\r\nContent-Length: 3",
    ],
)
async def test_unparseable_http_is_a_json_400_that_echoes_nothing(serve: Serve, raw: bytes) -> None:
    url, started = await serve()
    data = b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\n" + raw + b"\r\n\r\n{}"

    status, body = await raw_http("127.0.0.1", started.port, data)

    assert (status, body) == (
        400,
        {
            "allow": False,
            "error": {"code": "bad_request", "message": "the request is not valid HTTP"},
        },
    )
