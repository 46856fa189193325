"""Caller (gateway) authentication on the ext_authz front doors, with the HTTP doors' rules
and registry (pdp.callers): the gRPC listener over real TLS with certificates generated at
test time and a real client stub from the generated Envoy API packages, caller keys in gRPC
metadata, and the caller named in input.pep and the audit record by both ext_authz modes.
An agent never acts as its own gateway."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp.test_utils import TestClient
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.rpc import code_pb2
from multidict import CIMultiDict

from pdp.adapters.ext_authz_grpc import GRPC_PORT
from pdp.app import create_app
from pdp.callers import hash_key, new_key
from pdp.config import Settings

from .boundary_helpers import Serve, allow_request, decision_records, serve_fixture  # noqa: F401
from .conftest import DEV_DOMAINS, ROOT
from .credential_helpers import ADMIN, INTROSPECTOR
from .opa_process import OPAProcess
from .test_ext_authz import (
    FINANCE,
    SEARCH,
    SUPPORT_BOT,
    assert_credential,
    bearer,
    check_request,
)
from .tls_helpers import CA, write_pair

Client = TestClient[Any, Any]
ROUTES = ROOT / "examples" / "gateways" / "routes.yaml"
GATEWAY = "spiffe://gateways.example/envoy-1"
#: The agent's X.509-SVID, issued by the same CA as the gateways' (one SPIFFE issuer).
AGENT_X509 = SUPPORT_BOT

pytestmark = pytest.mark.opa


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    ca, other = CA.new("issuer CA"), CA.new("someone else's CA")
    (d / "ca.pem").write_bytes(ca.pem)
    return {
        "ca": ca,
        "ca_file": d / "ca.pem",
        "server": write_pair(d, "server", ca.issue("pdp", server=True)),
        "gateway": ca.issue("envoy-1", uris=(GATEWAY,)),
        "agent": ca.issue("support-bot", uris=(AGENT_X509,)),
        "other_ca": other.issue("envoy-1", uris=(GATEWAY,)),
    }


@pytest.fixture
async def make_pdp(
    aiohttp_client: Any, dev_state: Path, tmp_path: Path, shared_opa: OPAProcess
) -> AsyncIterator[Callable[..., Any]]:
    async def _make(**overrides: Any) -> Client:
        values: dict[str, Any] = {
            "state_dir": tmp_path / "state",
            "opa_url": shared_opa.url,
            "opa_timeout_ms": 5000,
            "dev_trust_domains": (),
            "trust_bundles": {d: dev_state / "dev-trust" / d / "bundle.json" for d in DEV_DOMAINS},
            "admin_token": ADMIN,
            "introspection_token": INTROSPECTOR,
            "ext_authz_grpc_port": 0,
            "ext_authz_routes": ROUTES,
        }
        values.update(overrides)
        client: Client = await aiohttp_client(create_app(Settings(**values)))
        return client

    yield _make


def mtls(pki: dict[str, Any], **more: Any) -> dict[str, Any]:
    cert, key = pki["server"]
    return {"tls_cert": cert, "tls_key": key, "client_ca": pki["ca_file"], **more}


def records(tmp_path: Path) -> list[dict[str, Any]]:
    return decision_records(tmp_path / "state" / "audit")


async def tls_check(
    pdp: Client,
    pki: dict[str, Any],
    client: tuple[bytes, bytes] | None,
    headers: dict[str, str],
    metadata: tuple[tuple[str, str], ...] = (),
) -> Any:
    """One Check over TLS trusting the issuer CA, presenting ``client`` (cert, key) if any."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki["ca"].pem,
        private_key=None if client is None else client[1],
        certificate_chain=None if client is None else client[0],
    )
    target = f"127.0.0.1:{pdp.app[GRPC_PORT]}"
    options = [("grpc.ssl_target_name_override", "localhost")]
    async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        return await stub.Check(check_request(SEARCH, headers), metadata=metadata, timeout=10)


async def plain_check(
    pdp: Client, headers: dict[str, str], metadata: tuple[tuple[str, str], ...] = ()
) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{pdp.app[GRPC_PORT]}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        return await stub.Check(check_request(SEARCH, headers), metadata=metadata, timeout=10)


# --------------------------------------------------------------------------- gRPC mTLS


async def test_grpc_mtls_right_caller_is_allowed_and_named_in_input_pep_and_the_record(
    make_pdp: Callable[..., Any], pki: dict[str, Any], mint: Callable[..., str], tmp_path: Path
) -> None:
    pdp = await make_pdp(**mtls(pki))
    svid = mint(SUPPORT_BOT)

    resp = await tls_check(pdp, pki, pki["gateway"], bearer(svid))

    assert resp.status.code == code_pb2.OK
    headers = {o.header.key: o.header.value for o in resp.ok_response.headers}
    assert_credential(headers["authorization"][7:], svid)
    [record] = records(tmp_path)
    caller = {"authenticated": True, "id": GATEWAY, "method": "mtls"}
    assert (record["caller"], record["input"]["pep"]) == (caller, caller)
    assert record["decision_id"] == headers["x-pdp-decision-id"]


@pytest.mark.parametrize("client", [None, "other_ca"], ids=["no-certificate", "another-ca"])
async def test_grpc_mtls_refuses_a_caller_without_a_certificate_of_the_caller_ca(
    make_pdp: Callable[..., Any],
    pki: dict[str, Any],
    mint: Callable[..., str],
    tmp_path: Path,
    client: str | None,
) -> None:
    pdp = await make_pdp(**mtls(pki))

    # gRPC's TLS requires and verifies the certificate itself: the handshake fails, so the
    # stub sees the listener as unavailable (Envoy: deny), and nothing is decided.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await tls_check(
            pdp, pki, None if client is None else pki[client], bearer(mint(SUPPORT_BOT))
        )

    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert records(tmp_path) == []


async def test_grpc_plaintext_is_refused_by_a_tls_listener(
    make_pdp: Callable[..., Any], pki: dict[str, Any], mint: Callable[..., str], tmp_path: Path
) -> None:
    pdp = await make_pdp(**mtls(pki))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await plain_check(pdp, bearer(mint(SUPPORT_BOT)))

    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert records(tmp_path) == []


async def test_grpc_an_agent_svid_is_not_a_gateway_of_the_client_trust_domain(
    make_pdp: Callable[..., Any], pki: dict[str, Any], mint: Callable[..., str], tmp_path: Path
) -> None:
    pdp = await make_pdp(**mtls(pki, client_trust_domain="gateways.example"))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await tls_check(pdp, pki, pki["agent"], bearer(mint(SUPPORT_BOT)))

    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "client certificate" in str(info.value.details())
    assert records(tmp_path) == []
    # The gateway of that trust domain is admitted by the same listener.
    ok = await tls_check(pdp, pki, pki["gateway"], bearer(mint(SUPPORT_BOT)))
    assert ok.status.code == code_pb2.OK


async def test_grpc_an_agent_acting_as_its_own_gateway_is_denied_and_recorded(
    make_pdp: Callable[..., Any], pki: dict[str, Any], mint: Callable[..., str], tmp_path: Path
) -> None:
    # One issuer for gateways and agents, no --client-trust-domain: the agent's X.509-SVID
    # passes the handshake, but a decision whose caller is the agent itself is denied.
    pdp = await make_pdp(**mtls(pki))

    resp = await tls_check(pdp, pki, pki["agent"], bearer(mint(SUPPORT_BOT)))

    assert resp.status.code == code_pb2.PERMISSION_DENIED
    body = json.loads(resp.denied_response.body)
    assert [r["code"] for r in body["reasons"]] == ["caller.is_agent"]
    [record] = records(tmp_path)
    assert record["decision_id"] == body["decision_id"]
    assert record["caller"] == {"authenticated": True, "id": AGENT_X509, "method": "mtls"}
    assert (record["decision"]["allow"], record["credential"]) == (False, None)


async def test_grpc_an_agent_is_no_gateway_for_another_agent_either(
    make_pdp: Callable[..., Any], pki: dict[str, Any], mint: Callable[..., str], tmp_path: Path
) -> None:
    # support-bot's X.509-SVID as the caller, finance-analyst's JWT-SVID as the agent (a
    # leaked token): the caller is a workload of an agents' trust domain, not a gateway.
    pdp = await make_pdp(**mtls(pki))

    resp = await tls_check(pdp, pki, pki["agent"], bearer(mint(FINANCE)))

    assert resp.status.code == code_pb2.PERMISSION_DENIED
    body = json.loads(resp.denied_response.body)
    assert "caller.is_agent" in [r["code"] for r in body["reasons"]]
    [record] = records(tmp_path)
    assert record["caller"]["id"] == AGENT_X509
    assert (record["decision"]["allow"], record["credential"]) == (False, None)


async def test_grpc_a_caller_of_an_agents_trust_domain_is_a_gateway_only_under_the_prefix(
    make_pdp: Callable[..., Any], pki: dict[str, Any], mint: Callable[..., str], tmp_path: Path
) -> None:
    # Gateways sharing the agents' trust domain (one SPIFFE trust domain per organisation).
    inside = pki["ca"].issue("envoy-2", uris=("spiffe://acme.example/gateways/envoy-2",))
    lookalike = pki["ca"].issue("evil", uris=("spiffe://acme.example/gateways-evil/x",))

    without = await make_pdp(**mtls(pki), state_dir=tmp_path / "without-prefix")
    resp = await tls_check(without, pki, inside, bearer(mint(SUPPORT_BOT)))
    assert resp.status.code == code_pb2.PERMISSION_DENIED  # unknown: the worst case
    assert "caller.is_agent" in json.loads(resp.denied_response.body)["reasons"][0]["code"]

    pdp = await make_pdp(**mtls(pki, client_id_prefix="spiffe://acme.example/gateways/"))
    ok = await tls_check(pdp, pki, inside, bearer(mint(SUPPORT_BOT)))
    assert ok.status.code == code_pb2.OK
    for caller in (lookalike, pki["agent"]):
        resp = await tls_check(pdp, pki, caller, bearer(mint(FINANCE)))
        assert resp.status.code == code_pb2.PERMISSION_DENIED
        codes = [r["code"] for r in json.loads(resp.denied_response.body)["reasons"]]
        assert "caller.is_agent" in codes
    # A gateway of a trust domain no agent comes from needs no prefix.
    ok = await tls_check(pdp, pki, pki["gateway"], bearer(mint(SUPPORT_BOT)))
    assert ok.status.code == code_pb2.OK


async def test_json_api_an_agent_acting_as_its_own_gateway_is_denied_too(
    serve: Serve, pki: dict[str, Any], mint: Callable[..., str], tmp_path: Path
) -> None:
    url, _ = await serve(**mtls(pki))
    directory = tmp_path / "agent-pki"
    directory.mkdir()
    cert, key = write_pair(directory, "agent", pki["agent"])
    context = ssl.create_default_context(cadata=pki["ca"].pem.decode())
    context.load_cert_chain(str(cert), str(key))
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(
            url + "/v1/decisions", json=allow_request(mint(SUPPORT_BOT))
        ) as resp:
            status, body = resp.status, await resp.json()

    assert (status, body["allow"]) == (200, False)
    assert [r["code"] for r in body["reasons"]] == ["caller.is_agent"]
    assert "credential" not in body


# --------------------------------------------------------------------------- gRPC caller keys


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, str]:
    key = new_key()
    path = tmp_path / "caller-keys"
    path.write_text(f"envoy-1 {hash_key(key)}\n")
    return path, key


async def test_grpc_caller_key_in_metadata_is_the_caller(
    make_pdp: Callable[..., Any], keys: tuple[Path, str], mint: Callable[..., str], tmp_path: Path
) -> None:
    pdp = await make_pdp(caller_keys=keys[0])

    resp = await plain_check(
        pdp, bearer(mint(SUPPORT_BOT)), (("authorization", f"Bearer {keys[1]}"),)
    )

    assert resp.status.code == code_pb2.OK
    [record] = records(tmp_path)
    caller = {"authenticated": True, "id": "envoy-1", "method": "api_key"}
    assert (record["caller"], record["input"]["pep"]) == (caller, caller)


@pytest.mark.parametrize(
    "presented",
    ["none", "wrong", "agent-svid", "basic", "twice"],
)
async def test_grpc_without_a_valid_caller_key_is_unauthenticated_and_decides_nothing(
    make_pdp: Callable[..., Any],
    keys: tuple[Path, str],
    mint: Callable[..., str],
    tmp_path: Path,
    presented: str,
) -> None:
    pdp = await make_pdp(caller_keys=keys[0])
    svid = mint(SUPPORT_BOT)
    metadata = {
        "none": (),
        "wrong": (("authorization", "Bearer pdpk_" + "A" * 43),),
        # The agent presents its own JWT-SVID as if it were the gateway's credential.
        "agent-svid": (("authorization", f"Bearer {svid}"),),
        "basic": (("authorization", "Basic ZW52b3k6cHc="),),
        "twice": (("authorization", f"Bearer {keys[1]}"), ("authorization", f"Bearer {keys[1]}")),
    }[presented]

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await plain_check(pdp, bearer(svid), metadata)

    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert info.value.details() == (
        "the caller must authenticate with Authorization: Bearer <caller key>"
    )
    assert records(tmp_path) == []


async def test_grpc_caller_key_over_tls_without_client_certificates(
    make_pdp: Callable[..., Any],
    pki: dict[str, Any],
    keys: tuple[Path, str],
    mint: Callable[..., str],
    tmp_path: Path,
) -> None:
    cert, key = pki["server"]
    pdp = await make_pdp(tls_cert=cert, tls_key=key, caller_keys=keys[0])

    resp = await tls_check(
        pdp, pki, None, bearer(mint(SUPPORT_BOT)), (("authorization", f"Bearer {keys[1]}"),)
    )

    assert resp.status.code == code_pb2.OK
    assert records(tmp_path)[0]["caller"]["id"] == "envoy-1"


# --------------------------------------------------------------------------- HTTP mode


async def test_http_mode_names_the_authenticated_caller_in_input_pep_and_the_record(
    make_pdp: Callable[..., Any], keys: tuple[Path, str], mint: Callable[..., str], tmp_path: Path
) -> None:
    # With caller keys in Authorization, the agent's SVID travels in a header of its own.
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        ROUTES.read_text().replace(
            "header: Authorization\n  scheme: Bearer", "header: X-Agent-SVID\n  scheme: ''"
        )
    )
    pdp = await make_pdp(caller_keys=keys[0], ext_authz_routes=routes)
    headers = {"Authorization": f"Bearer {keys[1]}", "X-Agent-SVID": mint(SUPPORT_BOT)}

    resp = await pdp.get("/ext_authz" + SEARCH, headers=headers)
    unauthenticated = await pdp.get("/ext_authz" + SEARCH, headers={"X-Agent-SVID": "x"})

    assert resp.status == 200
    assert unauthenticated.status == 401
    [record] = records(tmp_path)
    caller = {"authenticated": True, "id": "envoy-1", "method": "api_key"}
    assert (record["caller"], record["input"]["pep"]) == (caller, caller)
    assert record["decision_id"] == resp.headers["x-pdp-decision-id"]


async def test_http_mode_refuses_a_caller_key_sent_twice_as_grpc_does(
    make_pdp: Callable[..., Any], keys: tuple[Path, str], mint: Callable[..., str], tmp_path: Path
) -> None:
    pdp = await make_pdp(caller_keys=keys[0])
    for second in (f"Bearer {keys[1]}", "Bearer junk"):
        headers = CIMultiDict([("Authorization", f"Bearer {keys[1]}"), ("Authorization", second)])
        for path in ("/ext_authz" + SEARCH, "/v1/decisions"):
            resp = await pdp.post(path, headers=headers, json={})
            assert resp.status == 401, (path, second)
    assert records(tmp_path) == []
