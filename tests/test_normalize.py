"""normalize(): request + identity + clock -> OPA input, exhaustively."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pdp.errors import RequestError
from pdp.identity import Identity
from pdp.normalize import normalize, rfc3339
from pdp.prompthash import PromptHasher
from pdp.schema import load_schema

NOW_NS = 1_764_090_000_123_456_789
ALICE = Identity(
    authenticated=True,
    spiffe_id="spiffe://acme.example/agents/support-bot",
    trust_domain="acme.example",
    path=("agents", "support-bot"),
    expires_at=1_764_090_300,
    jti="j-1",
    kid="k-1",
)
ANON = Identity.failure("authn.expired", "token expired")
INPUT_SCHEMA = Draft202012Validator(load_schema("opa-input"))


def minimal(**extra: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "tenant": "acme",
        "action": {"type": "tool.call"},
        "destination": {"type": "tool", "name": "jira"},
    }
    req.update(extra)
    return req


FULL = minimal(
    request_id="r-1",
    agent={"token": "t", "on_behalf_of": {"subject": "user:alice@acme.example", "tenant": "acme"}},
    task={"id": "T-42", "purpose": "triage support tickets", "session": "s-9"},
    action={
        "type": "tool.call",
        "name": "jira.search_issues",
        "operation": "read",
        "arguments": {"jql": "project = SUP"},
    },
    destination={
        "type": "tool",
        "name": "jira",
        "url": "https://JIRA.internal.acme/rest",
        "environment": "prod",
    },
    data={"sensitivity": "confidential", "categories": ["pii", "customer", "pii2"]},
    prompt={"text": "summarise ticket SUP-1", "risk_signals": ["b", "a"]},
    context={"ip": "10.0.0.1"},
)

HASH_KEY = b"per-deployment-secret-0123456789"
HASHER = PromptHasher(HASH_KEY)


def test_full_request_matches_the_input_schema_and_the_documented_shape() -> None:
    doc = normalize(FULL, ALICE, NOW_NS, prompt_hasher=HASHER)
    assert list(INPUT_SCHEMA.iter_errors(doc)) == []
    assert doc == {
        "version": 1,
        "now": {"rfc3339": "2025-11-25T17:00:00.123457Z", "unix_ns": NOW_NS},
        "identity": {
            "authenticated": True,
            "spiffe_id": "spiffe://acme.example/agents/support-bot",
            "trust_domain": "acme.example",
            "path": ["agents", "support-bot"],
            "expires_at": 1_764_090_300,
            "jti": "j-1",
            "error": None,
        },
        "agent": {
            "id": "support-bot",
            "status": None,  # no lifecycle given (see the agent_status tests)
            # Marked unverified: no user assertion named alice.
            "on_behalf_of": {
                "subject": "user:alice@acme.example",
                "tenant": "acme",
                "verified": False,
            },
        },
        "tenant": "acme",
        "task": {"id": "T-42", "purpose": "triage support tickets", "session": "s-9"},
        "action": {
            "type": "tool.call",
            "name": "jira.search_issues",
            "operation": "read",
            "arguments": {"jql": "project = SUP"},
        },
        "destination": {
            "type": "tool",
            "name": "jira",
            "url": "https://jira.internal.acme/rest",
            "host": "jira.internal.acme",
            "scheme": "https",
            "port": 443,
            "environment": "prod",
        },
        "data": {
            "sensitivity": "confidential",
            "sensitivity_rank": 2,
            "categories": ["customer", "pii", "pii2"],
        },
        "prompt": {
            "present": True,
            "hmac_sha256": hmac.new(
                HASH_KEY, b"summarise ticket SUP-1", hashlib.sha256
            ).hexdigest(),
            "hmac_key_id": HASHER.key_id,
            "length": 22,
            "risk_signals": ["a", "b"],
        },
        "context": {"ip": "10.0.0.1"},
        "request": {"id": "r-1", "received_at": "2025-11-25T17:00:00.123457Z"},
        # No history or chain given: none (the decision path passes both; test_sessions).
        "session": {
            "available": True,
            "origin": None,
            "error": None,
            "read_at_ns": NOW_NS,
            "task": None,
            "session": None,
        },
        "chain": {
            "present": False,
            "verified": False,
            "error": None,
            "subject": None,
            "subject_tenant": None,
            "issuer": None,
            "actors": [],
            "depth": 0,
        },
        "pep": {"authenticated": False, "id": None, "method": "none"},
    }


def test_minimal_request_gets_defaults_and_matches_the_schema() -> None:
    doc = normalize(minimal(), ALICE, NOW_NS)
    assert list(INPUT_SCHEMA.iter_errors(doc)) == []
    # Unlabelled data is treated as the most sensitive (secure defaults).
    assert doc["data"] == {"sensitivity": "restricted", "sensitivity_rank": 3, "categories": []}
    assert doc["prompt"] == {
        "present": False,
        "hmac_sha256": None,
        "hmac_key_id": None,
        "length": 0,
        "risk_signals": [],
    }
    assert doc["action"] == {"type": "tool.call", "name": None, "operation": None, "arguments": {}}
    assert doc["destination"]["host"] is None and doc["destination"]["port"] is None
    assert doc["agent"] == {"id": "support-bot", "status": None, "on_behalf_of": {}}
    assert doc["task"] == {} and doc["context"] == {}
    assert doc["request"]["id"] is None


def test_identity_comes_only_from_the_verified_token() -> None:
    forged = minimal(identity={"authenticated": True}, agent={"token": "x"})
    doc = normalize(forged, ANON, NOW_NS)
    assert doc["identity"]["authenticated"] is False
    assert doc["identity"]["error"] == {"code": "authn.expired", "message": "token expired"}
    assert doc["agent"]["id"] is None
    assert list(INPUT_SCHEMA.iter_errors(doc)) == []


@pytest.mark.parametrize(
    ("identity", "given", "want"),
    [
        ("alice", "active", "active"),
        ("alice", "disabled", "disabled"),
        ("alice", None, None),
        ("anon", "disabled", None),  # no verified agent, so no lifecycle status
    ],
)
def test_agent_status_is_passed_in_for_a_verified_agent_only(
    identity: str, given: str | None, want: str | None
) -> None:
    who = ALICE if identity == "alice" else ANON

    doc = normalize(minimal(), who, NOW_NS, agent_status=given)

    assert doc["agent"]["status"] == want
    assert list(INPUT_SCHEMA.iter_errors(doc)) == []


@pytest.mark.parametrize(
    ("sensitivity", "rank"),
    [("public", 0), ("internal", 1), ("confidential", 2), ("restricted", 3)],
)
def test_sensitivity_rank(sensitivity: str, rank: int) -> None:
    doc = normalize(minimal(data={"sensitivity": sensitivity}), ALICE, NOW_NS)
    assert doc["data"]["sensitivity_rank"] == rank


@pytest.mark.parametrize(
    ("url", "host", "scheme", "port", "canonical"),
    [
        ("https://jira.internal.acme/rest", "jira.internal.acme", "https", 443, None),
        ("http://jira.internal.acme", "jira.internal.acme", "http", 80, None),
        ("HTTPS://API.GitHub.com:8443/x?y#z", "api.github.com", "https", 8443,
         "https://api.github.com:8443/x?y#z"),
        ("https://jira.internal.acme.:443/r", "jira.internal.acme", "https", 443,
         "https://jira.internal.acme/r"),
        ("postgres://db.acme:5432/crm", "db.acme", "postgres", 5432, "postgres://db.acme/crm"),
        ("redis://cache.acme/0", "cache.acme", "redis", 6379, None),
        ("ftp://files.acme/x", "files.acme", "ftp", None, None),
        ("https://[::1]:9000/", "::1", "https", 9000, None),
        ("https://[0:0::1]/", "::1", "https", 443, "https://[::1]/"),
        ("https://10.0.0.7/", "10.0.0.7", "https", 443, None),
        ("https://bücher.example/", "xn--bcher-kva.example", "https", 443,
         "https://xn--bcher-kva.example/"),
        ("https://jira.internal.acme?q=a@b", "jira.internal.acme", "https", 443, None),
    ],
)  # fmt: skip
def test_destination_url_reaches_policy_in_its_canonical_form(
    url: str, host: str, scheme: str, port: int | None, canonical: str | None
) -> None:
    dest = normalize(
        minimal(destination={"type": "service", "name": "x", "url": url}), ALICE, NOW_NS
    )["destination"]
    want = (host, scheme, port, canonical or url)
    assert (dest["host"], dest["scheme"], dest["port"], dest["url"]) == want


BACKSLASH = "backslashes, spaces and control characters are not allowed"
NOT_IPV4 = "the host looks like an IPv4 address but is not one"
NFKC = "has characters that Unicode (NFKC) normalisation changes"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        # the sample: urlsplit reads host jira.internal.acme, WHATWG reads attacker.example
        ("https://attacker.example\\@jira.internal.acme/rest", BACKSLASH),
        ("https://jira.internal.acme\\.attacker.example/", BACKSLASH),
        ("https://jira.internal.acme/\\x", BACKSLASH),
        ("https://jira.internal.acme\t.attacker.example/", BACKSLASH),
        ("https://jira.internal.acme\x00/", BACKSLASH),
        ("https://jira.internal.acme\x7f/", BACKSLASH),
        ("https://jira.internal.acme\u3000/", BACKSLASH),
        ("https://user@jira.internal.acme/", "userinfo (user@host) is not allowed"),
        ("https://a:b@jira.internal.acme/", "userinfo (user@host) is not allowed"),
        ("https://jira.internal.acme@attacker.example/", "userinfo (user@host) is not allowed"),
        ("https://ｊira.internal.acme/", NFKC),
        ("https://jira．internal.acme/", NFKC),
        ("https://[jira.internal.acme]/rest", "the brackets do not hold a valid IPv6 address"),
        ("https://[::1/", "'[' without ']' in the host"),
        ("https://[::1]x/", "only a port may follow an IPv6 literal"),
        ("https://a[::1]/", "brackets are allowed only around an IPv6 address"),
        ("https://[fe80::1%25eth0]/", "an IPv6 literal must not carry a zone id or be empty"),
        ("https://[]/", "an IPv6 literal must not carry a zone id or be empty"),
        ("https://127.1/", NOT_IPV4),
        ("https://0x7f.0.0.1/", NOT_IPV4),
        ("https://2130706433/", NOT_IPV4),
        ("https://010.0.0.1/", NOT_IPV4),
        ("https://1.2.3.4.5/", NOT_IPV4),
        ("https://jira.internal.acme%2eattacker.example/",
         "percent-encoding is not allowed in the host"),
        ("https:///jira.internal.acme/", "has no host"),
        ("file:///etc/passwd", "has no host"),
        ("https:jira.internal.acme", "must be scheme://host[:port][/path]"),
        ("https://jira..acme/", "the host has an empty label"),
        ("https://-jira.acme/", "the host has a label that is not letters, digits, '-' or '_'"),
        ("https://xn--zz.acme/", "the host has an invalid xn-- (IDNA) label"),
        ("https://jira:99999/x", "port is not a valid number (1-65535)"),
        ("https://jira:0/x", "port is not a valid number (1-65535)"),
        ("https://jira:/x", "port is not a valid number (1-65535)"),
        ("https://jira:+443/x", "port is not a valid number (1-65535)"),
        ("https://jira:1:2/x", "more than one ':' in the host"),
    ],
)  # fmt: skip
def test_url_two_parsers_could_read_differently_is_a_field_error(url: str, message: str) -> None:
    with pytest.raises(RequestError) as info:
        normalize(minimal(destination={"type": "tool", "name": "x", "url": url}), ALICE, NOW_NS)
    assert [(f.path, f.message) for f in info.value.fields] == [("/destination/url", message)]


def test_prompt_text_reaches_policy_only_when_configured() -> None:
    req = minimal(prompt={"text": "héllo"})
    hidden = normalize(req, ALICE, NOW_NS, prompt_hasher=HASHER)["prompt"]
    shown = normalize(req, ALICE, NOW_NS, prompt_to_policy=True)["prompt"]
    assert "text" not in hidden
    assert shown["text"] == "héllo"
    assert hidden["length"] == 5
    assert hidden["hmac_sha256"] == HASHER.digest("héllo")


def test_empty_prompt_text_is_present_with_zero_length() -> None:
    p = normalize(minimal(prompt={"text": ""}), ALICE, NOW_NS, prompt_hasher=HASHER)["prompt"]
    assert p["present"] is True and p["length"] == 0
    assert p["hmac_sha256"] == hmac.new(HASH_KEY, b"", hashlib.sha256).hexdigest()


def test_normalize_does_not_alias_or_mutate_the_request() -> None:
    req = minimal(agent={"on_behalf_of": {"subject": "user:a"}}, task={"id": "t"})
    snapshot = repr(req)
    doc = normalize(req, ALICE, NOW_NS)
    doc["agent"]["on_behalf_of"]["subject"] = "changed"
    doc["task"]["id"] = "changed"
    assert repr(req) == snapshot


def test_same_inputs_give_the_same_document() -> None:
    assert normalize(FULL, ALICE, NOW_NS) == normalize(FULL, ALICE, NOW_NS)


@pytest.mark.parametrize(
    ("ns", "text"),
    [(0, "1970-01-01T00:00:00.000000Z"), (1_000_000_001_000, "1970-01-01T00:16:40.000001Z")],
)
def test_rfc3339(ns: int, text: str) -> None:
    assert rfc3339(ns) == text


def test_prompt_digest_is_keyed_so_a_guess_cannot_be_confirmed_without_the_secret() -> None:
    req = {**minimal(), "prompt": {"text": "yes"}}
    mine = normalize(req, ALICE, NOW_NS, prompt_hasher=HASHER)["prompt"]
    other = normalize(req, ALICE, NOW_NS, prompt_hasher=PromptHasher(b"another-secret-0123456"))[
        "prompt"
    ]

    assert mine["hmac_sha256"] != hashlib.sha256(b"yes").hexdigest()
    assert mine["hmac_sha256"] != other["hmac_sha256"]
    assert mine["hmac_key_id"] != other["hmac_key_id"]
    assert HASH_KEY.hex() not in str(mine) and "sha256" not in mine


def test_a_request_without_prompt_text_names_no_digest_key_even_with_a_hasher() -> None:
    # hmac_key_id says which secret keyed hmac_sha256; with no text there is no digest,
    # so naming a key would claim a digest that does not exist.
    p = normalize(minimal(prompt={"risk_signals": ["x"]}), ALICE, NOW_NS, prompt_hasher=HASHER)

    assert (p["prompt"]["present"], p["prompt"]["hmac_sha256"], p["prompt"]["hmac_key_id"]) == (
        False,
        None,
        None,
    )
