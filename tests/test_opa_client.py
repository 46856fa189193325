"""The OPA client's own logic (pdp.opa): how OPA's answers map to decisions or policy
errors, how transport failures map to 503, and the provenance revision. The answers a real
OPA gives are covered by tests/test_api.py and test_failclosed.py; here a tiny fake OPA (an
aiohttp app) produces the ones a real OPA will not on demand (garbage, stalls, errors)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pdp.errors import EngineUnavailableError
from pdp.opa import OPAClient, OPAResult, _revision

DECISION = {"allow": False, "reasons": [], "obligations": {}}
MALFORMED = "policy.malformed_response"
PROVENANCE = {"bundles": {"policies": {"revision": "rev-7"}}}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def interpret(status: int, body: Any, raw: bytes | None = None) -> OPAResult:
    client = OPAClient("http://opa.invalid:8181", timeout_s=0.1)
    return client._interpret(status, orjson.dumps(body) if raw is None else raw, 0.5)


# --------------------------------------------------------------------------- answers


def test_a_valid_decision_is_returned_with_revision_duration_and_opa_id() -> None:
    result = interpret(200, {"result": DECISION, "provenance": PROVENANCE, "decision_id": "d9"})

    assert result == OPAResult(DECISION, "rev-7", 0.5, decision_id="d9")


def test_a_decision_id_that_is_not_a_string_is_dropped() -> None:
    assert interpret(200, {"result": DECISION, "decision_id": 7}).decision_id is None


@pytest.mark.parametrize(
    ("status", "body", "raw", "code", "message"),
    [
        (
            200,
            None,
            b"<html>",
            "policy.malformed_response",
            "OPA answered 200 with a non-JSON body",
        ),
        (502, None, b"", "policy.malformed_response", "OPA answered 502 with a non-JSON body"),
        (200, [DECISION], None, "policy.malformed_response", "OPA answered 200 with a non-object"),
        (500, {"message": "boom"}, None, "policy.evaluation_error", "OPA answered 500: boom"),
        (400, {"code": "invalid"}, None, "policy.evaluation_error", "OPA answered 400: invalid"),
        (500, {}, None, "policy.evaluation_error", "OPA answered 500: no detail"),
        (
            200,
            {"provenance": PROVENANCE},
            None,
            "policy.undefined",
            "data.pdp.decision is undefined: is the bundle loaded?",
        ),
        (
            200,
            {"result": {"allow": "yes"}},
            None,
            "policy.invalid_decision",
            "the policy's decision does not match the decision schema",
        ),
    ],
    ids=["html", "empty", "array", "message", "code", "no-detail", "undefined", "invalid"],
)
def test_an_answer_that_is_not_a_decision_is_a_policy_error(
    status: int, body: Any, raw: bytes | None, code: str, message: str
) -> None:
    result = interpret(status, body, raw)

    assert result.decision is None
    assert (result.error_code, result.error_message) == (code, message)
    assert result.duration_s == 0.5


def test_an_error_detail_is_cut_to_300_characters() -> None:
    result = interpret(500, {"message": "x" * 1000})

    assert result.error_message == "OPA answered 500: " + "x" * 300


def test_an_undefined_or_invalid_decision_keeps_the_revision() -> None:
    assert interpret(200, {"provenance": PROVENANCE}).revision == "rev-7"
    assert interpret(200, {"result": {}, "provenance": PROVENANCE}).revision == "rev-7"


@pytest.mark.parametrize(
    ("provenance", "revision"),
    [
        (None, None),
        ("rev", None),
        ({}, None),
        ({"bundles": []}, None),
        ({"bundles": {}}, None),
        ({"bundles": {"policies": {"revision": "r1"}}}, "r1"),
        ({"bundles": {"policies": {"revision": ""}}}, None),
        ({"bundles": {"policies": {}}}, None),
        ({"bundles": {"b": {"revision": "2"}, "a": {"revision": "1"}}}, "a=1,b=2"),
        ({"bundles": {"b": {"revision": "2"}, "a": "junk"}}, "2"),
    ],
)
def test_the_revision_comes_from_the_provenance_bundles(
    provenance: Any, revision: str | None
) -> None:
    assert _revision(provenance) == revision


async def test_a_unix_url_talks_to_the_socket() -> None:
    client = OPAClient("unix:///run/opa.sock", timeout_s=0.1)
    await client.start()

    assert client.pool._unix == "/run/opa.sock"
    assert client._decision_head == (
        b"POST /v1/data/pdp/decision?provenance=true HTTP/1.1\r\nHost: opa\r\n"
        b"Content-Type: application/json\r\n"
    )
    await client.close()


@pytest.mark.parametrize("url", ["http://127.0.0.1:8181/", "http://127.0.0.1:8181"])
async def test_a_tcp_url_loses_its_trailing_slash(url: str) -> None:
    client = OPAClient(url, timeout_s=0.1)
    await client.start()

    assert client.pool._unix is None
    assert client._decision_head.startswith(
        b"POST /v1/data/pdp/decision?provenance=true HTTP/1.1\r\nHost: 127.0.0.1:8181\r\n"
    )
    await client.close()


def test_the_client_must_be_started_before_use() -> None:
    with pytest.raises(RuntimeError, match="start"):
        _ = OPAClient("http://127.0.0.1:1", timeout_s=0.1).pool


# --------------------------------------------------------------------------- a fake OPA


@pytest.fixture
async def fake_opa() -> AsyncIterator[Callable[..., Awaitable[OPAClient]]]:
    """``await fake_opa(handler, timeout_s=...)``: a started client on a fake OPA."""
    servers: list[TestServer] = []
    clients: list[OPAClient] = []

    async def start(handler: Handler, timeout_s: float = 2.0) -> OPAClient:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        client = OPAClient(str(server.make_url("/")), timeout_s=timeout_s)
        await client.start()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
    for server in servers:
        await server.close()


async def test_evaluate_posts_the_input_to_the_decision_entrypoint(fake_opa: Any) -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            ctype=request.content_type,
            body=await request.json(),
        )
        return web.json_response({"result": DECISION, "provenance": PROVENANCE})

    client = await fake_opa(handler)
    result = await client.evaluate({"tenant": "acme"})

    assert seen == {
        "method": "POST",
        "path": "/v1/data/pdp/decision",
        "query": {"provenance": "true"},
        "ctype": "application/json",
        "body": {"input": {"tenant": "acme"}},
    }
    assert (result.decision, result.revision) == (DECISION, "rev-7")
    assert result.duration_s > 0


async def test_evaluate_past_the_deadline_is_a_timeout_503(fake_opa: Any) -> None:
    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    client = await fake_opa(stall, timeout_s=0.05)

    with pytest.raises(EngineUnavailableError) as info:
        await client.evaluate({})

    assert info.value.kind == "timeout"
    assert info.value.message == "policy engine did not answer within 50 ms"


async def test_an_unreachable_opa_is_a_connection_503() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = OPAClient(f"http://127.0.0.1:{port}", timeout_s=1.0)
    await client.start()
    try:
        with pytest.raises(EngineUnavailableError) as info:
            await client.evaluate({})
        assert info.value.kind == "connection"
        assert info.value.message.startswith("policy engine unreachable: ConnectionRefusedError")
        assert len(info.value.message) <= 300
        assert await client.health() is False
    finally:
        await client.close()
        await client.close()  # closing twice is harmless


async def test_data_reads_a_document_under_data(fake_opa: Any) -> None:
    paths: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        paths.append(request.raw_path)
        if request.path.endswith("/missing"):
            return web.json_response({})
        return web.json_response({"result": {"ids": [1, 2]}})

    client = await fake_opa(handler)

    assert await client.data("authzen/search/subjects") == {"ids": [1, 2]}
    assert await client.data("a b/missing") is None
    assert paths == ["/v1/data/authzen/search/subjects", "/v1/data/a%20b/missing"]


@pytest.mark.parametrize(
    ("status", "raw"), [(404, b"{}"), (200, b"[1]"), (200, b"nope"), (500, b'{"result": 1}')]
)
async def test_data_that_is_not_a_200_json_object_is_503(
    fake_opa: Any, status: int, raw: bytes
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=raw, content_type="application/json")

    client = await fake_opa(handler)

    with pytest.raises(EngineUnavailableError) as info:
        await client.data("x/y")
    assert info.value.message == f"policy engine answered {status} reading data.x/y"


async def test_policies_lists_the_modules_and_drops_junk(fake_opa: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        assert request.path == "/v1/policies"
        return web.json_response({"result": [{"id": "a.rego"}, "junk", {"id": "b.rego"}]})

    client = await fake_opa(handler)

    assert await client.policies() == [{"id": "a.rego"}, {"id": "b.rego"}]


@pytest.mark.parametrize(
    ("status", "raw"),
    [(500, b'{"result": []}'), (200, b'{"result": {}}'), (200, b"[]"), (200, b"x")],
)
async def test_policies_that_are_not_a_list_are_503(fake_opa: Any, status: int, raw: bytes) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=raw, content_type="application/json")

    client = await fake_opa(handler)

    with pytest.raises(EngineUnavailableError) as info:
        await client.policies()
    assert info.value.message == f"policy engine answered {status} listing its policies"


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (500, False), (503, False)])
async def test_health_is_opa_health_with_bundles(fake_opa: Any, status: int, healthy: bool) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        return web.json_response({}, status=status)

    client = await fake_opa(handler)

    assert await client.health() is healthy
    assert await client.health(bundles=False) is healthy
    assert seen == ["/health?bundles", "/health"]


async def test_health_of_a_stalled_opa_is_false(fake_opa: Any) -> None:
    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    client = await fake_opa(stall, timeout_s=0.01)  # health waits at least 1 s

    assert await client.health() is False


async def test_data_honours_its_own_deadline(fake_opa: Any) -> None:
    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    client = await fake_opa(stall, timeout_s=2.0)

    with pytest.raises(EngineUnavailableError) as info:
        await client.data("x", timeout_s=0.05)
    assert info.value.kind == "timeout"
    assert info.value.message == "policy engine did not answer within 50 ms"


@pytest.mark.parametrize("call", ["policies", "metrics_text", "health"])
async def test_cold_reads_wait_at_least_their_floor(fake_opa: Any, call: str) -> None:
    """A 10 ms decision deadline does not cut off the bundle check, metrics or health:
    each waits at least its floor (here an answer 0.3 s late still arrives)."""

    async def late(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        if request.path == "/metrics":
            return web.Response(text="up 1\n")
        return web.json_response({"result": []})

    client = await fake_opa(late, timeout_s=0.01)

    got = await getattr(client, call)()
    assert got == {"policies": [], "metrics_text": "up 1\n", "health": True}[call]


async def test_decisions_reuse_one_keep_alive_connection(fake_opa: Any) -> None:
    peers: set[Any] = set()

    async def handler(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))  # the client's port
        return web.json_response({"result": DECISION, "provenance": PROVENANCE})

    client = await fake_opa(handler)
    for _ in range(3):
        assert (await client.evaluate({})).decision == DECISION

    assert len(peers) == 1


# --------------------------------------------------------------------------- kept exact


def test_a_result_is_immutable_and_says_no_error_with_none() -> None:
    # The decision cache hands one OPAResult to every hit: nobody may change it, and "no
    # error" / "no OPA decision id" are None (callers test `is None`), never "".
    import dataclasses

    result = OPAResult(DECISION, "rev-7", 0.001)
    assert (result.error_code, result.error_message, result.decision_id) == (None, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.revision = "other"  # type: ignore[misc]
    assert not hasattr(result, "__dict__")  # slots: no stray attributes either


def test_the_provenance_revision_is_the_one_the_decision_cache_reads() -> None:
    from pdp.opa import provenance_revision

    assert provenance_revision(PROVENANCE) == "rev-7"
    assert provenance_revision({"bundles": {"a": {"revision": "1"}, "b": {"revision": "2"}}}) == (
        "a=1,b=2"
    )


def test_a_transport_failure_message_is_cut_to_300_characters() -> None:
    from pdp.opa import _unavailable

    with pytest.raises(EngineUnavailableError) as info, _unavailable(1.0):
        raise ConnectionResetError("x" * 1000)
    assert len(info.value.message) == 300
    assert info.value.message.startswith("policy engine unreachable: ConnectionResetError: xx")


def test_the_client_must_be_started_and_is_unusable_once_closed() -> None:
    client = OPAClient("http://127.0.0.1:1", timeout_s=0.1)
    with pytest.raises(RuntimeError, match=r"^OPAClient\.start\(\) was not called$"):
        _ = client.pool

    async def cycle() -> None:
        await client.start()
        assert client.pool is not None
        await client.close()

    asyncio.run(cycle())
    with pytest.raises(RuntimeError):
        _ = client.pool  # closed: the pool is gone, no request can use a closed one


async def test_evaluate_measures_its_own_duration(fake_opa: Any) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return web.json_response({"result": DECISION})

    client = await fake_opa(slow)
    result = await client.evaluate({})
    assert 0.05 <= result.duration_s < 5  # the time of this call, not a clock reading


async def test_a_timeout_message_names_the_deadline_in_milliseconds(fake_opa: Any) -> None:
    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    client = await fake_opa(stall, timeout_s=0.7)
    with pytest.raises(EngineUnavailableError) as info:
        await client.evaluate({})
    assert info.value.message == "policy engine did not answer within 700 ms"


@pytest.mark.parametrize(("call", "floor"), [("policies", 1.0), ("health", 1.0)])
async def test_cold_reads_wait_their_floor_and_no_longer(
    fake_opa: Any, call: str, floor: float
) -> None:
    """The floor bounds the wait too: an OPA that answers later than it is unavailable."""

    async def later(request: web.Request) -> web.Response:
        await asyncio.sleep(floor + 0.6)
        return web.json_response({"result": []})

    client = await fake_opa(later, timeout_s=0.01)
    if call == "health":
        assert await client.health() is False
    else:
        with pytest.raises(EngineUnavailableError) as info:
            await client.policies()
        assert info.value.message == "policy engine did not answer within 1000 ms"


async def test_metrics_wait_two_seconds_at_most(fake_opa: Any) -> None:
    async def later(request: web.Request) -> web.Response:
        await asyncio.sleep(2.6)
        return web.Response(text="up 1\n")

    client = await fake_opa(later, timeout_s=0.01)
    with pytest.raises(EngineUnavailableError) as info:
        await client.metrics_text()
    assert info.value.message == "policy engine did not answer within 2000 ms"


async def test_metrics_text_names_the_status_and_survives_bad_bytes(fake_opa: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"up 1 \xff\n", content_type="text/plain")

    async def failing(request: web.Request) -> web.Response:
        return web.Response(status=500, text="no")

    client = await fake_opa(handler)
    assert await client.metrics_text() == "up 1 \ufffd\n"
    broken = await fake_opa(failing)
    with pytest.raises(EngineUnavailableError) as info:
        await broken.metrics_text()
    assert info.value.message == "policy engine answered 500 on /metrics"
