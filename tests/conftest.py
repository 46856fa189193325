"""Shared fixtures: a real OPA with the repository's bundle, dev trust keys, app clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pdp.app import create_app
from pdp.bundle import BuiltBundle, build_bundle
from pdp.config import Settings
from pdp.devtrust import ensure_dev_trust, mint_svid
from pdp.tools import find_opa

from .opa_process import OPAProcess

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
EXAMPLES = sorted((ROOT / "examples" / "requests").glob("*.json"))
DEV_DOMAINS = ("acme.example", "globex.example")

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def load_example(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


@pytest.fixture(scope="session")
def opa_bin() -> str:
    """The real OPA binary (installed by `make tools`); tests fail loudly without it."""
    return find_opa()


@pytest.fixture(scope="session")
def policy_bundle(opa_bin: str, tmp_path_factory: pytest.TempPathFactory) -> BuiltBundle:
    out = tmp_path_factory.mktemp("bundle") / "bundle.tar.gz"
    return build_bundle(opa_bin, POLICIES, out)


@pytest.fixture(scope="session")
def shared_opa(
    opa_bin: str, policy_bundle: BuiltBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OPAProcess]:
    """One OPA for the session, for tests that do not stop or break it."""
    sock = tmp_path_factory.mktemp("opa") / "opa.sock"
    opa = OPAProcess(opa_bin, sock, "--bundle", str(policy_bundle.path)).start()
    yield opa
    opa.stop()


@pytest.fixture
def own_opa(
    opa_bin: str, policy_bundle: BuiltBundle, tmp_path: Path
) -> Iterator[OPAProcess]:
    """An OPA of this test's own, free to be killed or paused."""
    opa = OPAProcess(opa_bin, tmp_path / "opa.sock", "--bundle", str(policy_bundle.path)).start()
    yield opa
    opa.stop()


@pytest.fixture(scope="session")
def dev_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir with dev trust keys for the example trust domains."""
    state = tmp_path_factory.mktemp("state")
    ensure_dev_trust(state, DEV_DOMAINS)
    return state


@pytest.fixture
def mint(dev_state: Path) -> Callable[..., str]:
    """Mint a dev JWT-SVID: ``mint(spiffe_id, audience=..., ttl_seconds=...)``."""

    def _mint(spiffe_id: str, **kw: Any) -> str:
        return mint_svid(dev_state, spiffe_id, **kw)

    return _mint


def remote_settings(state: Path, opa_url: str, **overrides: Any) -> Settings:
    """Settings for an app that uses an OPA started by the test."""
    values: dict[str, Any] = {
        "state_dir": state,
        "opa_url": opa_url,
        "dev_trust_domains": DEV_DOMAINS,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def make_client(
    aiohttp_client: Any, dev_state: Path
) -> AsyncIterator[ClientFactory]:
    """Start the app against a given OPA URL (plus settings overrides); return its client."""

    async def _make(opa_url: str, **overrides: Any) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(
            create_app(remote_settings(dev_state, opa_url, **overrides))
        )
        return client

    yield _make


@pytest.fixture
async def client(make_client: ClientFactory, shared_opa: OPAProcess) -> TestClient[Any, Any]:
    """The app, on the session's real OPA."""
    return await make_client(shared_opa.url)
