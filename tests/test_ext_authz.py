"""Envoy ext_authz front doors on a real OPA: the gRPC mode through a real client stub from
the generated Envoy API packages, the HTTP mode through the aiohttp test client, and the
route file they share."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from aiohttp.test_utils import TestClient
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import json_format
from google.rpc import code_pb2
from jsonschema import Draft202012Validator
from multidict import CIMultiDict

from pdp.adapters.ext_authz import Verdict
from pdp.adapters.ext_authz_grpc import GRPC_PORT, to_check_response
from pdp.adapters.ext_authz_wire import encode_allow
from pdp.app import create_app
from pdp.audit import log as log_module
from pdp.config import ConfigError, Settings
from pdp.routes import RouteTable, clean_path
from pdp.schema import load_schema
from pdp.state import AUDIT, DECISIONS

from .audit_helpers import records as audit_records
from .conftest import DEV_DOMAINS, ROOT
from .credential_helpers import ADMIN, INTROSPECTOR
from .http_helpers import is_uuid
from .opa_process import OPAProcess

Client = TestClient[Any, Any]
ROUTES = ROOT / "examples" / "gateways" / "routes.yaml"
SUPPORT_BOT = "spiffe://acme.example/agents/support-bot"
RESEARCH_BOT = "spiffe://globex.example/agents/research-bot"
SEARCH = "/rest/api/2/search"

Factory = Callable[..., Any]


# --------------------------------------------------------------------------- route file


def test_the_example_route_file_loads() -> None:
    table = RouteTable.load(ROUTES)
    names = [r.name for r in table.routes]
    assert names == ["jira-search", "jira-create-issue", "wiki-pages", "vault-payroll-secret"]
    assert (table.token_header, table.token_scheme) == ("authorization", "Bearer")


@pytest.mark.parametrize(
    ("host", "path", "method", "expected"),
    [
        ("127.0.0.1:8080", SEARCH, "GET", "jira-search"),
        ("anything", SEARCH, "get", "jira-search"),
        ("anything", SEARCH, "POST", None),
        ("anything", SEARCH + "/more", "GET", None),
        ("anything", "/rest/api/2/issue", "POST", "jira-create-issue"),
        ("wiki.globex.example", "/wiki/pages/p1", "GET", "wiki-pages"),
        ("WIKI.Globex.Example:443", "/wiki/pages/p1/history/2", "HEAD", "wiki-pages"),
        ("globex.example", "/wiki/pages/p1", "GET", None),
        ("evilglobex.example", "/wiki/pages/p1", "GET", None),
        ("wiki.globex.example", "/wiki/pages/", "GET", None),
        ("wiki.globex.example", "/wiki/pages", "GET", None),
    ],
)
def test_routes_match_host_path_and_method(
    host: str, path: str, method: str, expected: str | None
) -> None:
    route = RouteTable.load(ROUTES).match(host, path, method)
    assert (route.name if route else None) == expected


@pytest.mark.parametrize(
    ("path", "clean"),
    [
        ("/rest/api/2/search", True),
        ("/a/b.c/d", True),
        ("/a//b", False),
        ("/a/../b", False),
        ("/a/./b", False),
        ("/a/..", False),
        ("/a%2fb", False),
        ("/a%2Fb", False),
        ("/%2e%2e/b", False),
        ("/a\\b", False),
        ("/a%00", False),
        ("relative", False),
        ("/a b", False),
    ],
)
def test_paths_with_two_readings_are_not_clean(path: str, clean: bool) -> None:
    assert clean_path(path) is clean


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("routes: [{match: {path: /x}}]", "/routes/0/tenant is required"),
        (
            "routes: [{match: {path: /x}, tenant: acme, action: {type: nope}, "
            "destination: {type: tool, name: t}}]",
            "route 0: /action/type must be one of",
        ),
        ("routes: []\nroutes: []", "appears twice"),
        ("routes: [{match: {path: x}}]", "/routes/0/match/path"),
        ("token: {header: 'a b'}\nroutes: []", "/token/header"),
        ("[not, a, mapping", "PDP_EXT_AUTHZ_ROUTES"),
    ],
)
def test_a_bad_route_file_is_a_config_error_naming_the_place(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        RouteTable.load(path)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("scheme", "value", "token"),
    [
        ("Bearer", "Bearer abc", "abc"),
        ("Bearer", "bearer abc", "abc"),
        ("Bearer", "Basic abc", None),
        ("Bearer", "Bearer ", None),
        ("Bearer", None, None),
        ("", "abc", "abc"),
    ],
)
def test_the_token_is_read_with_the_configured_scheme(
    scheme: str, value: str | None, token: str | None
) -> None:
    assert RouteTable(token_scheme=scheme).token(value) == token


# --------------------------------------------------------------------------- apps


@pytest.fixture
async def make_pdp(aiohttp_client: Any, dev_state: Path, tmp_path: Path) -> AsyncIterator[Factory]:
    """The app with ext_authz on (HTTP mode, gRPC on a free port) over a given OPA."""

    async def _make(opa_url: str, **overrides: Any) -> Client:
        values: dict[str, Any] = {
            "state_dir": tmp_path / "state",
            "opa_url": opa_url,
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


@pytest.fixture
async def pdp(make_pdp: Factory, shared_opa: OPAProcess) -> Client:
    client: Client = await make_pdp(shared_opa.url)
    return client


def check_request(path: str, headers: dict[str, str], method: str = "GET") -> Any:
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method=method, host="gateway.acme.internal", path=path, headers=headers
    )
    return external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            request=attribute_context_pb2.AttributeContext.Request(http=http)
        )
    )


async def grpc_check(pdp: Client, path: str, headers: dict[str, str], method: str = "GET") -> Any:
    port = pdp.app[GRPC_PORT]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        return await stub.Check(check_request(path, headers, method), timeout=10)


def headers_of(options: Any) -> dict[str, str]:
    return {o.header.key: o.header.value for o in options}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def assert_credential(token: str, agent_token: str) -> None:
    assert token != agent_token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "agent-pdp" and claims["sub"] == SUPPORT_BOT
    assert claims["aud"] == "jira" and claims["scope"] == "tool.call:jira.search_issues:read"


# --------------------------------------------------------------------------- gRPC allow on the wire


@pytest.mark.parametrize("credential", ["t", "eyJ" + "x" * 700, "y" * 20_000])
@pytest.mark.parametrize("remove", [(), ("x-agent-svid",), ("a", "b")])
def test_the_encoded_allow_is_exactly_the_protobuf_built_message(
    credential: str, remove: tuple[str, ...]
) -> None:
    verdict = Verdict(
        200, "8c0f7a4e-1b2c-4d5e-8f90-123456789abc", credential=credential, remove_headers=remove
    )
    encoded = external_auth_pb2.CheckResponse.FromString(
        encode_allow(credential, "8c0f7a4e-1b2c-4d5e-8f90-123456789abc", remove)
    )
    assert encoded == to_check_response(verdict)
    assert encoded.ok_response.headers[0].header.value == f"Bearer {credential}"


# --------------------------------------------------------------------------- gRPC mode


@pytest.mark.opa
async def test_grpc_allow_replaces_the_svid_with_the_minted_credential(
    pdp: Client, mint: Callable[..., str]
) -> None:
    svid = mint(SUPPORT_BOT)
    resp = await grpc_check(pdp, SEARCH + "?jql=x", {**bearer(svid), "x-request-id": "r-1"})
    assert resp.status.code == code_pb2.OK
    assert resp.WhichOneof("http_response") == "ok_response"
    headers = headers_of(resp.ok_response.headers)
    scheme, _, credential = headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    assert_credential(credential, svid)
    assert all(o.append_action == o.OVERWRITE_IF_EXISTS_OR_ADD for o in resp.ok_response.headers)
    assert is_uuid(headers["x-pdp-decision-id"])
    meta = json_format.MessageToDict(resp.dynamic_metadata)
    assert meta == {"decision_id": headers["x-pdp-decision-id"], "allow": True, "reasons": []}


@pytest.mark.opa
async def test_grpc_deny_is_a_403_with_reasons_and_decision_id(
    pdp: Client, mint: Callable[..., str]
) -> None:
    resp = await grpc_check(pdp, SEARCH, bearer(mint(RESEARCH_BOT)))
    assert resp.status.code == code_pb2.PERMISSION_DENIED
    denied = resp.denied_response
    assert denied.status.code == 403
    body = json.loads(denied.body)
    assert body["allow"] is False and is_uuid(body["decision_id"])
    assert body["reasons"] and all("code" in r for r in body["reasons"])
    assert headers_of(denied.headers)["x-pdp-decision-id"] == body["decision_id"]
    meta = json_format.MessageToDict(resp.dynamic_metadata)
    assert meta["decision_id"] == body["decision_id"] and meta["allow"] is False
    assert [r["code"] for r in meta["reasons"]] == [r["code"] for r in body["reasons"]]


@pytest.mark.opa
@pytest.mark.parametrize(
    ("path", "method", "headers", "code"),
    [
        (SEARCH, "GET", {}, "authn.token_missing"),
        (SEARCH, "GET", {"authorization": "Basic dXNlcjpwdw=="}, "authn.token_missing"),
        ("/admin", "GET", None, "route.unmatched"),
        (SEARCH, "DELETE", None, "route.unmatched"),
        ("/rest/api/2/../2/search", "GET", None, "route.ambiguous_path"),
        ("/rest/api/2%2fsearch", "GET", None, "route.ambiguous_path"),
    ],
)
async def test_grpc_denies_what_it_cannot_map_or_authenticate(
    pdp: Client,
    mint: Callable[..., str],
    path: str,
    method: str,
    headers: dict[str, str] | None,
    code: str,
) -> None:
    resp = await grpc_check(
        pdp, path, bearer(mint(SUPPORT_BOT)) if headers is None else headers, method
    )
    assert resp.status.code == code_pb2.PERMISSION_DENIED
    body = json.loads(resp.denied_response.body)
    assert [r["code"] for r in body["reasons"]] == [code]


@pytest.mark.opa
async def test_grpc_with_the_engine_down_is_an_unavailable_error(
    make_pdp: Factory, mint: Callable[..., str], tmp_path: Path
) -> None:
    pdp = await make_pdp(f"unix://{tmp_path}/no-opa.sock")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_check(pdp, SEARCH, bearer(mint(SUPPORT_BOT)))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.opa
async def test_grpc_strips_a_custom_token_header(
    make_pdp: Factory, shared_opa: OPAProcess, mint: Callable[..., str], tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        ROUTES.read_text().replace(
            "header: Authorization\n  scheme: Bearer", "header: X-Agent-SVID\n  scheme: ''"
        )
    )
    pdp = await make_pdp(shared_opa.url, ext_authz_routes=routes)
    svid = mint(SUPPORT_BOT)
    resp = await grpc_check(pdp, SEARCH, {"x-agent-svid": svid})
    assert resp.status.code == code_pb2.OK
    assert list(resp.ok_response.headers_to_remove) == ["x-agent-svid"]
    assert_credential(headers_of(resp.ok_response.headers)["authorization"][7:], svid)


@pytest.mark.opa
async def test_without_a_route_file_every_check_is_denied(
    make_pdp: Factory, shared_opa: OPAProcess, mint: Callable[..., str]
) -> None:
    pdp = await make_pdp(shared_opa.url, ext_authz_routes=None)
    resp = await grpc_check(pdp, SEARCH, bearer(mint(SUPPORT_BOT)))
    assert resp.status.code == code_pb2.PERMISSION_DENIED
    resp2 = await pdp.get("/ext_authz" + SEARCH, headers=bearer(mint(SUPPORT_BOT)))
    assert resp2.status == 403


# --------------------------------------------------------------------------- HTTP mode


async def raw_request(
    pdp: Client,
    method: str,
    target: str,
    headers: dict[str, str] | list[tuple[str, str]],
    host: str | None = None,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request with the target and headers sent byte for byte (a client
    library would normalise dot segments and double slashes away, and merge repeats)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", pdp.port)
    host = f"127.0.0.1:{pdp.port}" if host is None else host
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    pairs = headers.items() if isinstance(headers, dict) else headers
    lines += [f"{k}: {v}" for k, v in pairs]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.opa
async def test_http_allow_is_200_with_the_credential_and_decision_id(
    pdp: Client, mint: Callable[..., str]
) -> None:
    svid = mint(SUPPORT_BOT)
    resp = await pdp.get("/ext_authz" + SEARCH + "?jql=project%3DSUP", headers=bearer(svid))
    assert resp.status == 200
    scheme, _, credential = resp.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    assert_credential(credential, svid)
    assert is_uuid(resp.headers["x-pdp-decision-id"])


@pytest.mark.opa
async def test_http_deny_is_403_with_a_json_body(pdp: Client, mint: Callable[..., str]) -> None:
    resp = await pdp.get("/ext_authz" + SEARCH, headers=bearer(mint(RESEARCH_BOT)))
    assert resp.status == 403 and resp.content_type == "application/json"
    body = await resp.json()
    assert body["allow"] is False and body["reasons"]
    assert resp.headers["x-pdp-decision-id"] == body["decision_id"]
    assert "Authorization" not in resp.headers


@pytest.mark.opa
@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("POST", SEARCH, "route.unmatched"),
        ("GET", "/rest/api/2/./search", "route.ambiguous_path"),
        ("GET", "/rest//api/2/search", "route.ambiguous_path"),
        ("GET", "/" + "a" * 5000, "route.path_too_long"),
    ],
)
async def test_http_denies_unmapped_requests(
    pdp: Client, mint: Callable[..., str], method: str, path: str, code: str
) -> None:
    status, body = await raw_request(pdp, method, "/ext_authz" + path, bearer(mint(SUPPORT_BOT)))
    assert status == 403
    assert [r["code"] for r in json.loads(body)["reasons"]] == [code]


@pytest.mark.opa
async def test_http_refuses_a_token_header_sent_twice(
    pdp: Client, mint: Callable[..., str]
) -> None:
    headers = CIMultiDict(
        [("Authorization", f"Bearer {mint(SUPPORT_BOT)}"), ("Authorization", "Bearer x")]
    )
    resp = await pdp.get("/ext_authz" + SEARCH, headers=headers)
    assert resp.status == 403
    assert [r["code"] for r in (await resp.json())["reasons"]] == ["request.ambiguous_token"]


@pytest.mark.opa
@pytest.mark.parametrize("name", ["Host", "X-Request-ID", "X-PDP-Approval-Id"])
async def test_http_refuses_any_header_the_decision_reads_sent_twice(
    pdp: Client, mint: Callable[..., str], tmp_path: Path, name: str
) -> None:
    # Two readings (which Host routes, which approval is presented, which request id is
    # recorded): one recorded deny, never the first value silently.
    value = {
        "Host": "jira.internal.acme",
        "X-Request-ID": "r-1",
        "X-PDP-Approval-Id": "00000000-0000-4000-8000-000000000000",
    }[name]
    headers = [("Authorization", f"Bearer {mint(SUPPORT_BOT)}"), (name, value)]
    if name != "Host":
        headers.append((name, value))  # raw_request sends one Host of its own
    status, raw = await raw_request(pdp, "GET", "/ext_authz" + SEARCH, headers, host=value)
    if name == "Host":  # aiohttp's parser refuses it first (RFC 9112 §3.2): nothing decided
        assert status == 400
        assert decision_records(tmp_path) == []
        return
    body = json.loads(raw)
    assert status == 403
    assert [r["code"] for r in body["reasons"]] == ["request.ambiguous_header"]
    [record] = decision_records(tmp_path)
    assert record["decision_id"] == body["decision_id"]
    assert record["request_id"] is None  # neither of two request ids is taken


@pytest.mark.opa
@pytest.mark.parametrize("mode", ["grpc", "http"])
async def test_a_refusal_is_shed_like_a_decision_when_every_slot_is_taken(
    pdp: Client, mint: Callable[..., str], tmp_path: Path, mode: str
) -> None:
    # A refusal costs a durable record: a flood of unmatched paths is shed, not recorded.
    service = pdp.app[DECISIONS]
    service.in_flight = service.max_in_flight
    try:
        if mode == "grpc":
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await grpc_check(pdp, "/nowhere", bearer(mint(SUPPORT_BOT)), "GET")
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        else:
            status, _ = await raw_request(pdp, "GET", "/ext_authz/nowhere", {})
            assert status == 503
    finally:
        service.in_flight = 0
    assert decision_records(tmp_path) == []


@pytest.mark.opa
async def test_http_with_the_engine_down_is_503(
    make_pdp: Factory, mint: Callable[..., str], tmp_path: Path
) -> None:
    pdp = await make_pdp(f"unix://{tmp_path}/no-opa.sock")
    resp = await pdp.get("/ext_authz" + SEARCH, headers=bearer(mint(SUPPORT_BOT)))
    assert resp.status == 503
    body = await resp.json()
    assert body["allow"] is False and is_uuid(body["decision_id"])
    assert "Authorization" not in resp.headers


@pytest.mark.opa
async def test_each_check_is_one_recorded_decision_with_its_id(
    pdp: Client, mint: Callable[..., str]
) -> None:
    svid = mint(SUPPORT_BOT)
    allowed = await pdp.get("/ext_authz" + SEARCH, headers=bearer(svid))
    grpc_resp = await grpc_check(pdp, SEARCH, bearer(svid))
    ids = {
        allowed.headers["x-pdp-decision-id"],
        headers_of(grpc_resp.ok_response.headers)["x-pdp-decision-id"],
    }
    assert len(ids) == 2
    # The credential minted for each is known to the PDP (introspection by its jti's token).
    token = allowed.headers["Authorization"][7:]
    resp = await pdp.post(
        "/v1/credentials/introspect",
        data={"token": token},
        headers={"Authorization": f"Bearer {INTROSPECTOR}"},
    )
    info = await resp.json()
    assert info["active"] is True and info["sub"] == SUPPORT_BOT


# --------------------------------------------------------------------------- approvals

FINANCE = "spiffe://acme.example/agents/finance-analyst"
VAULT = "/v1/secret/data/payroll/db-readonly"


@pytest.mark.opa
async def test_http_approval_pending_is_a_403_with_the_approval_then_granted_allows(
    pdp: Client, mint: Callable[..., str]
) -> None:
    svid = mint(FINANCE)
    first = await pdp.get("/ext_authz" + VAULT, headers=bearer(svid))
    assert first.status == 403
    body = await first.json()
    assert [r["code"] for r in body["reasons"]] == ["approval_required"]
    assert body["approval"]["status"] == "pending"
    approval_id = body["approval"]["id"]
    granted = await pdp.post(
        f"/v1/approvals/{approval_id}/grant",
        json={"approver": "alice"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert granted.status == 200
    retry = await pdp.get(
        "/ext_authz" + VAULT, headers={**bearer(svid), "x-pdp-approval-id": approval_id}
    )
    assert retry.status == 200
    claims = jwt.decode(retry.headers["Authorization"][7:], options={"verify_signature": False})
    assert claims["sub"] == FINANCE and claims["aud"] == "vault"


@pytest.mark.opa
async def test_grpc_approval_pending_carries_the_approval_object(
    pdp: Client, mint: Callable[..., str]
) -> None:
    resp = await grpc_check(pdp, VAULT, bearer(mint(FINANCE)))
    assert resp.status.code == code_pb2.PERMISSION_DENIED
    body = json.loads(resp.denied_response.body)
    assert body["approval"]["status"] == "pending" and body["approval"]["id"]


@pytest.mark.opa
async def test_a_malformed_approval_id_header_is_denied(
    pdp: Client, mint: Callable[..., str]
) -> None:
    headers = {**bearer(mint(FINANCE)), "x-pdp-approval-id": "not/an id"}
    resp = await pdp.get("/ext_authz" + VAULT, headers=headers)
    assert resp.status == 403
    codes = [r["code"] for r in (await resp.json())["reasons"]]
    assert codes == ["request.invalid_approval_id"]


# --------------------------------------------------------------------------- every deny is recorded

#: (method, path, headers or None for the agent's SVID, reason code): denies made before a
#: decision request exists, and denies of requests whose token is missing or malformed.
PRE_DECISION = {
    "unmatched": ("POST", SEARCH, None, "route.unmatched"),
    "ambiguous": ("GET", "/rest//api/2/search", None, "route.ambiguous_path"),
    "dot-segment": ("GET", "/rest/api/2/./search", None, "route.ambiguous_path"),
    "too-long": ("GET", "/" + "a" * 5000, None, "route.path_too_long"),
    "no-token": ("GET", SEARCH, {}, "authn.token_missing"),
    "basic-token": ("GET", SEARCH, {"authorization": "Basic dXNlcjpwdw=="}, "authn.token_missing"),
    "approval-id": (
        "GET",
        VAULT,
        {"x-pdp-approval-id": "not/an id"},
        "request.invalid_approval_id",
    ),
}


def decision_records(tmp_path: Path) -> list[dict[str, Any]]:
    return [r for r in audit_records(tmp_path / "state" / "audit") if r["type"] == "decision"]


@pytest.mark.opa
@pytest.mark.parametrize("mode", ["grpc", "http"])
@pytest.mark.parametrize("case", sorted(PRE_DECISION))
async def test_every_deny_is_one_audit_record_with_the_answered_decision_id(
    pdp: Client, mint: Callable[..., str], tmp_path: Path, mode: str, case: str
) -> None:
    method, path, headers, code = PRE_DECISION[case]
    if headers is None:
        headers = bearer(mint(SUPPORT_BOT))
    elif "x-pdp-approval-id" in headers:
        headers = {**bearer(mint(FINANCE)), **headers}
    headers = {**headers, "x-request-id": f"r-{case}"}
    path += "?api_key=s3cr3t"  # a query string is never quoted in the record
    if mode == "grpc":
        resp = await grpc_check(pdp, path, headers, method)
        assert resp.status.code == code_pb2.PERMISSION_DENIED
        body = json.loads(resp.denied_response.body)
        assert headers_of(resp.denied_response.headers)["x-pdp-decision-id"] == body["decision_id"]
    else:
        status, raw = await raw_request(pdp, method, "/ext_authz" + path, headers)
        assert status == 403
        body = json.loads(raw)
    assert [r["code"] for r in body["reasons"]] == [code]
    assert is_uuid(body["decision_id"])
    [record] = decision_records(tmp_path)
    assert record["decision_id"] == body["decision_id"]
    assert record["request_id"] == f"r-{case}"
    assert record["time"] is not None
    assert record["decision"]["allow"] is False and record["credential"] is None
    assert [r["code"] for r in record["decision"]["reasons"]] == [code]
    Draft202012Validator(load_schema("audit-record")).validate(record)
    assert "s3cr3t" not in json.dumps(record)


@pytest.mark.opa
async def test_a_token_header_sent_twice_is_one_recorded_deny_without_the_token(
    pdp: Client, mint: Callable[..., str], tmp_path: Path
) -> None:
    svid = mint(SUPPORT_BOT)
    headers = CIMultiDict([("Authorization", f"Bearer {svid}"), ("Authorization", "Bearer x")])
    resp = await pdp.get("/ext_authz" + SEARCH, headers=headers)
    body = await resp.json()
    [record] = decision_records(tmp_path)
    assert record["decision_id"] == body["decision_id"] == resp.headers["x-pdp-decision-id"]
    assert [r["code"] for r in record["decision"]["reasons"]] == ["request.ambiguous_token"]
    assert record["action"]["name"] == "jira.search_issues"  # the matched route's call
    assert svid not in json.dumps(record)


@pytest.mark.opa
async def test_a_refusal_the_trail_cannot_record_is_unavailable_not_a_bare_deny(
    pdp: Client, mint: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    trail = pdp.app[AUDIT]
    assert trail is not None
    trail.writer.retry_initial_s = trail.writer.retry_max_s = 600  # no recovery meanwhile
    monkeypatch.setattr(log_module, "_write_all", full)
    status, raw = await raw_request(pdp, "POST", "/ext_authz" + SEARCH, bearer(mint(SUPPORT_BOT)))
    assert trail.writer.available is False
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_check(pdp, SEARCH, bearer(mint(SUPPORT_BOT)), "POST")

    body = json.loads(raw)
    assert (status, body["allow"], body["decision_id"]) == (503, False, None)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert decision_records(tmp_path) == []
