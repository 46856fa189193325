"""The AuthZEN front door end to end: the app on a real OPA (the shipped agent library and
the interop search scenario), through the real HTTP surface."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from pdp.adapters.authzen import ENDPOINTS
from pdp.bundle import build_bundle

from .conftest import ROOT, ClientFactory, load_example
from .http_helpers import is_uuid, metric
from .opa_process import OPAProcess

pytestmark = pytest.mark.opa

Client = TestClient[Any, Any]
ALLOW = load_example(ROOT / "examples/requests/allow-support-bot-jira-search.json")
DENY = load_example(ROOT / "examples/requests/deny-tenant-mismatch.json")


def to_authzen(example: dict[str, Any], token: str | None) -> dict[str, Any]:
    """An example decision request expressed as an AuthZEN agent evaluation."""
    req = example["request"]
    props: dict[str, Any] = {}
    if token is not None:
        props["token"] = token
    if "on_behalf_of" in req.get("agent", {}):
        props["on_behalf_of"] = req["agent"]["on_behalf_of"]
    action = req["action"]
    dest = req["destination"]
    rprops = {k: dest[k] for k in ("url", "environment") if k in dest}
    rprops.update(req.get("data", {}))
    context = dict(req.get("context", {}))
    context.update({k: req[k] for k in ("tenant", "task", "prompt") if k in req})
    return {
        "subject": {"type": "agent", "id": example["spiffe_id"], "properties": props},
        "action": {
            "name": action["name"],
            "properties": {k: action[k] for k in ("type", "operation", "arguments") if k in action},
        },
        "resource": {"type": dest["type"], "id": dest["name"], "properties": rprops},
        "context": context,
    }


@pytest.fixture
async def client(make_client: ClientFactory, shared_opa: OPAProcess) -> Client:
    return await make_client(shared_opa.url, opa_timeout_ms=2000)


async def post(client: Client, path: str, body: Any, **headers: str) -> tuple[int, Any]:
    resp = await client.post(path, json=body, headers=headers)
    assert resp.content_type == "application/json"
    return resp.status, await resp.json()


async def json_api(client: Client, example: dict[str, Any], token: str) -> dict[str, Any]:
    request = copy.deepcopy(example["request"])
    request.setdefault("agent", {})["token"] = token
    resp = await client.post("/v1/decisions", json=request)
    body: dict[str, Any] = await resp.json()
    return body


# --------------------------------------------------------------------------- agent traffic


async def test_agent_allow_is_a_bare_true_decision(
    client: Client, mint: Callable[..., str]
) -> None:
    status, body = await post(
        client, "/access/v1/evaluation", to_authzen(ALLOW, mint(ALLOW["spiffe_id"]))
    )
    assert (status, body) == (200, {"decision": True})


@pytest.mark.parametrize(
    "example",
    [ALLOW, DENY, *[load_example(p) for p in sorted((ROOT / "examples/requests").glob("*.json"))]],
    ids=lambda e: e["description"][:40],
)
async def test_agent_evaluation_decides_as_the_json_api_does(
    client: Client, mint: Callable[..., str], example: dict[str, Any]
) -> None:
    if example["spiffe_id"] is None or example["request"]["action"].get("name") is None:
        pytest.skip("AuthZEN needs a subject and an action name")
    token = mint(example["spiffe_id"])
    options = {"agent_pdp": {"explain": True}}
    status, body = await post(
        client, "/access/v1/evaluation", {**to_authzen(example, token), "options": options}
    )
    reference = await json_api(client, example, token)
    assert status == 200
    assert body["decision"] is reference["allow"] is example["expect"]["allow"]
    assert [r["code"] for r in body["context"]["reasons"]] == [
        r["code"] for r in reference["reasons"]
    ]
    assert is_uuid(body["context"]["decision_id"])
    assert body["context"]["decision_id"] != reference["decision_id"]


async def test_agent_deny_carries_decision_id_and_reasons_unasked(
    client: Client, mint: Callable[..., str]
) -> None:
    status, body = await post(
        client, "/access/v1/evaluation", to_authzen(DENY, mint(DENY["spiffe_id"]))
    )
    assert status == 200 and body["decision"] is False
    assert is_uuid(body["context"]["decision_id"])
    assert [r["code"] for r in body["context"]["reasons"]] == DENY["expect"]["reasons"]


async def test_agent_without_token_is_denied_with_its_authn_reason(client: Client) -> None:
    status, body = await post(client, "/access/v1/evaluation", to_authzen(ALLOW, None))
    assert status == 200 and body["decision"] is False
    assert [r["code"] for r in body["context"]["reasons"]] == ["authn.token_missing"]


async def test_agent_with_a_forged_token_is_denied(
    client: Client, mint: Callable[..., str]
) -> None:
    token = mint(ALLOW["spiffe_id"])
    head, payload, sig = token.split(".")
    forged = ".".join([head, payload, sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")])
    status, body = await post(client, "/access/v1/evaluation", to_authzen(ALLOW, forged))
    assert status == 200 and body["decision"] is False
    assert body["context"]["reasons"][0]["code"].startswith("authn.")


async def test_agent_subject_id_must_be_the_tokens_spiffe_id(
    client: Client, mint: Callable[..., str]
) -> None:
    request = to_authzen(ALLOW, mint("spiffe://acme.example/agents/research-bot"))
    status, body = await post(client, "/access/v1/evaluation", request)
    assert status == 400
    assert isinstance(body, str) and "/subject/id" in body


async def test_credential_travels_in_context_only_when_asked(
    client: Client, mint: Callable[..., str]
) -> None:
    request = to_authzen(ALLOW, mint(ALLOW["spiffe_id"]))
    request["options"] = {"agent_pdp": {"credential": True}}
    status, body = await post(client, "/access/v1/evaluation", request)
    assert status == 200 and body["decision"] is True
    credential = body["context"]["credential"]
    claims = jwt.decode(credential["token"], options={"verify_signature": False})
    assert claims["sub"] == ALLOW["spiffe_id"]
    assert claims["aud"] == "jira"
    assert claims["scope"] == "tool.call:jira.search_issues:read"
    assert is_uuid(body["context"]["decision_id"])


async def test_agent_mapping_errors_name_the_authzen_field(
    client: Client, mint: Callable[..., str]
) -> None:
    request = to_authzen(ALLOW, mint(ALLOW["spiffe_id"]))
    del request["action"]["properties"]["type"]
    del request["context"]["tenant"]
    status, body = await post(client, "/access/v1/evaluation", request)
    assert status == 400
    assert "/action/properties/type is required" in body
    assert "/context/tenant is required" in body


async def test_asserted_subject_is_denied_by_the_agent_library(client: Client) -> None:
    request = {
        "subject": {"type": "user", "id": "alice@acme.example", "properties": {"token": "x"}},
        "action": {"name": "jira.search_issues"},
        "resource": {"type": "tool", "id": "jira"},
        "options": {"agent_pdp": {"explain": True, "credential": True}},
    }
    status, body = await post(client, "/access/v1/evaluation", request)
    assert status == 200 and body["decision"] is False
    assert "credential" not in body["context"]
    assert body["context"]["reasons"]


async def test_each_evaluation_is_one_recorded_decision(
    client: Client, mint: Callable[..., str]
) -> None:
    before = metric(await (await client.get("/metrics")).text(), "pdp_decisions_total")
    token = mint(ALLOW["spiffe_id"])
    one = to_authzen(ALLOW, token)
    await post(client, "/access/v1/evaluation", one)
    await post(client, "/access/v1/evaluations", {"evaluations": [one, one, one]})
    after = metric(await (await client.get("/metrics")).text(), "pdp_decisions_total")
    assert after - before == 4


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"action": {"name": "a"}, "resource": {"type": "t", "id": "1"}}, "/subject is required"),
        (
            {
                "subject": {"type": "user"},
                "action": {"name": "a"},
                "resource": {"type": "t", "id": "1"},
            },
            "/subject/id is required",
        ),
        (
            {
                "subject": {"type": "user", "id": "u"},
                "action": {},
                "resource": {"type": "t", "id": "1"},
            },
            "/action/name is required",
        ),
        (
            {
                "subject": {"type": "user", "id": 7},
                "action": {"name": "a"},
                "resource": {"type": "t", "id": "1"},
            },
            "/subject/id must be of type string",
        ),
        (
            {
                "subject": {"type": "u", "id": "u"},
                "action": {"name": "a"},
                "resource": {"type": "t", "id": "1"},
                "context": [],
            },
            "/context must be of type object",
        ),
        ([1, 2], "body must be a JSON object"),
    ],
)
async def test_malformed_evaluation_is_a_400_with_a_message_string(
    client: Client, body: Any, needle: str
) -> None:
    status, answer = await post(client, "/access/v1/evaluation", body, **{"X-Request-ID": "r-1"})
    assert status == 400
    assert isinstance(answer, str) and needle in answer


async def test_invalid_json_and_media_type_are_refused(client: Client) -> None:
    resp = await client.post(
        "/access/v1/evaluation", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400 and isinstance(await resp.json(), str)
    resp = await client.post(
        "/access/v1/evaluation", data=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert resp.status == 415


async def test_unknown_members_are_ignored_not_refused(client: Client) -> None:
    body = {
        "subject": {"type": "user", "id": "u", "identity": "x"},
        "action": {"name": "a", "extra": 1},
        "resource": {"type": "t", "id": "1", "ownerID": "u"},
        "future_member": True,
    }
    status, answer = await post(client, "/access/v1/evaluation", body)
    assert (status, answer) == (200, {"decision": False})


async def test_x_request_id_is_echoed_on_answers_and_errors(client: Client) -> None:
    ok = {
        "subject": {"type": "u", "id": "u"},
        "action": {"name": "a"},
        "resource": {"type": "t", "id": "1"},
    }
    for path, body, status in [
        ("/access/v1/evaluation", ok, 200),
        ("/access/v1/evaluation", {}, 400),
        ("/access/v1/evaluations", {"evaluations": [ok]}, 200),
        ("/access/v1/search/action", {"subject": ok["subject"], "resource": ok["resource"]}, 200),
    ]:
        resp = await client.post(path, json=body, headers={"X-Request-ID": "bfe9eb29-ab87"})
        assert resp.status == status
        assert resp.headers["X-Request-ID"] == "bfe9eb29-ab87"
    resp = await client.post("/access/v1/evaluation", json=ok)
    assert "X-Request-ID" not in resp.headers


async def test_engine_down_is_a_503_and_an_item_error(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    client = await make_client(f"unix://{tmp_path}/no-opa.sock")
    ok = {
        "subject": {"type": "u", "id": "u"},
        "action": {"name": "a"},
        "resource": {"type": "t", "id": "1"},
    }
    status, body = await post(client, "/access/v1/evaluation", ok)
    assert status == 503 and isinstance(body, str)
    status, body = await post(client, "/access/v1/evaluations", {"evaluations": [ok, ok]})
    assert status == 200
    for item in body["evaluations"]:
        assert item["decision"] is False
        assert item["context"]["error"]["status"] == 503
        assert is_uuid(item["context"]["decision_id"])
    status, body = await post(
        client, "/access/v1/search/subject", {**ok, "subject": {"type": "user"}}
    )
    assert status == 503


# --------------------------------------------------------------------------- metadata


async def test_metadata_lists_exactly_the_served_endpoints(client: Client) -> None:
    resp = await client.get("/.well-known/authzen-configuration")
    assert resp.status == 200 and resp.content_type == "application/json"
    body = await resp.json()
    base = f"http://{client.host}:{client.port}"
    assert body == {"policy_decision_point": base, **{k: base + p for k, p in ENDPOINTS.items()}}
    for url in list(body.values())[1:]:
        served = await client.post(url.removeprefix(base), json={})
        assert served.status == 400  # routed and validated: not 404/405


# --------------------------------------------------------------------------- search scenario


@pytest.fixture(scope="module")
def search_opa(opa_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OPAProcess]:
    tmp = tmp_path_factory.mktemp("authzen-search")
    built = build_bundle(opa_bin, ROOT / "examples/authzen/search", tmp / "bundle.tar.gz")
    opa = OPAProcess(opa_bin, tmp / "opa.sock", "--bundle", str(built.path)).start()
    yield opa
    opa.stop()


@pytest.fixture
async def records(make_client: ClientFactory, search_opa: OPAProcess) -> Client:
    return await make_client(search_opa.url, opa_timeout_ms=2000)


ALICE = {"type": "user", "id": "alice"}
RECORD = {"type": "record", "id": "101"}  # alice's own record


def evaluation(action: str, record: str) -> dict[str, Any]:
    return {"action": {"name": action}, "resource": {"type": "record", "id": record}}


async def test_evaluations_inherit_defaults_and_answer_in_order(records: Client) -> None:
    body = {
        "subject": {"type": "user", "id": "bob"},
        "action": {"name": "edit"},
        "evaluations": [
            {"resource": {"type": "record", "id": "101"}},  # alice's, Legal: bob may not edit
            {"resource": {"type": "record", "id": "102"}},  # bob's own
            {"action": {"name": "view"}, "resource": {"type": "record", "id": "101"}},
            {"subject": ALICE, "resource": RECORD},
        ],
    }
    status, answer = await post(records, "/access/v1/evaluations", body)
    assert status == 200
    assert answer == {
        "evaluations": [
            {"decision": False},
            {"decision": True},
            {"decision": True},
            {"decision": True},
        ]
    }


async def test_evaluations_context_default_is_replaced_per_item(records: Client) -> None:
    body = {
        "subject": ALICE,
        "context": {"time": "t0"},
        "options": {"agent_pdp": {"explain": True}},
        "evaluations": [evaluation("view", "101"), {**evaluation("view", "101"), "context": {}}],
    }
    status, answer = await post(records, "/access/v1/evaluations", body)
    assert status == 200 and [a["decision"] for a in answer["evaluations"]] == [True, True]


@pytest.mark.parametrize(
    ("semantic", "expected"),
    [
        ("execute_all", [True, False, True, False]),
        ("deny_on_first_deny", [True, False]),
        ("permit_on_first_permit", [True]),
    ],
)
async def test_evaluations_semantics_short_circuit(
    records: Client, semantic: str, expected: list[bool]
) -> None:
    body = {
        "subject": {"type": "user", "id": "bob"},
        "options": {"evaluations_semantic": semantic},
        "evaluations": [
            evaluation("view", "102"),
            evaluation("edit", "101"),
            evaluation("view", "103"),
            evaluation("delete", "101"),
        ],
    }
    status, answer = await post(records, "/access/v1/evaluations", body)
    assert status == 200
    assert [a["decision"] for a in answer["evaluations"]] == expected


async def test_permit_on_first_permit_stops_after_a_leading_deny_then_permit(
    records: Client,
) -> None:
    body = {
        "subject": {"type": "user", "id": "bob"},
        "options": {"evaluations_semantic": "permit_on_first_permit"},
        "evaluations": [evaluation("edit", "101"), evaluation("view", "102"), evaluation("x", "1")],
    }
    _, answer = await post(records, "/access/v1/evaluations", body)
    assert [a["decision"] for a in answer["evaluations"]] == [False, True]


@pytest.mark.parametrize(
    "body",
    [
        {"evaluations": [{"subject": ALICE, "action": {"name": "view"}}]},
        {"subject": ALICE, "evaluations": [{"resource": RECORD}]},
        {
            "options": {"evaluations_semantic": "some_of_them"},
            "subject": ALICE,
            "action": {"name": "v"},
            "resource": RECORD,
        },
    ],
)
async def test_evaluations_without_a_required_key_or_with_a_bad_option_are_400(
    records: Client, body: dict[str, Any]
) -> None:
    status, answer = await post(records, "/access/v1/evaluations", body)
    assert status == 400 and isinstance(answer, str)


async def test_evaluations_without_an_array_answer_one_decision(records: Client) -> None:
    body = {"subject": ALICE, "action": {"name": "view"}, "resource": RECORD, "evaluations": []}
    assert await post(records, "/access/v1/evaluations", body) == (200, {"decision": True})


async def test_search_pages_through_the_whole_result_set(records: Client) -> None:
    request = {
        "subject": {"type": "user", "id": "alice"},
        "action": {"name": "view"},
        "resource": {"type": "record"},
    }
    _, everything = await post(records, "/access/v1/search/resource", request)
    assert "page" not in everything and len(everything["results"]) > 5
    seen: list[dict[str, Any]] = []
    page: dict[str, Any] = {"limit": 2}
    for _ in range(50):
        status, body = await post(records, "/access/v1/search/resource", {**request, "page": page})
        assert status == 200
        assert body["page"]["count"] == len(body["results"]) <= 2
        seen += body["results"]
        if body["page"]["next_token"] == "":
            break
        page = {"limit": 2, "token": body["page"]["next_token"]}
    assert seen == everything["results"]


async def test_search_token_is_bound_to_its_request(records: Client) -> None:
    request = {
        "subject": ALICE,
        "action": {"name": "view"},
        "resource": {"type": "record"},
        "page": {"limit": 1},
    }
    _, first = await post(records, "/access/v1/search/resource", request)
    token = first["page"]["next_token"]
    assert token
    changed = {**request, "action": {"name": "edit"}, "page": {"limit": 1, "token": token}}
    status, body = await post(records, "/access/v1/search/resource", changed)
    assert status == 400 and "/page/token" in body
    for bad in ["%%%", "bm9wZQ", token[:-2]]:
        status, _ = await post(
            records, "/access/v1/search/resource", {**request, "page": {"limit": 1, "token": bad}}
        )
        assert status == 400


async def test_search_ignores_the_searched_entitys_id(records: Client) -> None:
    request = {
        "subject": {"type": "user", "id": "nobody"},
        "action": {"name": "edit"},
        "resource": {"type": "record", "id": "101"},
    }
    status, body = await post(records, "/access/v1/search/subject", request)
    assert (status, body) == (200, {"results": [{"type": "user", "id": "alice"}]})


async def test_search_of_a_type_without_candidates_is_empty(records: Client) -> None:
    request = {"subject": ALICE, "action": {"name": "view"}, "resource": {"type": "spaceship"}}
    assert await post(records, "/access/v1/search/resource", request) == (200, {"results": []})


async def test_agent_needing_approval_gets_the_pending_approval_in_context(
    client: Client, mint: Callable[..., str]
) -> None:
    vault = load_example(
        ROOT / "examples/requests/deny-finance-analyst-vault-secret-approval-required.json"
    )
    status, body = await post(
        client, "/access/v1/evaluation", to_authzen(vault, mint(vault["spiffe_id"]))
    )
    assert status == 200 and body["decision"] is False
    assert [r["code"] for r in body["context"]["reasons"]] == ["approval_required"]
    assert body["context"]["approval"]["status"] == "pending"
    assert body["context"]["approval"]["id"]
