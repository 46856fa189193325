"""`revoked: true` means inactive on every replica (issue 8, "What to build" 6): a replica
that has not yet loaded the key a credential was signed with reads the shared key set
before it answers, and stores the revocation every replica's introspection reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pdp.credentials.refresh import RefreshLoop
from pdp.state import CREDENTIALS
from tests.credential_helpers import (  # noqa: F401  (the *_fixture names are fixtures)
    ALLOW_EXAMPLE,
    Client,
    Factory,
    admin,
    decide,
    introspect,
    make_pdp_fixture,
)
from tests.redis_process import redis_server, redis_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.redis


def app_of(client: Client) -> web.Application:
    assert isinstance(client.server, TestServer)
    return client.server.app


@pytest.fixture
async def replicas(
    make_pdp: Factory,
    mint: Callable[..., str],
    redis_url: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Client, Client, str]:
    """(replica A, replica B, a credential A signed with a key B has not loaded)."""
    # Replica B hears of no key change (no pub/sub wake-up, a refresh once a minute), so
    # it has not loaded the key replica A is about to create and sign with.
    monkeypatch.setattr(RefreshLoop, "_on_event", lambda self, event: None)
    b = await make_pdp(tmp_path / "b", store_url=redis_url, store_refresh_s=60)
    a = await make_pdp(tmp_path / "a", store_url=redis_url, store_refresh_s=60)
    token = (await decide(a, mint, ALLOW_EXAMPLE))["credential"]["token"]
    kid_a = app_of(a)[CREDENTIALS].keyring.current.kid
    assert app_of(b)[CREDENTIALS].keyring.public_key(kid_a) is None
    return a, b, token


async def test_a_replica_that_lacks_the_signing_key_still_revokes_for_every_replica(
    replicas: tuple[Client, Client, str],
) -> None:
    a, b, token = replicas

    resp = await b.post("/v1/credentials/revoke", data={"token": token}, headers=admin())

    assert (resp.status, await resp.json()) == (200, {"revoked": True})
    assert (await introspect(a, token))["active"] is False
    assert (await introspect(b, token))["active"] is False


async def test_a_replica_that_cannot_read_the_key_set_answers_503_not_revoked(
    replicas: tuple[Client, Client, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, token = replicas
    keyring = app_of(b)[CREDENTIALS].keyring
    from pdp.errors import StoreError

    async def unreachable() -> None:
        raise StoreError("Redis store: connection refused")

    monkeypatch.setattr(keyring, "reload", unreachable)

    resp = await b.post("/v1/credentials/revoke", data={"token": token}, headers=admin())

    assert (resp.status, await resp.json()) == (
        503,
        {
            "allow": False,
            "error": {"code": "store_unavailable", "message": "Redis store: connection refused"},
        },
    )
    assert (await introspect(a, token))["active"] is True  # nothing was claimed
