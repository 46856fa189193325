"""Caller (PEP) authentication on the real listener (pdp.server, pdp.callers): mTLS with
certificates generated at test time, and hashed caller keys. Missing or wrong caller
credentials are a 401 before any agent token is looked at; the caller's identity is in the
record and in input.pep."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from pdpctl.main import cli

from pdp import server
from pdp.callers import CallerKeys, hash_key, new_key
from pdp.config import ConfigError, Settings
from pdp.state import METRICS
from tests.boundary_helpers import Serve, allow_request, decision_records, serve_fixture  # noqa: F401  (fixture)
from tests.credential_helpers import ADMIN, SUPPORT_BOT
from tests.http_helpers import metric
from tests.tls_helpers import CA, client_context, write_json, write_pair

GATEWAY = "spiffe://gateways.example/gw-1"
UNAUTHENTICATED = {
    "allow": False,
    "error": {
        "code": "caller_unauthenticated",
        "message": "the caller must authenticate with a client certificate",
    },
}
KEY_ONLY = {
    "allow": False,
    "error": {
        "code": "caller_unauthenticated",
        "message": "the caller must authenticate with Authorization: Bearer <caller key>",
    },
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    ca, other = CA.new("gateways CA"), CA.new("someone else's CA")
    (d / "ca.pem").write_bytes(ca.pem)
    return {
        "dir": d,
        "ca": ca,
        "ca_file": d / "ca.pem",
        "bundle_file": write_json(d / "bundle.json", ca.spiffe_bundle()),
        "server": write_pair(d, "server", ca.issue("pdp", server=True)),
        "gateway": write_pair(d, "gateway", ca.issue("gw-1", uris=(GATEWAY,))),
        "foreign_domain": write_pair(
            d, "foreign", ca.issue("gw-x", uris=("spiffe://elsewhere.example/gw-x",))
        ),
        "dns_client": write_pair(d, "dns", ca.issue("gw-dns", dns=("gw.acme.internal",))),
        "other_ca_client": write_pair(d, "other", other.issue("gw-1", uris=(GATEWAY,))),
    }


async def post(
    url: str, body: Any, *, ssl_context: ssl.SSLContext | None = None, key: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context is not None else None
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(url + "/v1/decisions", json=body, headers=headers) as resp:
            return resp.status, await resp.json()


def audit(tmp_path: Path) -> Path:
    return tmp_path / "state" / "audit"


# --------------------------------------------------------------------------- mTLS


def mtls(pki: dict[str, Any], **more: Any) -> dict[str, Any]:
    cert, key = pki["server"]
    return {"tls_cert": cert, "tls_key": key, "client_ca": pki["ca_file"], **more}


async def test_mtls_without_a_client_certificate_is_a_401_before_the_token_is_looked_at(
    serve: Serve, pki: dict[str, Any], mint: Callable[..., str], tmp_path: Path
) -> None:
    url, started = await serve(**mtls(pki))

    status, body = await post(
        url, allow_request(mint(SUPPORT_BOT)), ssl_context=client_context(pki["ca"], pki["dir"])
    )

    assert (status, body) == (401, UNAUTHENTICATED)
    assert decision_records(audit(tmp_path)) == []  # nothing decided, nothing minted
    text = _metrics(started)
    assert metric(text, "pdp_authn_failures_total") == 0


async def test_mtls_with_a_certificate_of_another_ca_gets_no_decision(
    serve: Serve, pki: dict[str, Any], mint: Callable[..., str], tmp_path: Path
) -> None:
    url, _ = await serve(**mtls(pki))
    context = client_context(pki["ca"], pki["dir"], pki["other_ca_client"])

    # The TLS layer verifies a presented certificate itself: one that does not chain to
    # --client-ca fails the handshake (Python's ssl offers no hook to answer 401 instead).
    with pytest.raises(aiohttp.ClientError):
        await post(url, allow_request(mint(SUPPORT_BOT)), ssl_context=context)

    assert decision_records(audit(tmp_path)) == []


async def test_mtls_caller_identity_is_in_the_record_and_in_input_pep(
    serve: Serve, pki: dict[str, Any], mint: Callable[..., str], tmp_path: Path
) -> None:
    url, _ = await serve(**mtls(pki))
    context = client_context(pki["ca"], pki["dir"], pki["gateway"])

    status, body = await post(url, allow_request(mint(SUPPORT_BOT)), ssl_context=context)

    assert (status, body["allow"]) == (200, True)
    [record] = decision_records(audit(tmp_path))
    caller = {"authenticated": True, "id": GATEWAY, "method": "mtls"}
    assert record["caller"] == caller
    assert record["input"]["pep"] == caller


async def test_a_spiffe_bundle_as_client_ca_admits_svids_of_its_trust_domain_only(
    serve: Serve, pki: dict[str, Any], mint: Callable[..., str], tmp_path: Path
) -> None:
    url, _ = await serve(
        **mtls(pki, client_ca=pki["bundle_file"], client_trust_domain="gateways.example")
    )
    request = allow_request(mint(SUPPORT_BOT))

    ok = await post(url, request, ssl_context=client_context(pki["ca"], pki["dir"], pki["gateway"]))
    foreign = await post(
        url, request, ssl_context=client_context(pki["ca"], pki["dir"], pki["foreign_domain"])
    )
    no_spiffe_id = await post(
        url, request, ssl_context=client_context(pki["ca"], pki["dir"], pki["dns_client"])
    )

    assert (ok[0], ok[1]["allow"]) == (200, True)
    assert foreign == (401, UNAUTHENTICATED)
    assert no_spiffe_id == (401, UNAUTHENTICATED)
    assert [r["caller"]["id"] for r in decision_records(audit(tmp_path))] == [GATEWAY]


async def test_a_certificate_without_spiffe_id_is_named_by_its_dns_name(
    serve: Serve, pki: dict[str, Any], mint: Callable[..., str], tmp_path: Path
) -> None:
    url, _ = await serve(**mtls(pki))
    context = client_context(pki["ca"], pki["dir"], pki["dns_client"])

    status, _ = await post(url, allow_request(mint(SUPPORT_BOT)), ssl_context=context)

    assert status == 200
    [record] = decision_records(audit(tmp_path))
    assert record["caller"] == {"authenticated": True, "id": "gw.acme.internal", "method": "mtls"}


# --------------------------------------------------------------------------- caller keys


@pytest.fixture
def keys_file(tmp_path: Path) -> tuple[Path, str]:
    key = new_key()
    path = tmp_path / "caller-keys"
    path.write_text(f"# gateways\ngw-2 {hash_key(key)}\n")
    return path, key


@pytest.mark.parametrize(
    "presented",
    [None, "wrong-key", "", "pdpk_" + "A" * 43, "x" * 1000, "Basic dXNlcjpwYXNz"],
    ids=["none", "wrong", "empty", "unknown", "huge", "basic"],
)
async def test_a_missing_or_wrong_caller_key_is_a_401(
    serve: Serve,
    keys_file: tuple[Path, str],
    mint: Callable[..., str],
    tmp_path: Path,
    presented: str | None,
) -> None:
    url, _ = await serve(caller_keys=keys_file[0])

    status, body = await post(url, allow_request(mint(SUPPORT_BOT)), key=presented)

    assert (status, body) == (401, KEY_ONLY)
    assert decision_records(audit(tmp_path)) == []


async def test_a_valid_caller_key_names_the_caller_in_the_record_and_input_pep(
    serve: Serve, keys_file: tuple[Path, str], mint: Callable[..., str], tmp_path: Path
) -> None:
    url, _ = await serve(caller_keys=keys_file[0])

    status, body = await post(url, allow_request(mint(SUPPORT_BOT)), key=keys_file[1])

    assert (status, body["allow"]) == (200, True)
    [record] = decision_records(audit(tmp_path))
    caller = {"authenticated": True, "id": "gw-2", "method": "api_key"}
    assert (record["caller"], record["input"]["pep"]) == (caller, caller)


async def test_both_methods_at_once_accept_either(
    serve: Serve,
    pki: dict[str, Any],
    keys_file: tuple[Path, str],
    mint: Callable[..., str],
    tmp_path: Path,
) -> None:
    url, _ = await serve(**mtls(pki, caller_keys=keys_file[0]))
    request = allow_request(mint(SUPPORT_BOT))
    plain = client_context(pki["ca"], pki["dir"])

    by_key = await post(url, request, ssl_context=plain, key=keys_file[1])
    by_cert = await post(
        url, request, ssl_context=client_context(pki["ca"], pki["dir"], pki["gateway"])
    )
    neither = await post(url, request, ssl_context=plain)

    assert (by_key[0], by_cert[0]) == (200, 200)
    assert neither == (
        401,
        {
            "allow": False,
            "error": {
                "code": "caller_unauthenticated",
                "message": "the caller must authenticate with a client certificate or "
                "Authorization: Bearer <caller key>",
            },
        },
    )
    assert [r["caller"]["method"] for r in decision_records(audit(tmp_path))] == [
        "api_key",
        "mtls",
    ]


async def test_public_paths_need_no_caller_and_admin_paths_keep_their_own_credential(
    serve: Serve, keys_file: tuple[Path, str]
) -> None:
    url, _ = await serve(caller_keys=keys_file[0])
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz", "/.well-known/jwks.json"):
            async with session.get(url + path) as resp:
                assert resp.status == 200, path
        async with session.get(
            url + "/v1/agents", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as resp:
            assert resp.status == 200
        async with session.get(url + "/no-such-route") as resp:  # unknown: caller first
            assert resp.status == 401


async def test_the_surface_is_checked_before_the_caller_is_asked(
    serve: Serve, keys_file: tuple[Path, str]
) -> None:
    # One middleware does both (pdp.app.error_middleware): a path this listener does not
    # serve is a JSON 404 without a caller key, never a 401 that says the path exists.
    from tests.conftest import free_port

    url, started = await serve(caller_keys=keys_file[0], admin_port=free_port())
    admin_url = f"http://127.0.0.1:{started.admin_port}"
    not_found = {"allow": False, "error": {"code": "not_found", "message": "Not Found"}}
    async with aiohttp.ClientSession() as session:
        async with session.post(admin_url + "/v1/decisions", json={}) as resp:
            assert (resp.status, await resp.json()) == (404, not_found)
        async with session.get(
            url + "/v1/agents", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as resp:
            assert (resp.status, await resp.json()) == (404, not_found)
        async with session.post(url + "/v1/decisions", json={}) as resp:
            assert (resp.status, await resp.json()) == (401, KEY_ONLY)


def test_caller_keys_file_holds_hashes_only() -> None:
    key = new_key()
    keys = CallerKeys.parse(f"gw-1 {hash_key(key)}")

    assert (keys.lookup(key), keys.lookup(key + "x"), keys.lookup("")) == ("gw-1", None, None)
    with pytest.raises(ValueError, match="the hash, never the key itself"):
        CallerKeys.parse(f"gw-1 {key}")
    with pytest.raises(ValueError, match="listed twice"):
        CallerKeys.parse(f"gw-1 {hash_key(key)}\ngw-2 {hash_key(key)}")


# --------------------------------------------------------------------------- the listener


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "pdp.acme.internal"])
def test_a_listener_beyond_loopback_needs_caller_authentication(host: str) -> None:
    with pytest.raises(ConfigError, match="needs caller authentication"):
        Settings(host=host)


def test_pdpctl_serve_refuses_a_public_address_without_caller_auth(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["serve", "--host", "0.0.0.0", "--state-dir", str(tmp_path)], env={}
    )

    assert result.exit_code == 9, result.output
    assert "a listener beyond loopback needs caller authentication" in result.output
    assert "--insecure-no-caller-auth" in result.output


def test_insecure_no_caller_auth_is_an_explicit_opt_out() -> None:
    settings = Settings(host="0.0.0.0", insecure_no_caller_auth=True)

    assert (settings.host, settings.caller_auth) == ("0.0.0.0", False)


def test_the_grpc_ext_authz_listener_follows_the_listener_rules_beyond_loopback(
    tmp_path: Path,
) -> None:
    # The gRPC listener authenticates callers as the HTTP one does (tests/test_ext_authz_
    # callers.py), so beyond loopback it needs what the HTTP listener needs, nothing less.
    keys = tmp_path / "caller-keys"
    keys.write_text(f"gw-1 {hash_key('k' * 32)}\n")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("unused")
    key.write_text("unused")
    common = {"host": "0.0.0.0", "caller_keys": keys, "tls_cert": cert, "tls_key": key}
    assert Settings(**common, ext_authz_grpc_port=9191).ext_authz_grpc_port == 9191  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs caller authentication"):
        Settings(host="0.0.0.0", ext_authz_grpc_port=9191)
    assert Settings(host="127.0.0.1", ext_authz_grpc_port=9191).ext_authz_grpc_port == 9191
    opted_out = Settings(host="0.0.0.0", insecure_no_caller_auth=True, ext_authz_grpc_port=9191)
    assert opted_out.ext_authz_grpc_port == 9191


def test_loopback_needs_no_caller_auth_the_embedded_default() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert Settings(host=host).caller_auth is False


def _metrics(started: server.Started) -> str:
    from prometheus_client import generate_latest

    return generate_latest(started.runner.app[METRICS].registry).decode()


def test_pdpctl_callers_add_prints_the_key_once_and_stores_its_hash(tmp_path: Path) -> None:
    keys_file = tmp_path / "caller-keys"

    first = CliRunner().invoke(cli, ["callers", "add", "gw-1", "--keys-file", str(keys_file)])
    second = CliRunner().invoke(cli, ["callers", "add", "gw-2", "--keys-file", str(keys_file)])
    bad = CliRunner().invoke(cli, ["callers", "add", "has space", "--keys-file", str(keys_file)])

    assert (first.exit_code, second.exit_code, bad.exit_code) == (0, 0, 9)
    key1, key2 = first.output.strip(), second.output.strip()
    text = keys_file.read_text()
    assert key1 not in text and key2 not in text
    keys = CallerKeys.load(keys_file)
    assert (keys.lookup(key1), keys.lookup(key2), len(keys)) == ("gw-1", "gw-2", 2)
    assert keys_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/access/v1/evaluation"),
        ("POST", "/access/v1/evaluations"),
        ("POST", "/access/v1/search/resource"),
        ("GET", "/ext_authz/anything"),
        ("POST", "/v1/decisions"),
    ],
)
async def test_every_front_door_needs_the_caller(
    serve: Serve, keys_file: tuple[Path, str], method: str, path: str
) -> None:
    url, _ = await serve(caller_keys=keys_file[0])
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url + path, json={}) as resp:
            assert (resp.status, await resp.json()) == (401, KEY_ONLY), path
        async with session.get(url + "/.well-known/authzen-configuration") as resp:
            assert resp.status == 200  # public metadata
