"""Shared by the credential tests: the app on the session's real OPA with its own state
dir (own signing key, own SQLite store), trusting the session's dev trust bundles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pdp.app import create_app
from pdp.config import Settings
from tests.conftest import DEV_DOMAINS, EXAMPLES, load_example
from tests.http_helpers import decide as http_decide
from tests.opa_process import OPAProcess

Client = TestClient[Any, Any]
ADMIN = "admin-credential-for-tests-0123"
INTROSPECTOR = "introspection-credential-4567"
SUPPORT_BOT = "spiffe://acme.example/agents/support-bot"
ALLOW_EXAMPLE = load_example(
    next(p for p in EXAMPLES if p.name == "allow-support-bot-jira-search.json")
)


def admin(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


Factory = Callable[..., Awaitable[Client]]


@pytest.fixture(name="make_pdp")
async def make_pdp_fixture(
    aiohttp_client: Any, dev_state: Path, shared_opa: OPAProcess, tmp_path: Path
) -> AsyncIterator[Factory]:
    """Start the app on a state dir (default: tmp_path/state) with settings overrides."""

    async def _make(state: Path | None = None, **overrides: Any) -> Client:
        values: dict[str, Any] = {
            "state_dir": state or tmp_path / "state",
            "opa_url": shared_opa.url,
            "opa_timeout_ms": 5000,
            "dev_trust_domains": (),
            "trust_bundles": {d: dev_state / "dev-trust" / d / "bundle.json" for d in DEV_DOMAINS},
            "admin_token": ADMIN,
            "introspection_token": INTROSPECTOR,
        }
        values.update(overrides)
        client: Client = await aiohttp_client(create_app(Settings(**values)))
        return client

    yield _make


@pytest.fixture(name="pdp")
async def pdp_fixture(make_pdp: Factory) -> Client:
    return await make_pdp()


async def decide(client: Client, mint: Callable[..., str], example: dict[str, Any]) -> Any:
    """Decide an example with a token minted for its agent; the 200 answer's body."""
    request = dict(example["request"])
    request["agent"] = {**request.get("agent", {}), "token": mint(example["spiffe_id"])}
    status, body = await http_decide(client, request)
    assert status == 200
    return body


async def introspect(client: Client, token: str, auth: str = ADMIN) -> Any:
    """POST /v1/credentials/introspect (admin credential): the 200 answer's body, never
    cached (Cache-Control: no-store)."""
    resp = await client.post(
        "/v1/credentials/introspect", data={"token": token}, headers=admin(auth)
    )
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    return await resp.json()
