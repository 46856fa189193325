"""Property-based fuzzing of the real service (issue 8): one `pdpctl serve` (embedded OPA,
audit trail on) for the module; requests generated from the JSON Schemas, then mutated.

Properties: no answer is a 5xx; every answer is JSON with ``allow``; nothing is allowed
without an agent token the service verified; after all of it the audit chain verifies.

``make test`` runs a fixed, reproducible sample (the "ci" profile: over 2,000 cases);
``make fuzz`` runs the long, random one (PDP_FUZZ_PROFILE=long, PDP_FUZZ_EXAMPLES=N).
"""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.audit.verify import verify
from pdp.devtrust import mint_svid
from tests.audit_helpers import records
from tests.conftest import ServeProcess
from tests.credential_helpers import ALLOW_EXAMPLE, SUPPORT_BOT
from tests.fuzz_strategies import Dup, Raw, encode, mutated, requests

F = TypeVar("F", bound=Callable[..., Any])
_EXAMPLES = int(os.environ.get("PDP_FUZZ_EXAMPLES", "0"))
_LONG = os.environ.get("PDP_FUZZ_PROFILE") == "long"
_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": list(HealthCheck),
    "derandomize": not _LONG,  # make test: the same cases every run
}


def examples(ci: int) -> Callable[[F], F]:
    """Settings for one property: ``ci`` cases in make test, more with make fuzz."""
    chosen: Callable[[F], F] = settings(
        max_examples=_EXAMPLES or (ci * 20 if _LONG else ci), **_COMMON
    )
    return chosen


class Service:
    """The running service, a keep-alive HTTP connection to it, and what it answered."""

    def __init__(self, serve: ServeProcess, admin_token: str) -> None:
        self.serve = serve
        self.admin = admin_token
        self.conn: http.client.HTTPConnection | None = None
        self.answers: dict[int, int] = {}
        self.allowed = 0
        #: Every decision_id the service answered (200s, and the error answers with one).
        self.decision_ids: set[str] = set()
        self.valid_token = mint_svid(serve.state_dir, SUPPORT_BOT, ttl_seconds=3600)
        self.valid_tokens = {self.valid_token}

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def post(
        self, path: str, body: bytes, content_type: str = "application/json", **headers: str
    ) -> tuple[int, Any]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.serve.port, timeout=30)
            try:
                self.conn.request(
                    "POST", path, body=body, headers={"Content-Type": content_type, **headers}
                )
                resp = self.conn.getresponse()
                raw = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                break
            except (http.client.HTTPException, OSError):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        self.answers[resp.status] = self.answers.get(resp.status, 0) + 1
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    state = tmp_path_factory.mktemp("fuzz") / "state"
    # A generous deadline: on a loaded machine an engine timeout (503) says nothing about
    # the input; inputs that make the engine slow are bounded by the schema and the reader.
    serve = ServeProcess(state, "--max-in-flight", "1000", "--opa-timeout-ms", "3000")
    serve.start(timeout=60)
    svc = Service(serve, (state / "admin-token").read_text().strip())
    yield svc
    svc.close()
    serve.kill()


def check(svc: Service, status: int, body: Any, token: Any) -> None:
    """The properties every answer must have."""
    assert status < 500, (status, body)
    assert isinstance(body, dict) and body.get("allow") in (True, False), (status, body)
    if isinstance(body.get("decision_id"), str):
        svc.decision_ids.add(body["decision_id"])
    if body["allow"] is True:
        svc.allowed += 1
        assert status == 200
        assert token in svc.valid_tokens, "allowed without a token the service verified"
        assert "credential" in body
    else:
        assert "credential" not in body


def token_of(doc: Any) -> Any:
    if isinstance(doc, dict) and isinstance(doc.get("agent"), dict):
        return doc["agent"].get("token")
    return None


def with_token(doc: dict[str, Any], token: str | None) -> dict[str, Any]:
    agent = dict(doc["agent"]) if isinstance(doc.get("agent"), dict) else {}
    if token is None:
        agent.pop("token", None)
    else:
        agent["token"] = token
    return {**doc, "agent": agent}


@st.composite
def decision_bodies(draw: st.DrawFn, valid_token: str) -> Any:
    """A schema-generated request or the allow example, a token or not, maybe mutated."""
    base = draw(st.sampled_from(["schema", "example"]))
    doc: dict[str, Any] = (
        draw(requests()) if base == "schema" else json.loads(json.dumps(ALLOW_EXAMPLE["request"]))
    )
    doc = with_token(doc, draw(st.sampled_from([valid_token, None, token_of(doc)])))
    if draw(st.integers(0, 3)) > 0:
        return draw(mutated(doc))
    return doc


def _token_sent(doc: Any) -> Any:
    if isinstance(doc, Dup):
        for key, value in doc.pairs:
            if key == "agent":
                return _token_sent_agent(value)  # the first "agent": refused anyway
        return None
    return _token_sent_agent(doc.get("agent")) if isinstance(doc, dict) else None


def _token_sent_agent(agent: Any) -> Any:
    if isinstance(agent, dict):
        token = agent.get("token")
        return token if isinstance(token, str) else None
    return None


@given(data=st.data())
@examples(1500)
def test_fuzzed_decision_requests_never_5xx_and_never_allow_without_a_verified_token(
    service: Service, data: st.DataObject
) -> None:
    doc = data.draw(decision_bodies(service.valid_token))

    status, body = service.post("/v1/decisions", encode(doc))

    check(service, status, body, _token_sent(doc))


@st.composite
def admin_calls(draw: st.DrawFn) -> tuple[str, bytes, str]:
    path = draw(
        st.sampled_from(
            [
                "/v1/agents/disable",
                "/v1/agents/enable",
                "/v1/credentials/revoke",
                "/v1/credentials/introspect",
            ]
        )
    )
    if path.startswith("/v1/credentials") and draw(st.booleans()):
        params = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["token", "token_type_hint", "x"]),
                    st.text(max_size=30) | st.sampled_from(["%ff", "%00", "a%2", "\u00e9"]),
                ),
                max_size=4,
            )
        )
        raw = "&".join(f"{k}={v}" for k, v in params).encode("utf-8", "surrogatepass")
        return path, raw, "application/x-www-form-urlencoded"
    doc: Any = {
        "spiffe_id": draw(
            st.sampled_from(
                ["spiffe://acme.example/agents/fuzzed", "spiffe://x", "not an id", "spiffe://A/b"]
            )
        ),
        "reason": draw(st.text(max_size=20)),
    }
    if path.startswith("/v1/credentials"):
        doc = {"token": draw(st.text(max_size=40))}
    return path, encode(draw(mutated(doc))), "application/json"


@given(call=admin_calls())
@examples(300)
def test_fuzzed_admin_calls_never_5xx(service: Service, call: tuple[str, bytes, str]) -> None:
    path, body, ctype = call

    status, answer = service.post(path, body, ctype, Authorization=f"Bearer {service.admin}")

    assert status < 500, (status, answer)
    assert isinstance(answer, dict)
    if status >= 400:
        assert answer["allow"] is False


@given(
    body=st.binary(max_size=300),
    ctype=st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-16",
            "application/json; charset=bogus",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/vnd.api+json",
            "",
        ]
    ),
    path=st.sampled_from(["/v1/decisions", "/v1/credentials/revoke", "/v1/agents/disable"]),
)
@examples(300)
def test_arbitrary_bytes_never_5xx(service: Service, body: bytes, ctype: str, path: str) -> None:
    status, answer = service.post(path, body, ctype, Authorization=f"Bearer {service.admin}")

    assert status < 500, (status, answer)
    assert isinstance(answer, dict) and answer["allow"] is False


def test_zz_the_audit_chain_verifies_after_fuzzing(service: Service) -> None:
    """Runs last in this module: stop the service, then verify its whole trail."""
    assert sum(service.answers.values()) >= 2000 or _EXAMPLES, service.answers
    assert service.allowed > 0  # the properties were exercised on allows too
    assert service.serve.proc is not None
    assert service.answers.get(403, 0) == 0  # the admin calls got past authentication
    service.close()
    service.serve.terminate()
    time.sleep(0.1)

    audit = Path(service.serve.state_dir) / "audit"
    result = verify(audit)

    assert result.problem is None, result.problem
    trail = {r["decision_id"] for r in records(audit) if r.get("type") == "decision"}
    assert service.decision_ids <= trail  # every decision answered with an id is recorded
    print(f"fuzz: answers by status {dict(sorted(service.answers.items()))}, "
          f"{service.allowed} allowed, {len(service.decision_ids)} decision ids, all in the "
          f"trail, {result.records} records verified")  # fmt: skip


__all__ = ["Raw"]
