"""Fail closed: OPA down, stalled, answering nonsense, or without its bundle yet.

A real OPA is used wherever it can produce the failure (killed, SIGSTOPped, bundle not yet
served); a fake OPA (a small aiohttp app on loopback TCP) only for answers a real OPA will
not give on demand (garbage bodies, invalid decisions, stalls of our choosing).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pdp.bundle import BuiltBundle
from tests.conftest import EXAMPLES, ClientFactory, load_example
from tests.http_helpers import decide, is_uuid, metric
from tests.opa_process import OPAProcess

Client = TestClient[Any, Any]
ServerFactory = Callable[..., Awaitable[TestServer]]
Minter = Callable[..., str]

#: Deadline for one OPA evaluation in these tests (the default, stated explicitly).
DEADLINE_MS = 100
#: Deadline where the test is not about the deadline: a loaded machine must not flake.
GENEROUS_MS = 5000
#: Generous wall-clock bound for a deadline of DEADLINE_MS: proves "no waiting", not speed.
WITHIN_S = 1.5

NOT_READY = {
    "ready": False,
    "detail": "policy engine unreachable or bundle not active",
    "policy": {"revision": None},
}


def allowed_request(mint: Minter) -> dict[str, Any]:
    """The first example the policies allow, with a fresh token for its agent."""
    for path in EXAMPLES:
        example = load_example(path)
        if example["expect"]["allow"] is True:
            request: dict[str, Any] = json.loads(json.dumps(example["request"]))
            request["agent"]["token"] = mint(example["spiffe_id"])
            return request
    raise AssertionError("examples/requests/ has no allowed example")


def without_token(request: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(request))
    del doc["agent"]["token"]
    return doc


def assert_unavailable(status: int, body: dict[str, Any]) -> None:
    """The 503 answer: allow false, the error, and the id the deny was recorded under."""
    assert status == 503
    assert set(body) == {"allow", "error", "decision_id"}
    assert body["allow"] is False
    assert body["error"]["code"] == "policy_engine_unavailable"
    assert is_uuid(body["decision_id"])


# --------------------------------------------------------------------------- OPA killed


@pytest.mark.parametrize("warm", [False, True], ids=["fresh pool", "after a decision"])
async def test_killed_engine_answers_503_deny(
    make_client: ClientFactory, own_opa: OPAProcess, mint: Minter, warm: bool
) -> None:
    client = await make_client(own_opa.url, opa_timeout_ms=GENEROUS_MS)
    request = allowed_request(mint)
    if warm:
        assert (await decide(client, request))[0] == 200
    own_opa.kill()

    status, body = await decide(client, request)

    assert_unavailable(status, body)
    assert body["error"]["message"].startswith("policy engine unreachable")


async def test_killed_engine_makes_readyz_503(
    make_client: ClientFactory, own_opa: OPAProcess
) -> None:
    client = await make_client(own_opa.url, opa_timeout_ms=GENEROUS_MS)
    own_opa.kill()

    resp = await client.get("/readyz")

    assert (resp.status, await resp.json()) == (503, NOT_READY)


async def test_killed_engine_is_counted_as_an_error_decision(
    make_client: ClientFactory, own_opa: OPAProcess, mint: Minter
) -> None:
    client = await make_client(own_opa.url, opa_timeout_ms=GENEROUS_MS)
    own_opa.kill()

    await decide(client, allowed_request(mint))
    text = await (await client.get("/metrics")).text()

    assert (
        metric(text, "pdp_decisions_total", outcome="error"),
        metric(text, "pdp_decisions_total", outcome="allow"),
        metric(text, "pdp_opa_errors_total", kind="connection"),
    ) == (1, 0, 1)


# --------------------------------------------------------------------------- OPA stalled


async def test_stalled_engine_answers_503_within_the_deadline(
    make_client: ClientFactory, own_opa: OPAProcess, mint: Minter
) -> None:
    client = await make_client(own_opa.url, opa_timeout_ms=DEADLINE_MS)
    request = allowed_request(mint)
    own_opa.pause()  # still accepts connections (the kernel queues them); never answers

    started = time.monotonic()
    status, body = await decide(client, request)
    elapsed = time.monotonic() - started

    assert_unavailable(status, body)
    assert body["error"]["message"] == f"policy engine did not answer within {DEADLINE_MS} ms"
    assert elapsed < WITHIN_S


async def test_engine_resumed_after_a_stall_decides_again(
    make_client: ClientFactory, own_opa: OPAProcess, mint: Minter
) -> None:
    # Stalled calls time out at the deadline and are abandoned; after SIGCONT the same pool
    # must serve the next decision at once. (Long deadline: the stall lasts one deadline.)
    client = await make_client(own_opa.url, opa_timeout_ms=1000)
    request = allowed_request(mint)
    assert (await decide(client, request))[0] == 200  # pooled connections to the OPA
    own_opa.pause()
    stalled = await asyncio.gather(*(decide(client, request) for _ in range(4)))
    assert [status for status, _ in stalled] == [503] * 4
    own_opa.resume()

    status, body = await decide(client, request)

    assert (status, body["allow"]) == (200, True)


# --------------------------------------------------------------------------- fake OPA


@dataclass
class FakeOPA:
    """A fake OPA answering every evaluation with one canned response; counts the calls."""

    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    stall: bool = False
    calls: int = field(default=0, init=False)
    released: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    async def evaluate(self, request: web.Request) -> web.Response:
        self.calls += 1
        await request.read()
        if self.stall:  # until the test releases it, or 5 s
            try:
                await asyncio.wait_for(self.released.wait(), 5)
            except TimeoutError:
                pass
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def query(self, request: web.Request) -> web.Response:
        """The data check of pdp.dataguard: the canned answer's bundle revision as the
        active bundle, and no data document (nothing off-schema)."""
        try:
            provenance = json.loads(self.body).get("provenance") or {}
        except (ValueError, AttributeError):
            provenance = {}
        bundles = {
            name: {"manifest": {"revision": b.get("revision", "")}}
            for name, b in (provenance.get("bundles") or {}).items()
        }
        binding = {"bundles": [bundles] if bundles else [], "documents": {}}
        return web.json_response({"result": [binding]})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/query", self.query)
        app.router.add_post("/v1/data/pdp/decision", self.evaluate)
        app.router.add_get("/health", self.health)
        return app


@pytest.fixture
async def on_fake_opa(
    aiohttp_server: ServerFactory, make_client: ClientFactory
) -> Callable[..., Awaitable[Client]]:
    """``await on_fake_opa(fake, **settings)``: the app, using ``fake`` as its OPA over TCP."""

    async def _start(fake: FakeOPA, **settings: Any) -> Client:
        server = await aiohttp_server(fake.app())
        return await make_client(f"http://{server.host}:{server.port}", **settings)

    return _start


def opa_json(doc: Any, status: int = 200) -> FakeOPA:
    return FakeOPA(status=status, body=json.dumps(doc).encode())


ALLOW_RESULT = {
    "allow": True,
    "reasons": [],
    "obligations": {
        "credential": {"ttl_seconds": 42},
        "recheck_at_target": False,
        "approval": None,
    },
    "cache": {"ttl_seconds": 0},
}

FAKE_DENIES: list[tuple[str, FakeOPA, bool, str]] = [
    # (id, the fake, whether the agent presents a valid token, the expected reason code)
    (
        "body that is not JSON",
        FakeOPA(body=b"<html>teapot</html>", content_type="text/html"),
        True,
        "policy.malformed_response",
    ),
    ("body that is a JSON array", opa_json([ALLOW_RESULT]), True, "policy.malformed_response"),
    ("undefined result", opa_json({}), True, "policy.undefined"),
    (
        "allow that is a string",
        opa_json({"result": {**ALLOW_RESULT, "allow": "yes"}}),
        True,
        "policy.invalid_decision",
    ),
    ("bare boolean result", opa_json({"result": True}), True, "policy.invalid_decision"),
    (
        "result without reasons",
        opa_json({"result": {k: v for k, v in ALLOW_RESULT.items() if k != "reasons"}}),
        True,
        "policy.invalid_decision",
    ),
    (
        "reason without a code",
        opa_json({"result": {**ALLOW_RESULT, "allow": False, "reasons": [{"message": "no"}]}}),
        True,
        "policy.invalid_decision",
    ),
    (
        "zero credential ttl",
        opa_json({"result": {**ALLOW_RESULT, "obligations": {"credential": {"ttl_seconds": 0}}}}),
        True,
        "policy.invalid_decision",
    ),
    (
        "http 500 with an OPA error body",
        opa_json(
            {"code": "internal_error", "message": "eval_conflict_error: complete rules ..."},
            status=500,
        ),
        True,
        "policy.evaluation_error",
    ),
    (
        "http 400 with an OPA error body",
        opa_json({"code": "invalid_parameter", "message": "error(s) occurred"}, status=400),
        True,
        "policy.evaluation_error",
    ),
    (
        "http 502 from a proxy in between",
        FakeOPA(status=502, body=b"Bad Gateway", content_type="text/plain"),
        True,
        "policy.malformed_response",
    ),
    (
        "allow for an agent without a token",
        opa_json({"result": ALLOW_RESULT}),
        False,
        "authn.token_missing",
    ),
]


@pytest.mark.parametrize(
    ("template", "with_token", "code"),
    [case[1:] for case in FAKE_DENIES],
    ids=[case[0] for case in FAKE_DENIES],
)
async def test_bad_engine_answer_is_a_pdp_deny(
    on_fake_opa: Callable[..., Awaitable[Client]],
    mint: Minter,
    template: FakeOPA,
    with_token: bool,
    code: str,
) -> None:
    fake = dataclasses.replace(template)  # a fresh call count for this test
    client = await on_fake_opa(fake, opa_timeout_ms=GENEROUS_MS)
    request = allowed_request(mint)

    status, body = await decide(client, request if with_token else without_token(request))

    assert (status, body["allow"], body["obligations"]) == (200, False, {})
    assert [(r["code"], r["rule"]) for r in body["reasons"]] == [(code, "pdp")]
    assert fake.calls == 1  # asked once: no retry


async def test_valid_engine_answer_with_a_valid_token_is_allowed(
    on_fake_opa: Callable[..., Awaitable[Client]], mint: Minter
) -> None:
    provenance = {"bundles": {"pdp": {"revision": "fake-rev-1"}}}
    fake = opa_json({"result": ALLOW_RESULT, "provenance": provenance})
    client = await on_fake_opa(fake, opa_timeout_ms=GENEROUS_MS)

    status, body = await decide(client, allowed_request(mint))

    assert (status, body["allow"], body["reasons"]) == (200, True, [])
    assert body["obligations"] == ALLOW_RESULT["obligations"]
    assert body["policy"] == {"revision": "fake-rev-1"}


async def test_slow_engine_answers_503_at_the_deadline(
    on_fake_opa: Callable[..., Awaitable[Client]], mint: Minter
) -> None:
    fake = FakeOPA(body=json.dumps({"result": ALLOW_RESULT}).encode(), stall=True)
    client = await on_fake_opa(fake, opa_timeout_ms=DEADLINE_MS)
    try:
        started = time.monotonic()
        status, body = await decide(client, allowed_request(mint))
        elapsed = time.monotonic() - started
    finally:
        fake.released.set()

    assert_unavailable(status, body)
    assert body["error"]["message"] == f"policy engine did not answer within {DEADLINE_MS} ms"
    assert elapsed < WITHIN_S
    assert fake.calls == 1


# --------------------------------------------------------------------------- bundle not yet active


@dataclass
class BundleServer:
    """Serves the repository bundle at /bundles/pdp.tar.gz once ``served`` is set; 404 before."""

    bundle: bytes
    served: bool = False
    url: str = ""

    async def get(self, request: web.Request) -> web.Response:
        if not self.served:
            raise web.HTTPNotFound()
        return web.Response(body=self.bundle, content_type="application/gzip")


@pytest.fixture
async def bundle_server(aiohttp_server: ServerFactory, policy_bundle: BuiltBundle) -> BundleServer:
    bundles = BundleServer(policy_bundle.path.read_bytes())
    app = web.Application()
    app.router.add_get("/bundles/pdp.tar.gz", bundles.get)
    server = await aiohttp_server(app)
    bundles.url = f"http://{server.host}:{server.port}"
    return bundles


@pytest.fixture
def pulling_opa(opa_bin: str, bundle_server: BundleServer, tmp_path: Path) -> Iterator[OPAProcess]:
    """A real OPA that pulls its bundle from ``bundle_server`` (polling every 1-2 s)."""
    config = {
        "services": {"bs": {"url": bundle_server.url}},
        "bundles": {
            "pdp": {
                "service": "bs",
                "resource": "/bundles/pdp.tar.gz",
                "polling": {"min_delay_seconds": 1, "max_delay_seconds": 2},
            }
        },
    }
    config_file = tmp_path / "opa-config.json"
    config_file.write_text(json.dumps(config))
    opa = OPAProcess(opa_bin, tmp_path / "opa.sock", "--config-file", str(config_file))
    opa.start(wait_bundles=False)
    yield opa
    opa.stop()


async def test_readyz_is_503_until_the_bundle_is_active(
    make_client: ClientFactory, pulling_opa: OPAProcess
) -> None:
    client = await make_client(pulling_opa.url, opa_timeout_ms=GENEROUS_MS)

    resp = await client.get("/readyz")

    assert (resp.status, await resp.json()) == (503, NOT_READY)


async def test_decision_before_the_bundle_is_active_denies_as_undefined(
    make_client: ClientFactory, pulling_opa: OPAProcess, mint: Minter
) -> None:
    client = await make_client(pulling_opa.url, opa_timeout_ms=GENEROUS_MS)

    status, body = await decide(client, allowed_request(mint))

    assert (status, body["allow"]) == (200, False)
    assert [r["code"] for r in body["reasons"]] == ["policy.undefined"]


async def test_readyz_turns_200_once_the_bundle_is_served_and_decisions_work(
    make_client: ClientFactory,
    pulling_opa: OPAProcess,
    bundle_server: BundleServer,
    policy_bundle: BuiltBundle,
    mint: Minter,
) -> None:
    client = await make_client(pulling_opa.url, opa_timeout_ms=GENEROUS_MS)
    assert (await client.get("/readyz")).status == 503
    bundle_server.served = True

    deadline = time.monotonic() + 10
    while (resp := await client.get("/readyz")).status != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # poll interval; the loop is bounded by the deadline

    assert (resp.status, await resp.json()) == (
        200,
        {"ready": True, "detail": "ok", "policy": {"revision": policy_bundle.revision}},
    )
    status, body = await decide(client, allowed_request(mint))
    assert (status, body["allow"], body["policy"]) == (
        200,
        True,
        {"revision": policy_bundle.revision},
    )
