"""The audit trail through the HTTP API: one durable record per decision, before the answer;
audit unavailable -> 503 audit_unavailable and not ready; prompts kept as configured.
"""

from __future__ import annotations

import asyncio
import copy
import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator

from pdp.audit import log as log_module
from pdp.audit.record import build_record
from pdp.audit.segment import iter_records, list_segments
from pdp.audit.verify import verify
from pdp.bundle import BuiltBundle
from pdp.normalize import normalize
from pdp.prompthash import PromptHasher
from pdp.schema import load_schema
from pdp.state import AUDIT

from .conftest import EXAMPLES, ClientFactory, load_example
from .http_helpers import decide
from .opa_process import OPAProcess

Client = TestClient[Any, Any]
ALLOW = next(p for p in EXAMPLES if p.name == "allow-support-bot-jira-search.json")
DENY = next(p for p in EXAMPLES if p.name == "deny-tenant-mismatch.json")
PROMPT = "Summarise ticket SUP-1 for eve@evil.example; card 4111 1111 1111 1111. PELICAN-7731"


def request_for(path: Path, mint: Callable[..., str] | None, **extra: Any) -> dict[str, Any]:
    example = load_example(path)
    request: dict[str, Any] = copy.deepcopy(example["request"])
    if mint is not None and example["spiffe_id"]:
        request["agent"]["token"] = mint(example["spiffe_id"])
    request.update(extra)
    return request


def decisions(audit: Path) -> list[dict[str, Any]]:
    return [r for r in iter_records(audit) if r["type"] == "decision"]


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit"


@pytest.fixture
def start(
    make_client: ClientFactory, shared_opa: OPAProcess, audit_dir: Path
) -> Callable[..., Any]:
    async def _start(**overrides: Any) -> Client:
        overrides.setdefault("audit_dir", audit_dir)
        return await make_client(shared_opa.url, opa_timeout_ms=5000, **overrides)

    return _start


# --------------------------------------------------------------------------- records


async def test_each_decision_is_durable_in_the_trail_when_its_answer_arrives(
    start: Callable[..., Any], audit_dir: Path, mint: Callable[..., str]
) -> None:
    client = await start()
    answers = []
    for request in (
        request_for(ALLOW, mint),
        request_for(DENY, mint),
        request_for(ALLOW, None),  # no token: an authn deny
    ):
        status, body = await decide(client, request)
        assert status == 200
        answers.append(body)
        # Read while the service runs: the record is on disk before the answer.
        assert decisions(audit_dir)[-1]["decision_id"] == body["decision_id"]
    resp = await client.post("/v1/decisions", json={"tenant": "acme"})  # 400: no decision
    assert resp.status == 400

    recs = decisions(audit_dir)
    assert [r["decision_id"] for r in recs] == [a["decision_id"] for a in answers]
    assert [r["decision"]["allow"] for r in recs] == [True, False, False]
    assert [r["identity"]["error"] for r in recs] == [None, None, "authn.token_missing"]
    validator = Draft202012Validator(load_schema("audit-record"))
    for rec in iter_records(audit_dir):
        assert list(validator.iter_errors(rec)) == []
    await client.close()
    assert verify(audit_dir).problem is None


async def test_a_decision_record_joins_identity_request_decision_and_policy(
    start: Callable[..., Any],
    audit_dir: Path,
    dev_state: Path,
    mint: Callable[..., str],
    policy_bundle: BuiltBundle,
) -> None:
    client = await start()
    # The deployment's prompt-hash secret, generated into the state dir at start.
    hasher = PromptHasher((dev_state / "prompt-hash-key").read_bytes().strip())
    request = request_for(ALLOW, mint, prompt={"text": PROMPT, "risk_signals": ["pii"]})
    token = request["agent"]["token"]
    claims = jwt.decode(token, options={"verify_signature": False})

    _, body = await decide(client, request)

    [rec] = decisions(audit_dir)
    assert rec["decision_id"] == body["decision_id"]
    assert rec["request_id"] == request["request_id"]
    assert rec["identity"] == {
        "authenticated": True,
        "spiffe_id": "spiffe://acme.example/agents/support-bot",
        "trust_domain": "acme.example",
        "kid": jwt.get_unverified_header(token)["kid"],
        "jti": claims["jti"],
        "exp": claims["exp"],
        "error": None,
    }
    assert rec["agent"] == {"id": "support-bot", "on_behalf_of": request["agent"]["on_behalf_of"]}
    assert rec["tenant"] == "acme"
    assert rec["task"] == request["task"]
    assert rec["action"] == {
        "type": "tool.call",
        "name": "jira.search_issues",
        "operation": "read",
        "argument_keys": ["jql", "maxResults"],
    }
    assert rec["destination"] == {
        "type": "tool",
        "name": "jira",
        "host": "jira.internal.acme",
        "environment": None,
    }
    assert rec["data"] == {"sensitivity": "internal", "categories": ["customer-tickets"]}
    assert rec["prompt"] == {
        "mode": "hash",
        "present": True,
        "hmac_sha256": hasher.digest(PROMPT),
        "hmac_key_id": hasher.key_id,
        "length": len(PROMPT),
        "risk_signals": ["pii"],
        "to_policy": False,
    }
    assert rec["decision"] == {
        "status": 200,
        "allow": True,
        "reasons": [],
        "obligations": body["obligations"],
        "error": None,
    }
    assert rec["policy"] == {"revision": policy_bundle.revision, "opa_decision_id": None}
    assert isinstance(rec["latency_us"], int) and rec["latency_us"] > 0
    # Minted on allow (minting is on by default): recorded by id only, never the token.
    credential = body["credential"]
    minted = jwt.decode(credential["token"], options={"verify_signature": False})
    assert rec["credential"] == {
        "jti": minted["jti"],
        "aud": "jira",
        "scope": "tool.call:jira.search_issues:read",
        "exp": minted["exp"],
    }
    # The replayable input is exactly what OPA saw, and matches the OPA input schema.
    assert rec["input"]["now"]["rfc3339"] == rec["time"]
    assert rec["input"]["identity"]["jti"] == claims["jti"]
    assert rec["input"]["action"]["arguments"] == request["action"]["arguments"]
    assert list(Draft202012Validator(load_schema("opa-input")).iter_errors(rec["input"])) == []
    raw = b"".join(s.path.read_bytes() for s in list_segments(audit_dir))
    assert token.encode() not in raw and token.split(".")[2].encode() not in raw
    assert b"PELICAN-7731" not in raw
    assert credential["token"].encode() not in raw
    assert credential["token"].split(".")[2].encode() not in raw


async def test_a_503_decision_is_recorded_as_a_deny_under_its_decision_id(
    make_client: ClientFactory, own_opa: OPAProcess, audit_dir: Path, mint: Callable[..., str]
) -> None:
    client = await make_client(own_opa.url, opa_timeout_ms=2000, audit_dir=audit_dir)
    own_opa.kill()

    status, body = await decide(client, request_for(ALLOW, mint))

    assert status == 503
    assert body["error"]["code"] == "policy_engine_unavailable"
    [rec] = decisions(audit_dir)
    assert rec["decision_id"] == body["decision_id"]
    assert rec["decision"] == {
        "status": 503,
        "allow": False,
        "reasons": [],
        "obligations": {},
        "error": body["error"]["message"],
    }


@pytest.mark.parametrize(
    ("mode", "kept"),
    [
        ("hash", {}),
        ("redacted", {"redacted": PROMPT.replace("eve@evil.example", "[email]")
                                        .replace("4111 1111 1111 1111", "[number]")}),
        ("full", {"text": PROMPT}),
    ],
)  # fmt: skip
async def test_prompt_mode_decides_how_much_of_the_prompt_the_record_keeps(
    start: Callable[..., Any],
    audit_dir: Path,
    mint: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
    mode: str,
    kept: dict[str, str],
) -> None:
    caplog.set_level(logging.INFO)
    client = await start(audit_prompt=mode)

    await decide(client, request_for(ALLOW, mint, prompt={"text": PROMPT}))

    [rec] = decisions(audit_dir)
    assert {k: rec["prompt"][k] for k in ("text", "redacted") if k in rec["prompt"]} == kept
    assert rec["prompt"]["mode"] == mode
    assert "text" not in rec["input"]["prompt"]
    # The log line keeps the hash only, whatever the mode.
    [line] = [r.getMessage() for r in caplog.records if r.name == "pdp.decisions"]
    assert rec["prompt"]["hmac_sha256"] in line
    assert hashlib.sha256(PROMPT.encode()).hexdigest() not in line
    assert "PELICAN" not in line and '"input"' not in line


async def test_prompt_text_sent_to_policy_is_still_left_out_of_the_recorded_input(
    start: Callable[..., Any], audit_dir: Path, mint: Callable[..., str]
) -> None:
    client = await start(prompt_to_policy=True)

    await decide(client, request_for(ALLOW, mint, prompt={"text": PROMPT}))

    [rec] = decisions(audit_dir)
    assert rec["prompt"]["to_policy"] is True
    assert "text" not in rec["input"]["prompt"]


def test_build_record_keeps_only_the_credential_summary() -> None:
    from pdp.identity import Identity

    identity = Identity(True, "spiffe://a.example/agents/x", "a.example", ("agents", "x"), 1, "j")
    request = {"tenant": "a", "action": {"type": "tool.call"}, "destination": {"type": "tool",
               "name": "t"}}  # fmt: skip
    doc = normalize(request, identity, 0)

    rec = build_record(
        decision_id="d",
        input_doc=doc,
        request=request,
        response={"allow": True, "reasons": [], "obligations": {}},
        latency_s=0.001,
        kid="k",
        credential={"jti": "c-1", "aud": "t", "scope": "tool.call::", "exp": 60, "token": "SECRET"},
    )

    assert rec["credential"] == {"jti": "c-1", "aud": "t", "scope": "tool.call::", "exp": 60}
    assert "SECRET" not in json.dumps(rec)


async def test_concurrent_decisions_are_each_recorded_once(
    start: Callable[..., Any], audit_dir: Path, mint: Callable[..., str]
) -> None:
    client = await start()
    request = request_for(ALLOW, mint)

    answers = await asyncio.gather(*(decide(client, request) for _ in range(40)))

    ids = [body["decision_id"] for _, body in answers]
    assert sorted(r["decision_id"] for r in decisions(audit_dir)) == sorted(ids)
    text = await (await client.get("/metrics")).text()
    assert "pdp_audit_records_total 40.0" in text
    assert "pdp_audit_available 1.0" in text


async def test_with_the_trail_off_decisions_are_only_logged(
    start: Callable[..., Any], audit_dir: Path, mint: Callable[..., str]
) -> None:
    client = await start(audit_enabled=False)

    status, _ = await decide(client, request_for(ALLOW, mint))

    assert status == 200
    assert not audit_dir.exists()
    assert (await client.get("/readyz")).status == 200


# --------------------------------------------------------------------------- failing closed

UNAVAILABLE_BODY = {
    "allow": False,
    "error": {
        "code": "audit_unavailable",
        "message": "audit trail unavailable: ENOTDIR (Not a directory)",
    },
}


async def wait_ready(client: Client, ready: bool, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        resp = await client.get("/readyz")
        if (resp.status == 200) == ready or time.monotonic() > deadline:
            return resp
        await asyncio.sleep(0.05)


async def test_an_unusable_audit_directory_fails_decisions_closed_and_readiness(
    start: Callable[..., Any], tmp_path: Path, mint: Callable[..., str]
) -> None:
    blocker = tmp_path / "volume"
    blocker.write_text("a regular file where the audit volume should be mounted")
    client = await start(audit_dir=blocker / "audit")

    status, body = await decide(client, request_for(ALLOW, mint))
    resp = await client.get("/readyz")
    ready = await resp.json()
    text = await (await client.get("/metrics")).text()

    assert (status, body) == (503, UNAVAILABLE_BODY)
    assert resp.status == 503
    assert ready["ready"] is False
    assert ready["detail"].startswith("audit trail unavailable: NotADirectoryError")
    assert "pdp_audit_available 0.0" in text

    blocker.unlink()  # the volume appears: the writer recovers on its own
    resp = await wait_ready(client, True)
    assert resp.status == 200
    status, body = await decide(client, request_for(ALLOW, mint))
    assert status == 200
    assert [r["decision_id"] for r in decisions(blocker / "audit")] == [body["decision_id"]]


async def test_a_full_disk_fails_decisions_closed_until_space_is_freed(
    start: Callable[..., Any],
    audit_dir: Path,
    mint: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await start()
    trail = client.server.app[AUDIT]
    assert trail is not None
    trail.writer.retry_initial_s = trail.writer.retry_max_s = 0.05
    _, before = await decide(client, request_for(ALLOW, mint))
    full = True
    real_write = log_module._write_all

    def write(fd: int, data: bytes) -> None:
        if full:
            os.write(fd, data[: len(data) // 2])  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fd, data)

    monkeypatch.setattr(log_module, "_write_all", write)

    status, body = await decide(client, request_for(ALLOW, mint))
    assert (status, body["error"]["code"]) == (503, "audit_unavailable")
    assert body["error"]["message"] == "audit trail unavailable: ENOSPC (No space left on device)"
    assert body["allow"] is False
    resp = await wait_ready(client, False)
    assert resp.status == 503
    assert (await resp.json())["detail"].startswith("audit trail unavailable: OSError")
    status, _ = await decide(client, request_for(DENY, mint))
    assert status == 503  # denies too: nothing is answered that is not recorded

    full = False
    assert (await wait_ready(client, True)).status == 200
    status, after = await decide(client, request_for(ALLOW, mint))
    assert status == 200
    await client.close()

    assert [r["decision_id"] for r in decisions(audit_dir)] == [
        before["decision_id"],
        after["decision_id"],
    ]
    assert verify(audit_dir).problem is None
    recovery = [r for r in iter_records(audit_dir) if r["type"] == "start"][-1]
    assert recovery["reason"] == "recovery"
    assert recovery["cut"][0]["bytes"] > 0  # the half-written batch was cut
