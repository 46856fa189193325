"""Trust bundles follow rotation and SVID lifetimes are bounded (issue 8, samples 6, 7)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from pdp.identity import SVIDVerifier, TrustBundles
from pdp.state import DECISIONS as DECISION_SERVICE
from pdp.state import VERIFIER
from pdp.trustwatch import BundleWatcher
from tests.boundary_helpers import DECISIONS, allow_request, dev_signing_key, sign_svid
from tests.credential_helpers import SUPPORT_BOT, Client, Factory, make_pdp_fixture  # noqa: F401
from tests.identity_helpers import SPIFFE_ID as BOT
from tests.identity_helpers import FakeClock, bundle_doc, claims, ec_key


def jwks_of(key: Any, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"keys": [{**jwk, "kid": kid, "use": "jwt-svid"}], "spiffe_sequence": 1}


def write_atomically(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


async def codes(pdp: Client, token: str) -> tuple[bool, list[str]]:
    resp = await pdp.post(DECISIONS, json=allow_request(token))
    assert resp.status == 200
    body = await resp.json()
    return body["allow"], [r["code"] for r in body["reasons"]]


async def until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "not reloaded in time"
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- sample 6


async def test_sample_6_a_replaced_bundle_file_is_followed_without_restart(
    make_pdp: Factory, dev_state: Path, tmp_path: Path
) -> None:
    old_key, old_kid = dev_signing_key(dev_state)
    new_key = ec.generate_private_key(ec.SECP256R1())
    bundle = tmp_path / "acme-bundle.json"
    write_atomically(bundle, jwks_of(old_key, old_kid))
    pdp = await make_pdp(trust_bundles={"acme.example": bundle}, trust_bundle_refresh_s=0.05)
    old_token = sign_svid(old_key, old_kid)
    new_token = sign_svid(new_key, "k-new")
    assert await codes(pdp, old_token) == (True, [])  # verified, and now cached
    assert (await codes(pdp, new_token))[1] == ["authn.unknown_kid"]

    write_atomically(bundle, jwks_of(new_key, "k-new"))  # the rotation: only the new key

    async def rotated() -> bool:
        return (await codes(pdp, new_token))[0] is True

    await until(rotated)
    # the removed key no longer verifies, even for a token verified (and cached) before
    assert await codes(pdp, old_token) == (False, ["authn.unknown_kid"])
    # ...and delegation assertions are verified against the new bundles too
    assert isinstance(pdp.server, TestServer)
    app = pdp.server.app
    delegation = app[DECISION_SERVICE].delegation
    assert delegation is not None and delegation.bundles is app[VERIFIER].bundles


async def test_a_bundle_file_that_no_longer_parses_keeps_the_last_good_bundle(
    tmp_path: Path,
) -> None:
    key = ec_key("k1")
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle_doc(key.public_jwk())))
    clock = FakeClock()
    verifier = SVIDVerifier(
        TrustBundles.from_files({"acme.example": path}), "agent-pdp", clock=clock
    )
    watcher = BundleWatcher(verifier, {"acme.example": path}, interval_s=0)
    token = _sign(key, claims())
    assert verifier.verify(token).authenticated

    path.write_text('{"keys": [')  # half-written during a rotation

    assert watcher.check() == set()
    assert (watcher.failures, verifier.verify(token).authenticated) == (1, True)
    path.write_text(json.dumps(bundle_doc(ec_key("k2").public_jwk())))
    assert watcher.check() == {"acme.example"}
    assert verifier.verify(token).error_code == "authn.unknown_kid"


def test_touching_a_bundle_without_changing_it_changes_nothing(tmp_path: Path) -> None:
    key = ec_key("k1")
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle_doc(key.public_jwk())))
    verifier = SVIDVerifier(TrustBundles.from_files({"acme.example": path}), "agent-pdp")
    watcher = BundleWatcher(verifier, {"acme.example": path}, interval_s=0)

    os.utime(path, (time.time() + 5, time.time() + 5))

    assert (watcher.check(), watcher.reloads) == (set(), 0)


def _sign(key: Any, body: dict[str, Any]) -> str:
    import jwt

    return jwt.encode(body, key.private_key, algorithm="ES256", headers={"kid": key.kid})


# --------------------------------------------------------------------------- sample 7

YEAR = 365 * 86400


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"exp": "now+100y"}, "authn.lifetime_too_long"),
        ({"iat": "now+1y", "exp": "now+1y+300"}, "authn.issued_in_future"),
        ({"iat": None, "exp": "now+2d"}, "authn.lifetime_too_long"),  # no iat: exp - now
        ({"iat": "now-2d", "exp": "now+300"}, "authn.lifetime_too_long"),  # 2 days long
        ({"exp": 2**53}, "authn.malformed"),
        ({"exp": 2**70}, "authn.malformed"),
        ({"iat": -(2**60)}, "authn.malformed"),
    ],
)
async def test_sample_7_a_token_past_the_lifetime_bound_is_an_authn_deny(
    make_pdp: Factory, dev_state: Path, change: dict[str, Any], code: str
) -> None:
    pdp = await make_pdp()
    key, kid = dev_signing_key(dev_state)
    now = int(time.time())

    def at(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        total = now
        for part in value.removeprefix("now").replace("-", "+-").split("+"):
            if not part:
                continue
            unit = {"y": YEAR, "d": 86400}.get(part[-1], 1)
            total += int(part.rstrip("yd")) * unit
        return total

    token = sign_svid(key, kid, **{k: at(v) for k, v in change.items()})

    assert await codes(pdp, token) == (False, [code])


async def test_the_lifetime_bound_is_configurable(make_pdp: Factory, dev_state: Path) -> None:
    pdp = await make_pdp(svid_max_lifetime_s=600)
    key, kid = dev_signing_key(dev_state)
    now = int(time.time())

    assert (await codes(pdp, sign_svid(key, kid, exp=now + 500)))[0] is True
    assert await codes(pdp, sign_svid(key, kid, exp=now + 900)) == (
        False,
        ["authn.lifetime_too_long"],
    )


def test_iat_within_the_clock_skew_is_accepted() -> None:
    key = ec_key("k1")
    clock = FakeClock()
    verifier = SVIDVerifier(
        TrustBundles.from_documents({"acme.example": bundle_doc(key.public_jwk())}),
        "agent-pdp",
        clock=clock,
        leeway_seconds=30,
    )
    now = int(clock())

    early = verifier.verify(_sign(key, claims(iat=now + 20, exp=now + 300)))
    late = verifier.verify(_sign(key, claims(iat=now + 40, exp=now + 300)))

    assert (early.authenticated, late.error_code) == (True, "authn.issued_in_future")
    assert BOT.startswith("spiffe://")
