"""An approval is bound to the call's context too (outside review, red team).

``context`` reaches policy as ``input.context``, so it is decision-relevant, and at the
ext_authz doors it is what names the real call (``context.http``: the original method, host
and path). A grant for ``GET /v1/secret/data/payroll/db-readonly`` through a route covering
``/v1/secret/data/payroll/**`` must not open ``/v1/secret/data/payroll/db-admin``; a grant
for one JSON-API context must not be used with another.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pdp.approvals import Binding, Unbindable
from tests.credential_helpers import (  # noqa: F401  (the *_fixture names are fixtures)
    ADMIN,
    Client,
    Factory,
    admin,
    make_pdp_fixture,
)
from tests.test_approvals import FINANCE, VAULT, act, codes, decide, request_for

from .conftest import ROOT

ROUTES = ROOT / "examples" / "gateways" / "routes.yaml"
PAYROLL = "/v1/secret/data/payroll/"
#: The example route file with the vault route covering every payroll secret.
WIDE = ROUTES.read_text().replace(
    "path: /v1/secret/data/payroll/db-readonly\n", "path: /v1/secret/data/payroll/**\n"
)


@pytest.fixture
async def gateway_pdp(make_pdp: Factory, tmp_path: Path) -> Client:
    routes = tmp_path / "routes.yaml"
    routes.write_text(WIDE)
    return await make_pdp(ext_authz_routes=routes)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.opa
async def test_ext_authz_a_grant_for_one_path_does_not_open_another_path_of_the_route(
    gateway_pdp: Client, mint: Callable[..., str]
) -> None:
    svid = mint(FINANCE)
    first = await gateway_pdp.get("/ext_authz" + PAYROLL + "db-readonly", headers=bearer(svid))
    assert first.status == 403
    approval_id = (await first.json())["approval"]["id"]
    granted = await gateway_pdp.post(
        f"/v1/approvals/{approval_id}/grant", json={}, headers=admin(ADMIN)
    )
    assert granted.status == 200

    other = await gateway_pdp.get(
        "/ext_authz" + PAYROLL + "db-admin",
        headers={**bearer(svid), "x-pdp-approval-id": approval_id},
    )

    assert other.status == 403
    assert "approval_mismatch" in [r["code"] for r in (await other.json())["reasons"]]
    same = await gateway_pdp.get(
        "/ext_authz" + PAYROLL + "db-readonly",
        headers={**bearer(svid), "x-pdp-approval-id": approval_id},
    )
    assert same.status == 200  # the use was not taken by the refused call


@pytest.mark.opa
async def test_ext_authz_another_path_asks_for_its_own_approval(
    gateway_pdp: Client, mint: Callable[..., str]
) -> None:
    svid = mint(FINANCE)
    ids = set()
    for name in ("db-readonly", "db-admin"):
        resp = await gateway_pdp.get("/ext_authz" + PAYROLL + name, headers=bearer(svid))
        ids.add((await resp.json())["approval"]["id"])
    assert len(ids) == 2


@pytest.mark.opa
@pytest.mark.parametrize(
    "context",
    [
        {"ticket": "CHG-2"},
        {"ticket": "CHG-1", "extra": True},
        {},
        None,
    ],
)
async def test_json_api_a_grant_is_bound_to_the_context(
    make_pdp: Factory, mint: Callable[..., str], context: dict[str, Any] | None
) -> None:
    pdp = await make_pdp()
    req = request_for(VAULT, mint(FINANCE), context={"ticket": "CHG-1"})
    body = await decide(pdp, req)
    approval_id = body["approval"]["id"]
    await act(pdp, approval_id, "grant", token=ADMIN)
    other = copy.deepcopy(req)
    if context is None:
        other.pop("context")
    else:
        other["context"] = context

    denied = await decide(pdp, {**other, "approval_id": approval_id})

    assert (denied["allow"], "credential" in denied) == (False, False)
    assert "approval_mismatch" in codes(denied)
    assert (await decide(pdp, {**req, "approval_id": approval_id}))["allow"] is True


async def test_the_approver_sees_the_context_digest(
    make_pdp: Factory, mint: Callable[..., str]
) -> None:
    pdp = await make_pdp()
    req = request_for(VAULT, mint(FINANCE), context={"ticket": "CHG-1"})
    approval_id = (await decide(pdp, req))["approval"]["id"]
    resp = await pdp.get(f"/v1/approvals/{approval_id}", headers=admin(ADMIN))
    shown = (await resp.json())["binding"]
    assert shown["context_digest"] == Binding.of(req, FINANCE).context_digest
    assert shown["context_digest"] != Binding.of({**req, "context": {}}, FINANCE).context_digest


def test_a_context_whose_numbers_parsing_may_have_rounded_is_unbindable() -> None:
    req = request_for(VAULT, "t", context={"n": 1e23})
    with pytest.raises(Unbindable):
        Binding.of(req, FINANCE)
    # an absent and an empty context are the same call (the normaliser reads both as {})
    plain = request_for(VAULT, "t")
    plain.pop("context", None)
    assert Binding.of(plain, FINANCE) == Binding.of({**plain, "context": {}}, FINANCE)
