"""One reading of the original path at the ext_authz doors (outside review, red team).

The route file matches the path as the gateway sent it; the target behind the gateway reads
it again, after its own decoding and normalisation. Whatever those two readers could read
differently is refused (``route.ambiguous_path``, one recorded deny) instead of matched:
servlet path parameters (``/a/..;/b`` is ``/a/../b`` to Tomcat and Spring), percent-encoded
characters that may be written plainly (``%73ecret`` is ``secret`` to the target but not to
the route's pattern), lower-case or malformed escapes, overlong or invalid UTF-8, text that
NFKC folds (fullwidth ``．．`` and ``／``), fragments and raw non-ASCII bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.rpc import code_pb2

from pdp.routes import clean_path

from .test_ext_authz import (
    ROUTES,
    SEARCH,
    SUPPORT_BOT,
    Client,
    Factory,
    bearer,
    grpc_check,
    make_pdp,
    raw_request,
)

__all__ = ["make_pdp"]  # the fixture, shared with test_ext_authz.py

#: Same routes as the example file, but jira-search covers every path below it (a route a
#: deployment may well write): an escape from it must not be read as a match.
WIDE = ROUTES.read_text().replace("path: /rest/api/2/search\n", "path: /rest/api/2/search/**\n")

#: Paths the route matcher and a target behind the gateway could read two ways.
TWO_READINGS = [
    # servlet path parameters: Tomcat/Spring drop ";..." from each segment
    SEARCH + "/..;/..;/..;/admin/delete",
    SEARCH + "/x;jsessionid=1/..;/y",
    SEARCH + "/.;/x",
    SEARCH + "/x;",
    # percent-encoded characters that may be written plainly (decoded by the target)
    SEARCH + "/%61dmin",
    SEARCH + "/%7Euser",
    SEARCH + "/a%2Db",
    SEARCH + "/%3Bx",
    SEARCH + "/%40x",
    # double encoding: %25 decodes to the "%" of another escape
    SEARCH + "/%252e%252e/admin",
    SEARCH + "/%25",
    # non-canonical or malformed escapes
    SEARCH + "/%c3%a9",
    SEARCH + "/%2",
    SEARCH + "/%zz",
    # overlong / invalid UTF-8 ("%C0%AE" is "." to a lenient decoder)
    SEARCH + "/%C0%AE%C0%AE/admin",
    SEARCH + "/%FF",
    # NFKC folds these into "..", "/" and "admin"
    SEARCH + "/%EF%BC%8E%EF%BC%8E/admin",
    SEARCH + "/x%EF%BC%8Fadmin",
    SEARCH + "/\uff41dmin",
    # a fragment (a target may cut the path there), raw non-ASCII
    SEARCH + "/x#/../admin",
    SEARCH + "/x/..#",
    SEARCH + "/caf\u00e9",
]

#: Paths with one reading: still matched.
ONE_READING = [
    SEARCH,
    SEARCH + "/a.b/c-d_e~f",
    SEARCH + "/a:b@c!$&'()*+,=",
    SEARCH + "/caf%C3%A9",
    SEARCH + "/a%20b",
    SEARCH + "/a%3Fb%23c",
]


@pytest.mark.parametrize("path", TWO_READINGS)
def test_a_path_two_readers_could_read_differently_is_not_clean(path: str) -> None:
    assert clean_path(path) is False


@pytest.mark.parametrize("path", ONE_READING)
def test_a_path_with_one_reading_stays_clean(path: str) -> None:
    assert clean_path(path) is True


@pytest.fixture
async def wide_pdp(make_pdp: Factory, shared_opa: Any, tmp_path: Path) -> Client:
    routes = tmp_path / "routes.yaml"
    routes.write_text(WIDE)
    client: Client = await make_pdp(shared_opa.url, ext_authz_routes=routes)
    return client


@pytest.mark.opa
async def test_the_wide_route_allows_a_path_below_it(wide_pdp: Client, mint: Any) -> None:
    """The control: the route file does allow what is really below the route."""
    resp = await grpc_check(wide_pdp, SEARCH + "/saved", bearer(mint(SUPPORT_BOT)))
    assert resp.status.code == code_pb2.OK


@pytest.mark.opa
@pytest.mark.parametrize(
    "path",
    [
        SEARCH + "/..;/..;/..;/admin/delete",
        SEARCH + "/%252e%252e/%252e%252e/admin",
        SEARCH + "/%C0%AE%C0%AE/%C0%AE%C0%AE/admin",
        SEARCH + "/%EF%BC%8E%EF%BC%8E/admin",
    ],
)
async def test_grpc_an_escape_from_a_route_is_denied_as_ambiguous_not_allowed(
    wide_pdp: Client, mint: Any, path: str
) -> None:
    resp = await grpc_check(wide_pdp, path, bearer(mint(SUPPORT_BOT)))
    assert resp.status.code == code_pb2.PERMISSION_DENIED
    body = json.loads(resp.denied_response.body)
    assert [r["code"] for r in body["reasons"]] == ["route.ambiguous_path"]


@pytest.mark.opa
@pytest.mark.parametrize(
    "target",
    [
        SEARCH + "/..;/..;/..;/admin/delete",
        SEARCH + "/%61dmin",
        SEARCH + "/%c3%a9?q=1",
    ],
)
async def test_http_an_escape_from_a_route_is_denied_as_ambiguous_not_allowed(
    wide_pdp: Client, mint: Any, target: str
) -> None:
    status, body = await raw_request(
        wide_pdp, "GET", "/ext_authz" + target, bearer(mint(SUPPORT_BOT))
    )
    assert status == 403
    assert [r["code"] for r in json.loads(body)["reasons"]] == ["route.ambiguous_path"]
