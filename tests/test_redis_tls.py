"""The Redis store with authentication and TLS (rediss://), as docs/operations.md shows it:
a real redis-server with --requirepass and --tls-port, certificates made at test time."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pdp.approvals.store import RedisApprovals, open_approval_store
from pdp.errors import StoreError
from pdp.state import APPROVALS, CREDENTIALS
from pdp.store import open_store
from tests.conftest import free_port
from tests.credential_helpers import (  # noqa: F401  (the *_fixture names are fixtures)
    ALLOW_EXAMPLE,
    Factory,
    admin,
    decide,
    make_pdp_fixture,
)
from tests.redis_process import redis_binary
from tests.tls_helpers import CA, write_pair

pytestmark = pytest.mark.redis
PASSWORD = "redis-password-for-tests-0123456"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(rediss:// URL with the CA, password file) of a TLS-only, password-protected Redis."""
    d = tmp_path_factory.mktemp("redis-tls")
    ca = CA.new("redis CA")
    (d / "ca.pem").write_bytes(ca.pem)
    cert, key = write_pair(d, "server", ca.issue("redis", server=True))
    port = free_port()
    proc = subprocess.Popen(
        [
            redis_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(d / "ca.pem"), "--tls-auth-clients", "no",
            "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(d),
            "--loglevel", "warning",
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    password_file = d / "redis-password"
    password_file.write_text(PASSWORD + "\n")
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={d / 'ca.pem'}"
    time.sleep(0.5)
    yield url, password_file
    proc.terminate()
    proc.wait(5)


async def test_the_store_speaks_tls_and_authenticates(tls_redis: tuple[str, Path]) -> None:
    url, password_file = tls_redis
    store = await open_store(url, password=password_file.read_text().strip())
    try:
        await store.revoke("jti-1", "spiffe://acme.example/agents/a", until=9e9, now=1.0)
        assert (await store.credential_state("jti-1", "spiffe://acme.example/agents/a"))[0]
    finally:
        await store.close()


async def test_the_approval_store_of_its_own_speaks_tls_and_authenticates(
    tls_redis: tuple[str, Path],
) -> None:
    url, password_file = tls_redis
    store = await open_approval_store(url, password=password_file.read_text().strip())
    try:
        assert await store.get("apr_none") is None
        assert await store.list(time.time()) == []
    finally:
        await store.close()


@pytest.mark.parametrize("opener", [open_store, open_approval_store])
async def test_without_the_password_or_over_plain_tcp_the_store_refuses(
    tls_redis: tuple[str, Path], opener: Callable[..., Awaitable[Any]]
) -> None:
    url, _ = tls_redis
    with pytest.raises(StoreError, match="cannot reach the Redis store"):
        await opener(url)  # no AUTH
    with pytest.raises(StoreError, match="cannot reach the Redis store"):
        await opener(url.replace("rediss://", "redis://"), password=PASSWORD)  # no TLS


async def test_the_service_runs_on_an_authenticated_tls_store(
    make_pdp: Factory, mint: Callable[..., str], tls_redis: tuple[str, Path], tmp_path: Path
) -> None:
    url, password_file = tls_redis
    pdp = await make_pdp(store_url=url, store_password_file=password_file)

    token = (await decide(pdp, mint, ALLOW_EXAMPLE))["credential"]["token"]
    resp = await pdp.post("/v1/credentials/revoke", data={"token": token}, headers=admin())

    assert (resp.status, await resp.json()) == (200, {"revoked": True})
    resp = await pdp.post("/v1/credentials/introspect", data={"token": token}, headers=admin())
    assert (await resp.json())["active"] is False
    assert PASSWORD not in url


async def test_the_approvals_share_the_credential_stores_redis_client(
    make_pdp: Factory, tls_redis: tuple[str, Path]
) -> None:
    url, password_file = tls_redis
    pdp = await make_pdp(store_url=url, store_password_file=password_file)
    credentials, approvals = pdp.app[CREDENTIALS], pdp.app[APPROVALS]

    assert isinstance(approvals.store, RedisApprovals)
    assert approvals.store.client is credentials.store.client  # one pool, one TLS set-up
    # Closing the approvals leaves the shared client to the credential store.
    await approvals.store.close()
    assert await credentials.store.client.ping() is True
