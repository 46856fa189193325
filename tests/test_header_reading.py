"""Every header the PDP reads has one reading on every route (outside review, red team).

A header value that is not visible ASCII is a 400 (or, at the ext_authz door, a recorded
deny), never a 5xx; a header the PDP reads sent twice is refused, never read as its first
value; a failed authentication with the approver credential is logged like an admin one,
without the secret. The sweep walks the app's own route table, so a route added later is
covered without touching this file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web
from multidict import CIMultiDict

from tests.audit_helpers import records
from tests.boundary_helpers import raw_http, request_bytes
from tests.conftest import ROOT
from tests.credential_helpers import (  # noqa: F401  (the *_fixture names are fixtures)
    ADMIN,
    Client,
    Factory,
    admin,
    make_pdp_fixture,
)

APPROVER = "approver-credential-for-tests-red-team-1"
ROUTES = ROOT / "examples" / "gateways" / "routes.yaml"
SEARCH = "/rest/api/2/search"

#: Headers some route of the PDP reads.
READ_HEADERS = ("Authorization", "X-Request-ID", "X-PDP-Credential", "X-PDP-Approval-Id", "Host")
#: Raw header bytes that are not visible ASCII.
RAW_VALUES = (b"Bearer \xff\xfe", b"\xc3\xa9t\xc3\xa9", b"Bearer a\x80b")


@pytest.fixture
async def pdp(make_pdp: Factory, tmp_path: Path) -> Client:
    return await make_pdp(
        approver_token=APPROVER,
        ext_authz_routes=ROUTES,
        audit_dir=tmp_path / "audit",
    )


def _routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, a concrete path) of every route of the app."""
    found = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or ""
        path = path.replace("{original}", SEARCH.lstrip("/")).replace("{id}", "apr_x")
        path = path.replace("{decision_id}", "d-1")
        method = "GET" if route.method in ("*", "HEAD") else route.method
        found.append((method, path))
    return sorted(set(found))


async def test_raw_bytes_in_any_header_the_pdp_reads_are_never_a_5xx_on_any_route(
    pdp: Client,
) -> None:
    assert pdp.server.port is not None
    routes = _routes(pdp.app)
    assert ("GET", "/v1/approvals") in routes and ("GET", "/ext_authz" + SEARCH) in routes
    failures = []
    for method, path in routes:
        for name in READ_HEADERS:
            for value in RAW_VALUES:
                headers = {"Content-Type": b"application/json", name: value}
                if name == "Host":
                    data = request_bytes(method, path, b"{}", headers)
                    data = data.replace(b"Host: localhost\r\n", b"", 1)
                else:
                    data = request_bytes(method, path, b"{}", headers)
                status, _ = await raw_http("127.0.0.1", pdp.server.port, data)
                if status >= 500:
                    failures.append((method, path, name, value, status))
    assert failures == []


@pytest.mark.parametrize("value", RAW_VALUES)
async def test_raw_bytes_in_the_approver_bearer_are_a_400_and_logged(
    pdp: Client, caplog: pytest.LogCaptureFixture, value: bytes
) -> None:
    assert pdp.server.port is not None
    data = request_bytes("GET", "/v1/approvals", b"", {"Authorization": value})
    status, body = await raw_http("127.0.0.1", pdp.server.port, data)
    assert status == 400, body
    assert body["error"]["fields"] == [
        {"path": "/headers/authorization", "message": "must be visible ASCII"}
    ]
    logged = [r.getMessage() for r in caplog.records if r.name == "pdp.admin"]
    assert any("admin authentication failed" in m for m in logged)


@pytest.mark.parametrize("second", [f"Bearer {APPROVER}", "Bearer junk"])
async def test_the_approvals_refuse_an_authorization_header_sent_twice(
    pdp: Client, second: str
) -> None:
    headers = CIMultiDict([("Authorization", f"Bearer {APPROVER}"), ("Authorization", second)])
    resp = await pdp.get("/v1/approvals", headers=headers)
    body = await resp.json()
    assert resp.status == 400, body
    assert "sent more than once" in body["error"]["message"]


@pytest.mark.parametrize("presented", ["Bearer wrong-approver", "Basic abc", None])
async def test_a_failed_approver_authentication_is_logged_without_the_secret(
    pdp: Client, caplog: pytest.LogCaptureFixture, presented: str | None
) -> None:
    headers = {} if presented is None else {"Authorization": presented}
    resp = await pdp.post("/v1/approvals/apr_x/grant", json={}, headers=headers)
    assert resp.status in (401, 403)
    logged = [r.getMessage() for r in caplog.records if r.name == "pdp.admin"]
    assert any(
        "admin authentication failed" in m and "/v1/approvals/apr_x/grant" in m for m in logged
    )
    assert not any("wrong-approver" in m or APPROVER in m for m in logged)


async def test_the_approver_and_admin_credentials_still_open_the_approvals(pdp: Client) -> None:
    for token in (APPROVER, ADMIN):
        resp = await pdp.get("/v1/approvals", headers=admin(token))
        assert resp.status == 200, await resp.text()


async def test_authzen_refuses_an_x_request_id_sent_twice(pdp: Client) -> None:
    tup = {
        "subject": {"type": "user", "id": "alice"},
        "action": {"name": "read"},
        "resource": {"type": "doc", "id": "1"},
    }
    headers = CIMultiDict([("X-Request-ID", "r-1"), ("X-Request-ID", "r-2")])
    resp = await pdp.post("/access/v1/evaluation", json=tup, headers=headers)
    assert resp.status == 400
    assert "X-Request-ID" not in resp.headers
    assert "sent more than once" in await resp.json()


async def test_authzen_refuses_an_x_request_id_that_is_not_visible_ascii(pdp: Client) -> None:
    assert pdp.server.port is not None
    body = json.dumps(
        {
            "subject": {"type": "user", "id": "alice"},
            "action": {"name": "read"},
            "resource": {"type": "doc", "id": "1"},
        }
    ).encode()
    data = request_bytes(
        "POST",
        "/access/v1/evaluation",
        body,
        {"Content-Type": b"application/json", "X-Request-ID": b"\xc3\xa9t\xc3\xa9"},
    )
    status, answer = await raw_http("127.0.0.1", pdp.server.port, data)
    assert status == 400
    assert "X-Request-ID must be visible ASCII" in answer


async def test_ext_authz_a_host_that_is_not_a_host_is_a_recorded_deny(
    pdp: Client, mint: Callable[..., str], tmp_path: Path
) -> None:
    assert pdp.server.port is not None
    token = mint("spiffe://acme.example/agents/support-bot")
    for host in (b"jira\xff\xfe", b"jira.internal.acme/x", b"a@jira.internal.acme"):
        data = request_bytes(
            "GET", "/ext_authz" + SEARCH, b"", {"Authorization": f"Bearer {token}".encode()}
        ).replace(b"Host: localhost", b"Host: " + host)
        status, body = await raw_http("127.0.0.1", pdp.server.port, data)
        assert status == 403, (host, body)
        assert [r["code"] for r in body["reasons"]] == ["request.invalid_host"]
        assert body["decision_id"] in {
            r.get("decision_id") for r in records(tmp_path / "audit") if r.get("type") == "decision"
        }


async def test_ext_authz_an_ordinary_host_still_decides(
    pdp: Client, mint: Callable[..., str]
) -> None:
    token = mint("spiffe://acme.example/agents/support-bot")
    for host in ("jira.internal.acme", "jira.internal.acme:8443", "127.0.0.1:80", "[::1]:8080"):
        resp = await pdp.get(
            "/ext_authz" + SEARCH, headers={"Authorization": f"Bearer {token}", "Host": host}
        )
        assert resp.status == 200, (host, await resp.text())


@pytest.mark.parametrize(
    ("values", "token"),
    [
        (["Bearer abc"], "abc"),
        (["Bearer abc", "Bearer other"], None),
        (["Bearer abc", "Bearer abc"], None),
        (["Bearer a\x7fb"], None),
        (["Bearer caf\u00e9"], None),
        ([], None),
    ],
)
def test_the_target_reads_one_bearer_credential_or_none(
    values: list[str], token: str | None
) -> None:
    from aiohttp.test_utils import make_mocked_request

    from pdp.target import bearer_token

    headers = CIMultiDict([("Authorization", v) for v in values])
    assert bearer_token(make_mocked_request("GET", "/", headers=headers)) == token
