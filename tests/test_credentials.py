"""Minting, introspection, revocation, agent lifecycle and key rotation, on the service
object itself with a controlled clock (the HTTP surface is tests/test_credentials_api.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from pdp.config import Settings
from pdp.credentials import CredentialService
from pdp.identity import Identity
from pdp.target import CredentialError, verify_credential

T0 = 1_800_000_000.0
BOT = "spiffe://acme.example/agents/support-bot"
ADMIN = "admin-token-for-tests-0123456789"

REQUEST: dict[str, Any] = {
    "agent": {"on_behalf_of": {"subject": "user:alice@acme.example", "tenant": "acme"}},
    "tenant": "acme",
    "task": {"id": "T-42", "purpose": "triage support tickets"},
    "action": {"type": "tool.call", "name": "jira.search_issues", "operation": "read"},
    "destination": {"type": "tool", "name": "jira"},
    "data": {"sensitivity": "confidential"},
}
ALLOW = {"allow": True, "obligations": {"credential": {"ttl_seconds": 120}}}


def identity(spiffe_id: str = BOT) -> Identity:
    domain, *path = spiffe_id.removeprefix("spiffe://").split("/")
    return Identity(authenticated=True, spiffe_id=spiffe_id, trust_domain=domain, path=tuple(path))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


Starter = Callable[..., Awaitable[CredentialService]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def start(tmp_path: Path, clock: Clock) -> AsyncIterator[Starter]:
    """Start a CredentialService on a state dir (default: tmp_path/state) and the clock."""
    started: list[CredentialService] = []

    async def _start(state: Path | None = None, **overrides: Any) -> CredentialService:
        values: dict[str, Any] = {
            "state_dir": state or tmp_path / "state",
            "admin_token": ADMIN,
            "store_refresh_s": 60.0,  # the tests call refresh() themselves
        }
        values.update(overrides)
        service = await CredentialService.start(Settings(**values), clock=clock)
        started.append(service)
        return service

    yield _start
    for service in started:
        if service.store is not None:
            await service.close()


async def stop(service: CredentialService) -> None:
    await service.close()
    service.store = None  # type: ignore[assignment]  # closed: the fixture skips it


def mint(service: CredentialService, response: dict[str, Any] = ALLOW, **request: Any) -> str:
    credential = service.after_decision("d-1", {**REQUEST, **request}, identity(), response)
    assert credential is not None
    return credential.token


def jwks_keys(service: CredentialService) -> dict[str, Any]:
    return {k["kid"]: k for k in json.loads(service.keyring.jwks)["keys"]}


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


# --------------------------------------------------------------------------- minting


async def test_minted_credential_verifies_with_the_published_jwks(start: Starter) -> None:
    service = await start()
    token = mint(service)

    header, _ = unverified(token)
    jwk = jwks_keys(service)[header["kid"]]
    claims = jwt.decode(
        token,
        key=jwt.PyJWK(jwk).key,
        algorithms=["ES256"],
        audience="jira",
        issuer="agent-pdp",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )

    assert header == {"alg": "ES256", "kid": service.keyring.current.kid, "typ": "txn+jwt"}
    assert (jwk["use"], jwk["alg"], jwk["kty"], jwk["crv"]) == ("sig", "ES256", "EC", "P-256")
    assert claims["sub"] == BOT


async def test_credential_claims_name_exactly_the_approved_action(start: Starter) -> None:
    service = await start()

    _, claims = unverified(mint(service))

    jti = claims.pop("jti")
    assert len(base64.urlsafe_b64decode(jti + "==")) == 16  # 128 random bits
    assert claims == {
        "iss": "agent-pdp",
        "sub": BOT,
        "aud": "jira",
        "iat": int(T0),
        "nbf": int(T0),
        "exp": int(T0) + 120,
        "scope": "tool.call:jira.search_issues:read",
        "tenant": "acme",
        "txn": "T-42",
        "req_wl": BOT,
        "tctx": {
            "decision_id": "d-1",
            "action": {"type": "tool.call", "name": "jira.search_issues", "operation": "read"},
            "destination": {"type": "tool", "name": "jira"},
            "sensitivity": "confidential",
        },
        "act": {"sub": "user:alice@acme.example", "tenant": "acme"},
    }


async def test_optional_claims_follow_the_request_and_obligations(start: Starter) -> None:
    service = await start(issuer="https://pdp.acme.example")
    response = {
        "allow": True,
        "obligations": {"credential": {"ttl_seconds": 30}, "recheck_at_target": True},
    }
    bare = {k: v for k, v in REQUEST.items() if k not in {"agent", "task", "data"}}
    bare["action"] = {"type": "model.invoke", "name": "internal-llm"}
    credential = service.after_decision("d-7", bare, identity(), response)
    assert credential is not None

    _, claims = unverified(credential.token)

    assert (claims["iss"], claims["txn"], claims["scope"]) == (
        "https://pdp.acme.example",
        "d-7",
        "model.invoke:internal-llm:",
    )
    # Unlabelled data is recorded as the PDP treated it: restricted (secure defaults).
    assert (claims["recheck_at_target"], claims["tctx"]["sensitivity"]) == (True, "restricted")
    assert "act" not in claims


@pytest.mark.parametrize(
    ("obligation", "settings", "want_ttl", "want_aud"),
    [
        ({"ttl_seconds": 120}, {}, 120, "jira"),
        ({"ttl_seconds": 900}, {}, 300, "jira"),
        ({"ttl_seconds": 120}, {"credential_max_ttl_s": 90}, 90, "jira"),
        ({}, {}, 60, "jira"),
        (None, {"credential_default_ttl_s": 45}, 45, "jira"),
        ({"ttl_seconds": 30, "audience": "jira-cloud"}, {}, 30, "jira-cloud"),
    ],
    ids=["policy", "capped", "cap-configured", "default", "default-configured", "audience"],
)
async def test_lifetime_and_audience_come_from_policy_within_the_cap(
    start: Starter,
    obligation: dict[str, Any] | None,
    settings: dict[str, Any],
    want_ttl: int,
    want_aud: str,
) -> None:
    service = await start(**settings)
    obligations = {} if obligation is None else {"credential": obligation}

    credential = service.after_decision(
        "d", REQUEST, identity(), {"allow": True, "obligations": obligations}
    )

    assert credential is not None
    assert (credential.expires_in, credential.audience) == (want_ttl, want_aud)
    assert unverified(credential.token)[1]["exp"] == int(T0) + want_ttl
    assert credential.response() == {
        "token": credential.token,
        "token_type": "Bearer",
        "expires_in": want_ttl,
        "audience": want_aud,
        "scope": "tool.call:jira.search_issues:read",
        "jti": credential.jti,
    }
    assert credential.record() == {
        "jti": credential.jti,
        "aud": want_aud,
        "scope": "tool.call:jira.search_issues:read",
        "exp": int(T0) + want_ttl,
    }


async def test_every_credential_gets_its_own_jti(start: Starter) -> None:
    service = await start()

    jtis = {unverified(mint(service))[1]["jti"] for _ in range(50)}

    assert len(jtis) == 50


@pytest.mark.parametrize(
    ("response", "who"),
    [
        ({"allow": False, "obligations": {}}, identity()),
        (ALLOW, Identity.failure("authn.token_missing", "no token")),
    ],
    ids=["deny", "unauthenticated"],
)
async def test_nothing_is_minted_on_deny_or_without_identity(
    start: Starter, response: dict[str, Any], who: Identity
) -> None:
    service = await start()

    assert service.after_decision("d", REQUEST, who, response) is None


async def test_a_disabled_agent_gets_no_credential_even_from_an_allow(start: Starter) -> None:
    service = await start()
    await service.agents.set_status(BOT, "disabled", "offboarded")

    assert service.agent_status(identity()) == "disabled"
    assert service.after_decision("d", REQUEST, identity(), ALLOW) is None


async def test_agent_status_is_none_without_an_authenticated_agent(start: Starter) -> None:
    service = await start()

    assert service.agent_status(Identity.failure("authn.expired", "x")) is None
    assert service.agent_status(identity()) == "active"


# --------------------------------------------------------------------------- introspection


async def test_an_active_credential_introspects_with_its_claims(start: Starter) -> None:
    service = await start()
    token = mint(service)
    claims = unverified(token)[1]

    answer = await service.introspect(token)

    assert answer == {"active": True, "token_type": "Bearer", **claims}


async def test_introspection_returns_every_optional_claim_a_credential_carries(
    start: Starter,
) -> None:
    service = await start()
    response = {
        "allow": True,
        "obligations": {"credential": {"ttl_seconds": 120}, "recheck_at_target": True},
    }
    issued = service.after_decision("d-1", REQUEST, identity(), response, approval_id="apr-1")
    assert issued is not None
    claims = unverified(issued.token)[1]
    assert {"act", "recheck_at_target", "approval_id", "tctx", "req_wl"} <= claims.keys()

    assert await service.introspect(issued.token) == {
        "active": True,
        "token_type": "Bearer",
        **claims,
    }


def tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "tool.call:jira.delete_project:delete"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def test_expired_forged_foreign_and_junk_credentials_are_inactive(
    start: Starter, clock: Clock, tmp_path: Path
) -> None:
    service = await start()
    other = await start(tmp_path / "other", store_url=f"sqlite://{tmp_path / 'other.db'}")
    token = mint(service)
    from tests.identity_helpers import claims as svid_claims
    from tests.identity_helpers import ec_key, sign

    foreign = mint(other)  # signed by a key this PDP never published
    svid = sign(ec_key("k1"), svid_claims(sub=BOT))  # a JWT-SVID, not a credential

    answers = [await service.introspect(t) for t in (tamper(token), foreign, svid, "junk", "")]
    clock.now = T0 + 120  # exp: no leeway at the issuer
    answers.append(await service.introspect(token))

    assert answers == [{"active": False}] * 6


async def test_a_revoked_credential_is_inactive_at_once(start: Starter) -> None:
    service = await start()
    token, other = mint(service), mint(service)

    assert await service.revoke(token) is True

    assert await service.introspect(token) == {"active": False}
    assert (await service.introspect(other))["active"] is True


async def test_revoking_a_token_that_is_not_ours_stores_nothing(start: Starter) -> None:
    service = await start()
    forged = tamper(mint(service))

    assert await service.revoke(forged) is False
    assert await service.revoke("not-a-token") is False


async def test_disable_makes_earlier_credentials_inactive_and_enable_does_not_revive_them(
    start: Starter, clock: Clock
) -> None:
    service = await start()
    before = mint(service)

    await service.agents.set_status(BOT, "disabled", "compromised")
    disabled_answer = await service.introspect(before)
    clock.now += 5
    await service.agents.set_status(BOT, "active", "cleaned up")
    clock.now += 1
    after = mint(service)

    assert disabled_answer == {"active": False}
    assert await service.introspect(before) == {"active": False}
    assert (await service.introspect(after))["active"] is True


async def test_revocation_and_disable_survive_a_restart(start: Starter, tmp_path: Path) -> None:
    first = await start()
    revoked, kept = mint(first), mint(first)
    await first.revoke(revoked)
    await first.agents.set_status(
        "spiffe://acme.example/agents/finance-analyst", "disabled", "left"
    )
    kid = first.keyring.current.kid
    await stop(first)

    second = await start()

    assert second.keyring.current.kid == kid  # the same key, loaded from the state dir
    assert await second.introspect(revoked) == {"active": False}
    assert (await second.introspect(kept))["active"] is True
    assert second.agent_status(identity("spiffe://acme.example/agents/finance-analyst")) == (
        "disabled"
    )


# --------------------------------------------------------------------------- keys


async def test_rotation_keeps_the_old_key_until_its_last_credential_expired(
    start: Starter, clock: Clock, tmp_path: Path
) -> None:
    service = await start(clock_skew_seconds=30)
    old_kid = service.keyring.current.kid
    in_flight = mint(service)  # exp T0 + 120
    clock.now = T0 + 10

    await service.keyring.rotate()
    new_kid = service.keyring.current.kid
    fresh = mint(service)

    assert new_kid != old_kid and unverified(fresh)[0]["kid"] == new_kid
    assert set(jwks_keys(service)) == {old_kid, new_kid}
    for token in (in_flight, fresh):
        verify_credential(
            token,
            service.keyring.public_key,
            issuer="agent-pdp",
            audience="jira",
            scope="tool.call:jira.search_issues:read",
            now=T0 + 100,
        )
    [retired] = [r for r in service.keyring.records() if r.kid == old_kid]
    assert (retired.state, retired.retired_at, retired.drop_after) == (
        "retired",
        T0 + 10,
        T0 + 120 + 30,  # the last exp it signed, plus the clock leeway targets allow
    )

    clock.now = T0 + 149
    await service.refresh()
    assert set(jwks_keys(service)) == {old_kid, new_kid}

    clock.now = T0 + 150
    await service.refresh()
    assert set(jwks_keys(service)) == {new_kid}
    assert not (tmp_path / "state" / "keys" / f"{old_kid}.pem").exists()
    assert await service.introspect(in_flight) == {"active": False}


async def test_a_rotation_asked_on_one_replica_is_followed_by_the_others(
    start: Starter, tmp_path: Path
) -> None:
    shared = f"sqlite://{tmp_path / 'shared.sqlite3'}"
    a = await start(tmp_path / "a", store_url=shared)
    b = await start(tmp_path / "b", store_url=shared)
    await a.refresh()
    b_before = b.keyring.current.kid
    token_a = mint(a)

    await a.keyring.rotate()
    await b.refresh()
    await a.refresh()  # to see b's new key

    assert b.keyring.current.kid != b_before
    assert a.keyring.node != b.keyring.node
    assert set(jwks_keys(a)) == set(jwks_keys(b))
    assert len(jwks_keys(b)) == 4  # two replicas, each with a current and a retired key
    assert (await b.introspect(token_a))["active"] is True


async def test_key_files_and_the_admin_token_are_private(tmp_path: Path, start: Starter) -> None:
    service = await start(admin_token=None)
    state = tmp_path / "state"

    modes = {
        "keys dir": (state / "keys").stat().st_mode & 0o777,
        "key": (state / "keys" / f"{service.keyring.current.kid}.pem").stat().st_mode & 0o777,
        "admin-token": (state / "admin-token").stat().st_mode & 0o777,
    }

    assert modes == {"keys dir": 0o700, "key": 0o600, "admin-token": 0o600}
    assert len((state / "admin-token").read_text().strip()) >= 32


async def test_a_verifier_refuses_a_credential_for_another_issuer(start: Starter) -> None:
    service = await start(issuer="pdp-a")
    token = mint(service)

    with pytest.raises(CredentialError) as info:
        verify_credential(
            token, service.keyring.public_key, issuer="pdp-b", audience=None, scope=None, now=T0
        )

    assert info.value.code == "wrong_issuer"


# --------------------------------------------------------------------------- the service's edges


async def test_the_decision_is_counted_with_its_tool_whether_or_not_a_credential_is_minted(
    start: Starter,
) -> None:
    service = await start()

    assert service.after_decision("d-1", REQUEST, identity(), ALLOW, mint=False) is None
    issued = service.after_decision("d-2", REQUEST, identity(), ALLOW, approval_id="apr-1")
    assert issued is not None
    assert unverified(issued.token)[1]["approval_id"] == "apr-1"
    no_name = {**REQUEST, "action": {"type": "tool.list"}}
    assert service.after_decision("d-3", no_name, identity(), ALLOW, mint=False) is None
    assert service.after_decision("d-4", REQUEST, identity(), {"allow": "true"}) is None

    activity = service.agents._pending[BOT]  # only True allows; a deny counts no tool
    assert (activity.allowed, activity.denied) == (3, 1)
    assert activity.tools == {"jira.search_issues": 2, "tool.list": 1}
    assert activity.credentials == [(issued.jti, issued.exp)]


async def test_an_expired_credential_is_revocable_only_within_the_clock_skew(
    start: Starter, clock: Clock
) -> None:
    service = await start(clock_skew_seconds=30)
    late, too_late = mint(service), mint(service)  # exp = T0 + 120
    clock.now = T0 + 120 + 29
    assert await service.revoke(late) is True
    clock.now = T0 + 120 + 30
    assert await service.revoke(too_late) is False
    clock.now = T0
    assert await service.introspect(late) == {"active": False}
    assert (await service.introspect(too_late))["active"] is True  # nothing was stored


async def test_a_revocation_is_logged_by_jti_and_subject_never_the_token(
    start: Starter, caplog: pytest.LogCaptureFixture
) -> None:
    service = await start()
    token = mint(service)
    caplog.set_level("INFO", logger="pdp.credentials")

    assert await service.revoke(token) is True

    jti = unverified(token)[1]["jti"]
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("pdp.credentials", f"revoked credential jti={jti} sub={BOT}")
    ]
    assert token not in caplog.text


async def test_the_default_store_is_sqlite_in_the_state_dir(
    start: Starter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pdp.credentials")
    service = await start()

    assert "credential store: sqlite" in [r.getMessage() for r in caplog.records]

    assert service.store.kind == "sqlite"
    assert (tmp_path / "state" / "pdp.sqlite3").is_file()
    assert service.last_refresh == T0
    assert service.issuer == service.settings.issuer


async def test_mint_signs_without_the_status_check_or_counting(start: Starter) -> None:
    service = await start()
    await service.agents.set_status(BOT, "disabled", "offboarded")

    issued = service.mint("d-1", REQUEST, identity(), {"credential": {"ttl_seconds": 120}}, None)

    assert unverified(issued.token)[1]["sub"] == BOT
    assert BOT not in service.agents._pending


async def test_a_failed_publish_or_flush_is_logged_and_the_rest_still_happens(
    start: Starter, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pdp.errors import StoreError

    service = await start()
    heard: list[str] = []
    service.listeners.append(heard.append)

    async def down(*args: Any) -> None:
        raise StoreError("store down")

    monkeypatch.setattr(service.store, "publish", down)
    await service.announce("keys")
    assert heard == ["keys"]  # this replica heard it anyway

    service.after_decision("d-1", REQUEST, identity(), ALLOW)  # pending activity to write
    monkeypatch.setattr(service.agents, "flush", down)
    closed: list[bool] = []
    real_close = service.store.close

    async def close() -> None:
        closed.append(True)
        await real_close()

    monkeypatch.setattr(service.store, "close", close)
    await stop(service)

    assert closed == [True]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "could not announce 'keys' to the other replicas: store down"),
        ("WARNING", "could not write agent activity at shutdown: store down"),
    ]


async def test_the_service_checks_the_configured_admin_introspection_and_approver_tokens(
    start: Starter,
) -> None:
    from aiohttp.test_utils import make_mocked_request

    from pdp.errors import ForbiddenError

    introspector, approver = "introspection-token-0123456789", "approver-token-0123456789"
    service = await start(introspection_token=introspector, approver_token=approver)

    def bearer(token: str) -> Any:
        return make_mocked_request("POST", "/", headers={"Authorization": f"Bearer {token}"})

    service.auth.check(bearer(ADMIN))
    service.auth.check(bearer(introspector), introspection=True)
    with pytest.raises(ForbiddenError):
        service.auth.check(bearer(introspector))
    assert service.auth.check_approver(bearer(approver)) == "approver"
    assert service.auth.check_approver(bearer(ADMIN)) == "admin"
    with pytest.raises(ForbiddenError):
        service.auth.check_approver(bearer(introspector))


async def test_a_key_another_replica_just_created_is_read_once_before_judging(
    start: Starter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = f"sqlite://{tmp_path / 'shared.sqlite3'}"
    a = await start(tmp_path / "a", store_url=shared)
    b = await start(tmp_path / "b", store_url=shared)  # a has not refreshed: b's key unknown
    reloads: list[bool] = []
    real_reload = a.keyring.reload

    async def counted() -> None:
        reloads.append(True)
        await real_reload()

    monkeypatch.setattr(a.keyring, "reload", counted)
    token_b = mint(b)

    assert (await a.introspect(token_b))["active"] is True
    assert reloads == [True]  # the key set was read again, once
    assert (await a.introspect(tamper(mint(a))))["active"] is False
    assert reloads == [True]  # a bad signature under a known key: nothing re-read
    foreign = mint(await start(tmp_path / "c", store_url=f"sqlite://{tmp_path / 'c.db'}"))
    assert await a.introspect(foreign) == {"active": False}
    assert reloads == [True, True]  # an unknown key: read once more, then judged
    assert await a.revoke(foreign) is False
    assert reloads == [True, True, True]


@pytest.mark.parametrize(
    "who",
    [
        Identity(authenticated=False, spiffe_id=BOT, error_code="authn.expired"),
        Identity(authenticated=True, spiffe_id=None),
    ],
    ids=["unauthenticated-with-an-id", "authenticated-without-an-id"],
)
async def test_an_identity_needs_both_authentication_and_an_id_to_mint_or_count(
    start: Starter, who: Identity
) -> None:
    service = await start()

    assert service.after_decision("d-1", REQUEST, who, ALLOW) is None
    assert service.agents._pending == {}
