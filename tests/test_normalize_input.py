"""pdp.normalize, the parts the end-to-end tests reach only loosely: the agent id, the
approval and user members, the verified flag of a delegation, the PEP-asserted input shape
and the URL errors (pure function, no fixtures)."""

from __future__ import annotations

from typing import Any

import pytest

from pdp.errors import RequestError
from pdp.identity import Identity
from pdp.normalize import is_asserted, normalize

NOW_NS = 1_795_000_000_123_456_000
NOW = "2026-11-18T11:06:40.123456Z"
AGENT = Identity(
    authenticated=True,
    spiffe_id="spiffe://acme.example/agents/team/support-bot",
    trust_domain="acme.example",
    path=("agents", "team", "support-bot"),
)
REQUEST: dict[str, Any] = {
    "tenant": "acme",
    "action": {"type": "tool.call", "name": "jira.search_issues"},
    "destination": {"type": "tool", "name": "jira"},
}


def with_delegation(**on_behalf_of: Any) -> dict[str, Any]:
    return {**REQUEST, "agent": {"on_behalf_of": on_behalf_of}}


def test_the_agent_id_is_the_last_segment_of_the_verified_spiffe_id() -> None:
    assert normalize(REQUEST, AGENT, NOW_NS)["agent"]["id"] == "support-bot"


@pytest.mark.parametrize(
    "identity",
    [
        Identity(authenticated=False, path=("agents", "bot")),
        Identity(authenticated=True, spiffe_id="spiffe://acme.example", path=()),
    ],
    ids=["unauthenticated-with-path", "authenticated-without-path"],
)
def test_no_agent_id_without_a_verified_workload_path(identity: Identity) -> None:
    assert normalize(REQUEST, identity, NOW_NS)["agent"]["id"] is None


def test_approval_and_user_are_passed_through_only_when_given() -> None:
    approval = {"id": "ap-1", "status": "granted"}
    user = {"sub": "user:alice@acme.example", "tenant": "acme"}

    doc = normalize(REQUEST, AGENT, NOW_NS, approval=approval, user=user)
    bare = normalize(REQUEST, AGENT, NOW_NS)

    assert (doc["approval"], doc["user"]) == (approval, user)
    assert "approval" not in bare and "user" not in bare


@pytest.mark.parametrize(
    ("on_behalf_of", "user", "verified"),
    [
        ({"subject": "user:alice"}, None, False),
        ({"subject": "user:alice"}, {"sub": "user:alice"}, True),
        ({"subject": "user:alice"}, {"sub": "user:bob"}, False),
        ({"subject": "user:alice", "tenant": "acme"}, {"sub": "user:alice"}, True),
        (
            {"subject": "user:alice", "tenant": "acme"},
            {"sub": "user:alice", "tenant": "acme"},
            True,
        ),
        (
            {"subject": "user:alice", "tenant": "acme"},
            {"sub": "user:alice", "tenant": "beta"},
            False,
        ),
        ({"subject": "user:alice"}, {"sub": "user:alice", "tenant": "beta"}, True),
    ],
    ids=[
        "no-assertion",
        "same-subject",
        "other-subject",
        "tenant-unstated-by-user",
        "same-tenant",
        "other-tenant",
        "no-tenant-claimed",
    ],
)
def test_a_delegation_is_verified_only_by_a_user_assertion_naming_it(
    on_behalf_of: dict[str, Any], user: dict[str, Any] | None, verified: bool
) -> None:
    doc = normalize(with_delegation(**on_behalf_of), AGENT, NOW_NS, user=user)

    assert doc["agent"]["on_behalf_of"] == {**on_behalf_of, "verified": verified}


def test_no_delegation_has_no_verified_flag() -> None:
    assert normalize(REQUEST, AGENT, NOW_NS)["agent"]["on_behalf_of"] == {}


ASSERTED: dict[str, Any] = {
    "request_id": "az-1",
    "subject": {"type": "user", "id": "alice", "properties": {"dept": "x"}, "asserted": False},
    "action": {"name": "can_read"},
    "resource": {"type": "todo", "id": "7", "ownerID": "bob"},
    "context": {"time": "now"},
}


def test_a_pep_asserted_request_becomes_the_authzen_input_shape() -> None:
    identity = Identity.failure("authn.token_missing", "no agent token was presented")

    doc = normalize(ASSERTED, identity, NOW_NS)

    assert doc == {
        "version": 1,
        "now": {"rfc3339": NOW, "unix_ns": NOW_NS},
        "identity": identity.to_input(),
        "subject": {"type": "user", "id": "alice", "properties": {"dept": "x"}, "asserted": True},
        "action": {"name": "can_read"},
        "resource": {"type": "todo", "id": "7", "ownerID": "bob"},
        "context": {"time": "now"},
        "request": {"id": "az-1", "received_at": NOW},
        "pep": {"authenticated": False, "id": None, "method": "none"},
    }


def test_an_asserted_request_without_context_or_id_gets_empty_ones() -> None:
    request = {k: v for k, v in ASSERTED.items() if k not in ("context", "request_id")}

    doc = normalize(request, Identity(authenticated=False), NOW_NS)

    assert (doc["context"], doc["request"]["id"]) == ({}, None)


def test_only_a_request_with_a_subject_is_asserted() -> None:
    assert is_asserted(ASSERTED) is True
    assert is_asserted(REQUEST) is False


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://jira.acme:99999/x", "port is not a valid number (1-65535)"),
        ("https:///no-host", "has no host"),
    ],
)
def test_a_url_the_schema_could_not_rule_out_is_refused_naming_the_field(
    url: str, message: str
) -> None:
    request = {**REQUEST, "destination": {"type": "tool", "name": "jira", "url": url}}

    with pytest.raises(RequestError) as info:
        normalize(request, AGENT, NOW_NS)

    assert info.value.message == "request does not match the schema"
    assert [(f.path, f.message) for f in info.value.fields] == [("/destination/url", message)]
