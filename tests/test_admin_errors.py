"""Admin API errors: the body-size limit (413) and an unreachable store (503), through the
real app, a real OPA and (for the store) a real redis-server that is then stopped."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest

from pdp.admin import MAX_ADMIN_BODY
from tests.credential_helpers import (  # noqa: F401  (the *_fixture names are fixtures)
    Client,
    Factory,
    admin,
    make_pdp_fixture,
    pdp_fixture,
)
from tests.redis_process import RedisProcess, redis_binary

ADMIN_BODIES = [
    "/v1/credentials/introspect",
    "/v1/credentials/revoke",
    "/v1/agents/disable",
    "/v1/agents/enable",
]


def body_of(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    frame = orjson.dumps({"token": ""})
    return orjson.dumps({"token": "x" * (size - len(frame))})


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    """A body aiohttp sends chunked, without a Content-Length."""
    yield data


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", ADMIN_BODIES)
async def test_an_admin_body_over_the_limit_is_refused_with_413(
    pdp: Client, path: str, chunked: bool
) -> None:
    raw = body_of(MAX_ADMIN_BODY + 1)
    headers = {**admin(), "Content-Type": "application/json"}

    resp = await pdp.post(path, data=chunks(raw) if chunked else raw, headers=headers)

    assert resp.status == 413
    body = await resp.json()
    assert body["allow"] is False
    assert body["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_admin_body_of_exactly_the_limit_is_read(pdp: Client, chunked: bool) -> None:
    raw = body_of(MAX_ADMIN_BODY)
    headers = {**admin(), "Content-Type": "application/json"}

    resp = await pdp.post(
        "/v1/credentials/introspect", data=chunks(raw) if chunked else raw, headers=headers
    )

    assert resp.status == 200
    assert await resp.json() == {"active": False}


async def test_a_form_body_over_the_limit_is_refused_with_413(pdp: Client) -> None:
    raw = b"token=" + b"x" * MAX_ADMIN_BODY
    headers = {**admin(), "Content-Type": "application/x-www-form-urlencoded"}

    resp = await pdp.post("/v1/credentials/revoke", data=chunks(raw), headers=headers)

    assert resp.status == 413


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own: the test stops it."""
    server = RedisProcess(redis_binary(), tmp_path).start()
    yield server
    server.stop()


@pytest.mark.redis
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/agents", None),
        ("POST", "/v1/agents/disable", {"spiffe_id": "spiffe://acme.example/a", "reason": "r"}),
        ("POST", "/v1/keys/rotate", {}),
    ],
    ids=["list", "disable", "rotate"],
)
async def test_an_unreachable_store_answers_503_store_unavailable_without_a_traceback(
    make_pdp: Factory,
    own_redis: RedisProcess,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: dict[str, str] | None,
) -> None:
    pdp = await make_pdp(store_url=own_redis.url)
    own_redis.stop()
    caplog.set_level(logging.WARNING)

    resp = await pdp.request(method, path, json=body, headers=admin())

    assert resp.status == 503
    answer = await resp.json()
    assert answer["allow"] is False
    assert answer["error"]["code"] == "store_unavailable"
    assert not [r for r in caplog.records if r.exc_info], "an error logged with a traceback"
