"""AdminAuth: the Bearer check of the admin and introspection endpoints (unit tests of our
own logic on aiohttp's mocked requests; the endpoints end to end are in
tests/test_credentials_api.py)."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from pdp.credentials import AdminAuth
from pdp.errors import AuthError, ForbiddenError

ADMIN = "admin-credential-0123456789"
INTROSPECTOR = "introspection-credential-0123"


def request(authorization: str | None) -> web.Request:
    headers = {} if authorization is None else {"Authorization": authorization}
    return make_mocked_request("POST", "/v1/agents/disable", headers=headers)


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Bearer    ", f"Basic {ADMIN}", ADMIN, f"Token {ADMIN}"],
    ids=["none", "empty", "scheme-only", "blank", "spaces", "basic", "no-scheme", "token"],
)
def test_no_bearer_credential_is_401(header: str | None) -> None:
    with pytest.raises(AuthError) as info:
        AdminAuth(ADMIN).check(request(header))

    assert type(info.value) is AuthError
    assert info.value.status == 401
    assert info.value.message == "this endpoint requires Authorization: Bearer <admin token>"


@pytest.mark.parametrize("presented", [ADMIN + "x", ADMIN[:-1], INTROSPECTOR, ADMIN.upper()])
def test_a_wrong_bearer_credential_is_403(presented: str) -> None:
    with pytest.raises(ForbiddenError) as info:
        AdminAuth(ADMIN, INTROSPECTOR).check(request(f"Bearer {presented}"))

    assert info.value.status == 403
    assert info.value.message == "the presented credential is not accepted here"


@pytest.mark.parametrize("header", [f"Bearer {ADMIN}", f"bearer {ADMIN}", f"BEARER  {ADMIN} "])
def test_the_admin_credential_is_accepted(header: str) -> None:
    AdminAuth(ADMIN, INTROSPECTOR).check(request(header))
    AdminAuth(ADMIN, INTROSPECTOR).check(request(header), introspection=True)


def test_the_introspection_credential_opens_introspection_only() -> None:
    auth = AdminAuth(ADMIN, INTROSPECTOR)
    header = f"Bearer {INTROSPECTOR}"

    auth.check(request(header), introspection=True)
    with pytest.raises(ForbiddenError):
        auth.check(request(header))


@pytest.mark.parametrize("configured", [None, ""])
def test_without_an_introspection_credential_introspection_takes_the_admin_one(
    configured: str | None,
) -> None:
    auth = AdminAuth(ADMIN, configured)

    auth.check(request(f"Bearer {ADMIN}"), introspection=True)
    with pytest.raises(ForbiddenError):
        auth.check(request(f"Bearer {INTROSPECTOR}"), introspection=True)


# --------------------------------------------------------------------------- approvers

APPROVER = "approver-credential-0123456"


@pytest.mark.parametrize("header", [None, "Bearer ", f"Basic {APPROVER}", APPROVER])
def test_the_approvals_endpoints_need_a_bearer_credential(header: str | None) -> None:
    with pytest.raises(AuthError) as info:
        AdminAuth(ADMIN, None, APPROVER).check_approver(request(header))

    assert type(info.value) is AuthError
    assert info.value.message == (
        "this endpoint requires Authorization: Bearer <admin or approver token>"
    )


@pytest.mark.parametrize(
    ("header", "who"),
    [
        (f"Bearer {ADMIN}", "admin"),
        (f"bearer {APPROVER} ", "approver"),
        (f"BEARER {ADMIN}", "admin"),
    ],
)
def test_the_approvals_endpoints_name_who_presented_which_credential(header: str, who: str) -> None:
    assert AdminAuth(ADMIN, INTROSPECTOR, APPROVER).check_approver(request(header)) == who


@pytest.mark.parametrize("presented", [INTROSPECTOR, APPROVER + "x", "x" * 30])
def test_any_other_credential_is_403_for_approvals(presented: str) -> None:
    with pytest.raises(ForbiddenError) as info:
        AdminAuth(ADMIN, INTROSPECTOR, APPROVER).check_approver(request(f"Bearer {presented}"))

    assert info.value.message == "the presented credential is not accepted here"


@pytest.mark.parametrize("configured", [None, ""])
def test_without_an_approver_credential_only_the_admin_approves(configured: str | None) -> None:
    auth = AdminAuth(ADMIN, None, configured)

    assert auth.check_approver(request(f"Bearer {ADMIN}")) == "admin"
    with pytest.raises(ForbiddenError):
        auth.check_approver(request(f"Bearer {APPROVER}"))
