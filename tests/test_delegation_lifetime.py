"""Delegation assertions are bounded like JWT-SVIDs (outside review, red team).

A delegation assertion is signed by the same trust-domain keys as a JWT-SVID, yet its
lifetime was never bounded: one minted for ten years (or issued an hour ahead) verified,
and a chain that leaked once could be replayed for its whole life. The SVID bounds apply to
it too: ``exp - iat`` (or ``exp - now``) at most ``PDP_SVID_MAX_LIFETIME_S`` (24 h), and an
``iat`` beyond the clock skew is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pdp.delegation import DelegationVerifier
from pdp.devtrust import mint_delegation
from pdp.identity import TrustBundles
from tests.conftest import DEV_DOMAINS, ClientFactory
from tests.opa_process import OPAProcess
from tests.test_sessions import BOT, codes, decide, github_search

YEAR = 365 * 86400


def verifier(dev_state: Path, **kw: Any) -> DelegationVerifier:
    files = {d: dev_state / "dev-trust" / d / "bundle.json" for d in DEV_DOMAINS}
    return DelegationVerifier(TrustBundles.from_files(files), "agent-pdp", **kw)


@pytest.mark.parametrize(
    ("ttl", "ahead", "code"),
    [
        (10 * YEAR, 0, "delegation.lifetime_too_long"),
        (86400 + 120, 0, "delegation.lifetime_too_long"),
        (300, 3600, "delegation.issued_in_future"),
    ],
    ids=["ten-years", "a-day-and-two-minutes", "issued-an-hour-ahead"],
)
def test_a_delegation_past_the_svid_bounds_is_refused(
    dev_state: Path, ttl: int, ahead: int, code: str
) -> None:
    assertion = mint_delegation(
        dev_state, "acme.example", "user:alice@acme.example", [BOT], tenant="acme",
        ttl_seconds=ttl, clock=lambda: time.time() + ahead,
    )  # fmt: skip
    chain = verifier(dev_state).chain(assertion)
    assert (chain["verified"], chain["error"]["code"]) == (False, code)


def test_a_delegation_within_the_bounds_verifies_and_the_bound_is_configurable(
    dev_state: Path,
) -> None:
    day = mint_delegation(
        dev_state, "acme.example", "user:alice@acme.example", [BOT], tenant="acme",
        ttl_seconds=86400,
    )  # fmt: skip
    assert verifier(dev_state).chain(day)["verified"] is True
    chain = verifier(dev_state, max_lifetime_s=3600).chain(day)
    assert chain["error"]["code"] == "delegation.lifetime_too_long"


@pytest.fixture
async def client(
    make_client: ClientFactory, shared_opa: OPAProcess, tmp_path: Path
) -> TestClient[Any, Any]:
    return await make_client(shared_opa.url, opa_timeout_ms=5000, svid_max_lifetime_s=7200)


async def test_a_ten_year_delegation_is_denied_end_to_end(
    client: TestClient[Any, Any], mint: Callable[..., str], dev_state: Path
) -> None:
    within = mint_delegation(
        dev_state, "acme.example", "user:alice@acme.example", [BOT], tenant="acme",
        ttl_seconds=3600,
    )  # fmt: skip
    beyond = mint_delegation(
        dev_state, "acme.example", "user:alice@acme.example", [BOT], tenant="acme",
        ttl_seconds=10 * YEAR,
    )  # fmt: skip
    for assertion, allowed in ((within, True), (beyond, False)):
        body = github_search(mint(BOT), "T-long")
        body["agent"]["delegation"] = assertion
        answer = await decide(client, body)
        assert answer["allow"] is allowed, answer
    assert codes(answer) == ["delegation_invalid"]
