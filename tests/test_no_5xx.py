"""No input yields a 5xx; every decision with a decision_id is in the trail; records are
bounded (issue 8, samples 4, 5 and 8)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pdp.audit.verify import verify
from pdp.recordbounds import UNAUTHENTICATED_RECORD_BYTES
from tests.audit_helpers import records
from tests.boundary_helpers import (
    DECISIONS,
    allow_request,
    decision_records,
    dev_signing_key,
    json_error,
    raw_http,
    request_bytes,
    schema_error,
    sign_svid,
)
from tests.credential_helpers import (  # noqa: F401  (the *_fixture names are fixtures)
    ADMIN,
    ALLOW_EXAMPLE,
    SUPPORT_BOT,
    Client,
    Factory,
    admin,
    decide,
    introspect,
    make_pdp_fixture,
    pdp_fixture,
)

JSON = {"Content-Type": "application/json"}


def audit_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "audit"


def not_visible_ascii(header: str) -> dict[str, Any]:
    """The 400 body of a header whose bytes are not visible ASCII."""
    return {
        "allow": False,
        "error": {
            "code": "invalid_request",
            "message": f"header {header} must be visible ASCII",
            "fields": [{"path": f"/headers/{header.lower()}", "message": "must be visible ASCII"}],
        },
    }


# --------------------------------------------------------------------------- sample 4


async def test_sample_4_a_failed_disable_leaves_revoke_and_disable_working(
    pdp: Client, mint: Callable[..., str]
) -> None:
    live = (await decide(pdp, mint, ALLOW_EXAMPLE))["credential"]["token"]
    bad = b'{"spiffe_id": "' + SUPPORT_BOT.encode() + b'", "reason": "r\\ud800"}'

    resp = await pdp.post("/v1/agents/disable", data=bad, headers={**admin(), **JSON})

    assert (resp.status, await resp.json()) == (
        400,
        json_error("/reason", "contains a lone surrogate (not Unicode)"),
    )
    # every later write still works: a real revoke, a real disable
    resp = await pdp.post("/v1/credentials/revoke", data={"token": live}, headers=admin())
    assert (resp.status, await resp.json()) == (200, {"revoked": True})
    assert (await introspect(pdp, live))["active"] is False
    resp = await pdp.post(
        "/v1/agents/disable", json={"spiffe_id": SUPPORT_BOT, "reason": "ok"}, headers=admin()
    )
    assert (resp.status, (await resp.json())["status"]) == (200, "disabled")


# --------------------------------------------------------------------------- sample 5


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_sample_5_bracketed_hostname_is_a_400_not_a_500(
    pdp: Client, mint: Callable[..., str]
) -> None:
    request = allow_request(mint(SUPPORT_BOT))
    request["destination"]["url"] = "https://[jira.internal.acme]/rest"

    resp = await pdp.post(DECISIONS, json=request)

    assert (resp.status, await resp.json()) == (
        400,
        schema_error("/destination/url", "the brackets do not hold a valid IPv6 address"),
    )


async def test_sample_5_arguments_nested_300_deep_are_a_400(
    pdp: Client, mint: Callable[..., str]
) -> None:
    request = allow_request(mint(SUPPORT_BOT))
    request["action"]["arguments"] = nested(300)

    resp = await pdp.post(DECISIONS, data=json.dumps(request), headers=JSON)

    path = "/action/arguments" + "/a" * 30
    assert (resp.status, await resp.json()) == (400, json_error(path, "nesting is deeper than 32"))


async def test_sample_5_a_30_digit_integer_is_refused_not_turned_into_a_float(
    pdp: Client, mint: Callable[..., str]
) -> None:
    text = json.dumps(allow_request(mint(SUPPORT_BOT)))
    data = text.replace('"maxResults": 20', '"maxResults": 123456789012345678901234567890')

    resp = await pdp.post(DECISIONS, data=data.encode(), headers=JSON)

    assert (resp.status, await resp.json()) == (
        400,
        json_error(
            "/action/arguments/maxResults", "integers must be within +-9007199254740991 (2^53 - 1)"
        ),
    )


async def test_sample_5_a_signed_svid_with_exp_2_to_70_is_a_recorded_authn_deny(
    pdp: Client, dev_state: Path, tmp_path: Path
) -> None:
    key, kid = dev_signing_key(dev_state)
    token = sign_svid(key, kid, exp=2**70)

    resp = await pdp.post(DECISIONS, json=allow_request(token))
    body = await resp.json()

    assert (resp.status, body["allow"], [r["code"] for r in body["reasons"]]) == (
        200,
        False,
        ["authn.malformed"],
    )
    assert "credential" not in body
    [record] = decision_records(audit_dir(tmp_path))
    assert (record["decision_id"], record["identity"]["error"]) == (
        body["decision_id"],
        "authn.malformed",
    )


async def test_sample_5_raw_bytes_in_an_admin_bearer_are_a_400_and_logged(
    pdp: Client, caplog: pytest.LogCaptureFixture
) -> None:
    assert pdp.server.port is not None
    data = request_bytes(
        "GET", "/v1/agents", b"", {"Authorization": b"Bearer \xff\xfe" + ADMIN.encode()}
    )

    status, body = await raw_http("127.0.0.1", pdp.server.port, data)

    assert (status, body) == (400, not_visible_ascii("Authorization"))
    logged = [r.getMessage() for r in caplog.records if r.name == "pdp.admin"]
    assert any("admin authentication failed" in m for m in logged)
    assert not any(ADMIN in m for m in logged)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Authorization", b"Bearer \xc3\xa9t\xc3\xa9"),  # UTF-8, but not ASCII
        ("Authorization", b"Bearer \x80"),
        ("Content-Type", b"application/json; charset=\xff"),
        ("Content-Type", b"application/\xc3\xa9"),
    ],
)
async def test_header_bytes_that_are_not_visible_ascii_are_a_400_on_every_route(
    pdp: Client, name: str, value: bytes
) -> None:
    assert pdp.server.port is not None
    headers = {"Authorization": b"Bearer " + ADMIN.encode(), name: value}
    # the decision API reads no Authorization while caller authentication is off
    paths = ["/v1/credentials/revoke", "/v1/agents/disable"]
    if name != "Authorization":
        paths.append(DECISIONS)
    for path in paths:
        data = request_bytes("POST", path, b"{}", headers)

        status, body = await raw_http("127.0.0.1", pdp.server.port, data)

        assert (status, body) == (400, not_visible_ascii(name)), path


# --------------------------------------------------------------------------- sample 8


async def test_sample_8_an_unauthenticated_request_makes_a_small_record(
    pdp: Client, tmp_path: Path
) -> None:
    request = allow_request(None)
    request["action"]["arguments"] = {f"k{i}": "x" * 3900 for i in range(64)}  # ~250 KB
    request["context"] = {"pad": "y" * 1000}
    data = orjson.dumps(request)
    assert len(data) > 250_000

    resp = await pdp.post(DECISIONS, data=data, headers=JSON)
    body = await resp.json()

    assert (resp.status, body["allow"]) == (200, False)
    [line] = [
        raw
        for segment in audit_dir(tmp_path).glob("*.jsonl")
        for raw in segment.read_bytes().splitlines()
        if body["decision_id"].encode() in raw
    ]
    assert len(line) < UNAUTHENTICATED_RECORD_BYTES
    record = json.loads(line)
    arguments = record["input"]["action"]["arguments"]
    encoded = orjson.dumps(request["action"]["arguments"], option=orjson.OPT_SORT_KEYS)
    assert arguments == {
        "omitted": True,
        "sha256": hashlib.sha256(encoded).hexdigest(),
        "size": len(encoded),
    }
    assert record["input"]["context"]["omitted"] is True
    assert record["action"]["argument_keys"] == sorted(f"k{i}" for i in range(64))


async def test_an_unauthenticated_record_stays_small_whatever_the_fields_hold(
    pdp: Client, tmp_path: Path
) -> None:
    request = allow_request(None)
    request["action"]["arguments"] = {"k" * 2000 + str(i): i for i in range(64)}  # long names
    request["task"]["purpose"] = "p" * 512
    request["destination"]["url"] = "https://jira.internal.acme/" + "a" * 2000
    request["data"]["categories"] = [f"c{i}-" + "x" * 120 for i in range(32)]
    request["prompt"] = {
        "text": "t" * 100_000,
        "risk_signals": [f"r{i}" + "y" * 120 for i in range(32)],
    }  # noqa: E501

    resp = await pdp.post(DECISIONS, json=request)
    assert resp.status == 200

    sizes = [len(orjson.dumps(r)) for r in decision_records(audit_dir(tmp_path))]
    assert sizes and max(sizes) < UNAUTHENTICATED_RECORD_BYTES


async def test_an_authenticated_oversized_value_is_recorded_as_digest_and_size(
    make_pdp: Factory, mint: Callable[..., str], tmp_path: Path
) -> None:
    pdp = await make_pdp(audit_max_value_bytes=1024)
    request = allow_request(mint(SUPPORT_BOT))
    request["action"]["arguments"] = {"jql": "q" * 5000}
    request["context"] = {"small": 1}

    resp = await pdp.post(DECISIONS, json=request)
    body = await resp.json()
    assert (resp.status, body["allow"]) == (200, True)

    [record] = decision_records(audit_dir(tmp_path))
    assert record["input"]["action"]["arguments"]["omitted"] is True
    assert record["input"]["action"]["arguments"]["size"] == len(orjson.dumps({"jql": "q" * 5000}))
    assert record["input"]["context"] == {"small": 1}  # under the bound: kept as is


# --------------------------------------------------------------------------- the trail


async def test_an_internal_error_is_a_500_whose_decision_is_in_the_trail(
    pdp: Client, mint: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr("pdp.decision.answer", broken)

    resp = await pdp.post(DECISIONS, json=allow_request(mint(SUPPORT_BOT)))
    body = await resp.json()

    assert resp.status == 500
    assert body == {
        "allow": False,
        "decision_id": body["decision_id"],
        "error": {
            "code": "internal",
            "message": "internal error; the decision is recorded as a deny",
        },
    }
    [record] = decision_records(audit_dir(tmp_path))
    assert record["decision_id"] == body["decision_id"]
    assert record["decision"] == {
        "status": 500,
        "allow": False,
        "reasons": [
            {
                "code": "internal_error",
                "message": "the PDP failed to decide; denied",
                "rule": "pdp",
                "controls": [],
            }
        ],
        "obligations": {},
        "error": "internal error (KeyError)",
    }
    assert record["credential"] is None
    assert verify(audit_dir(tmp_path)).problem is None


async def test_every_answered_decision_id_is_in_the_trail(
    pdp: Client, mint: Callable[..., str], tmp_path: Path
) -> None:
    answered = []
    for token in (mint(SUPPORT_BOT), None, "garbage", mint(SUPPORT_BOT, audience="other")):
        resp = await pdp.post(DECISIONS, json=allow_request(token))
        assert resp.status == 200
        answered.append((await resp.json())["decision_id"])

    recorded = [r["decision_id"] for r in records(audit_dir(tmp_path)) if "decision_id" in r]
    assert recorded == answered
    assert verify(audit_dir(tmp_path)).problem is None
