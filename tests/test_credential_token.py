"""The credential format (pdp.credential_token): every refusal of verify_credential has its
code and message, the limits and clock checks sit exactly where documented. Tokens are signed
here with a real EC key; no fixtures."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from pdp.credential_token import (
    CREDENTIAL_TYP,
    MAX_CREDENTIAL_LENGTH,
    CredentialError,
    action_scope,
    peek_header,
    verify_credential,
)

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
NOW = 1_800_000_000
CLAIMS: dict[str, Any] = {
    "iss": "agent-pdp",
    "sub": "spiffe://acme.example/agents/bot",
    "aud": "jira",
    "iat": NOW,
    "nbf": NOW,
    "exp": NOW + 60,
    "jti": "j-1",
    "scope": "tool.call:jira.search:read",
}
HEADER = {"alg": "ES256", "kid": "k1", "typ": CREDENTIAL_TYP}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(doc: Any) -> str:
    return b64(json.dumps(doc).encode())


def sign(
    header: Any = None,
    claims: Any = None,
    *,
    key: ec.EllipticCurvePrivateKey = KEY,
    raw: str | None = None,
) -> str:
    head = segment(HEADER if header is None else header)
    body = raw if raw is not None else segment(CLAIMS if claims is None else claims)
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{head}.{body}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def lookup(kid: str) -> tuple[str, ec.EllipticCurvePublicKey] | None:
    return ("ES256", KEY.public_key()) if kid == "k1" else None


def verify(token: Any, **kw: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"issuer": "agent-pdp", "audience": "jira", "scope": None, "now": NOW}
    options.update(kw)
    return verify_credential(token, lookup, **options)


def refusal(token: Any, **kw: Any) -> tuple[str, str]:
    with pytest.raises(CredentialError) as info:
        verify(token, **kw)
    assert str(info.value) == info.value.message
    return info.value.code, info.value.message


def with_claims(**changes: Any) -> str:
    claims = {k: v for k, v in {**CLAIMS, **changes}.items() if v is not ...}
    return sign(claims=claims)


def with_header(**changes: Any) -> str:
    header = {k: v for k, v in {**HEADER, **changes}.items() if v is not ...}
    return sign(header=header)


def test_a_good_credential_verifies_to_its_claims() -> None:
    assert verify(sign()) == CLAIMS


@pytest.mark.parametrize(
    ("token", "code", "message"),
    [
        ("", "missing", "no credential was presented"),
        (None, "missing", "no credential was presented"),
        (7, "missing", "no credential was presented"),
        ("a.b", "malformed", "credential is not a compact JWS"),
        ("a.b.c.d", "malformed", "credential is not a compact JWS"),
        ("a b.c.d", "malformed", "credential is not a compact JWS"),
        ("aaaa.b.c", "malformed", "credential header is not base64url JSON"),
        (f"{segment([1])}.b.c", "malformed", "credential header is not a JSON object"),
    ],
    ids=["empty", "none", "int", "two-parts", "four-parts", "space", "not-json", "array"],
)
def test_a_token_that_is_not_a_jws_is_refused(token: Any, code: str, message: str) -> None:
    assert refusal(token) == (code, message)


@pytest.mark.parametrize(
    ("changes", "code", "message"),
    [
        ({"typ": "JWT"}, "wrong_type", "typ is not 'txn+jwt'"),
        ({"typ": ...}, "wrong_type", "typ is not 'txn+jwt'"),
        ({"alg": "HS256"}, "alg_not_allowed", "alg is not ES256, ES384 or ES512"),
        ({"alg": 256}, "alg_not_allowed", "alg is not ES256, ES384 or ES512"),
        ({"alg": ...}, "alg_not_allowed", "alg is not ES256, ES384 or ES512"),
        ({"kid": ...}, "unknown_kid", "credential header has no kid"),
        ({"kid": ""}, "unknown_kid", "credential header has no kid"),
        ({"kid": 1}, "unknown_kid", "credential header has no kid"),
        ({"kid": "k2"}, "unknown_kid", "credential is signed with an unknown key"),
        ({"alg": "ES384"}, "alg_not_allowed", "alg ES384 is not the key's ES256"),
    ],
    ids=lambda v: str(v),
)
def test_a_header_the_pdp_did_not_write_is_refused(
    changes: dict[str, Any], code: str, message: str
) -> None:
    assert refusal(with_header(**changes)) == (code, message)


def test_a_signature_that_is_not_base64url_is_malformed() -> None:
    head, body, _ = sign().split(".")

    assert refusal(f"{head}.{body}.A") == ("malformed", "credential signature is not base64url")


def test_a_signature_by_another_key_does_not_verify() -> None:
    assert refusal(sign(key=OTHER)) == ("invalid_signature", "credential signature does not verify")


def test_a_signed_payload_that_is_not_json_is_malformed() -> None:
    token = sign(raw=b64(b"not json"))

    assert refusal(token) == ("malformed", "credential payload is not base64url JSON")


@pytest.mark.parametrize(
    ("changes", "code", "message"),
    [
        ({"iss": "someone-else"}, "wrong_issuer", "credential was not issued by this PDP"),
        ({"iss": ...}, "wrong_issuer", "credential was not issued by this PDP"),
        ({"exp": ...}, "malformed", "credential has no 'exp'"),
        ({"exp": "soon"}, "malformed", "claim 'exp' must be a number"),
        ({"exp": True}, "malformed", "claim 'exp' must be a number"),
        ({"nbf": "now"}, "malformed", "claim 'nbf' must be a number"),
        ({"iat": "then"}, "malformed", "claim 'iat' must be a number"),
        ({"sub": ...}, "malformed", "credential has no 'sub'"),
        ({"sub": ""}, "malformed", "credential has no 'sub'"),
        ({"jti": 5}, "malformed", "credential has no 'jti'"),
        ({"jti": ""}, "malformed", "credential has no 'jti'"),
        ({"scope": ...}, "malformed", "credential has no 'scope'"),
        ({"aud": "crm"}, "wrong_audience", "credential is not for this service"),
        ({"aud": ["crm", "vault"]}, "wrong_audience", "credential is not for this service"),
        ({"aud": ...}, "wrong_audience", "credential is not for this service"),
    ],
    ids=lambda v: str(v),
)
def test_claims_the_pdp_did_not_write_are_refused(
    changes: dict[str, Any], code: str, message: str
) -> None:
    assert refusal(with_claims(**changes)) == (code, message)


def test_optional_time_claims_may_be_absent() -> None:
    assert verify(with_claims(nbf=..., iat=...))["jti"] == "j-1"


def test_an_audience_list_naming_this_service_is_accepted() -> None:
    assert verify(with_claims(aud=["crm", "jira"]))["aud"] == ["crm", "jira"]
    assert verify(with_claims(aud="crm"), audience=None)["aud"] == "crm"


def test_the_scope_is_a_space_separated_list_matched_exactly() -> None:
    token = with_claims(scope="a:b:read c:d:write")

    assert verify(token, scope="c:d:write")["jti"] == "j-1"
    assert refusal(token, scope="c:d") == ("insufficient_scope", "credential does not cover 'c:d'")
    assert refusal(token, scope="a:b:read c:d:write") == (
        "insufficient_scope",
        "credential does not cover 'a:b:read c:d:write'",
    )
    assert verify(token, scope=None)["scope"] == "a:b:read c:d:write"


@pytest.mark.parametrize(("leeway", "ok_until"), [(0, NOW + 60), (30, NOW + 90), (5, NOW + 65)])
def test_expiry_allows_the_leeway_and_not_a_moment_more(leeway: int, ok_until: int) -> None:
    token = sign()

    assert verify(token, now=ok_until - 0.001, leeway_s=leeway)["jti"] == "j-1"
    assert refusal(token, now=ok_until, leeway_s=leeway) == ("expired", "credential has expired")


@pytest.mark.parametrize("leeway", [0, 30])
def test_not_before_allows_the_leeway(leeway: int) -> None:
    token = with_claims(nbf=NOW + 100, exp=NOW + 1000)

    assert verify(token, now=NOW + 100 - leeway, leeway_s=leeway)["jti"] == "j-1"
    assert refusal(token, now=NOW + 100 - leeway - 0.001, leeway_s=leeway) == (
        "not_yet_valid",
        "credential is not valid yet",
    )


def test_the_default_leeway_is_30_seconds() -> None:
    token = sign()

    assert verify_credential(token, lookup, issuer="agent-pdp", audience=None, scope=None,
                             now=NOW + 89.9)["jti"] == "j-1"  # fmt: skip
    with pytest.raises(CredentialError):
        verify_credential(token, lookup, issuer="agent-pdp", audience=None, scope=None,
                          now=NOW + 90)  # fmt: skip


def test_without_a_clock_the_wall_clock_decides() -> None:
    fresh = with_claims(nbf=int(time.time()) - 5, exp=int(time.time()) + 60)

    assert verify(fresh, now=None)["jti"] == "j-1"
    stale = with_claims(nbf=1_000_000_000, exp=1_000_000_060)
    assert refusal(stale, now=None) == ("expired", "credential has expired")


def test_an_expired_credential_verifies_when_time_is_not_checked() -> None:
    assert verify(sign(), now=NOW + 10_000, verify_time=False)["jti"] == "j-1"


def exactly(length: int) -> str:
    """A valid credential of exactly ``length`` characters (padding a claim and a header
    member: base64 cannot hit every length with one of them)."""
    for extra in range(4):
        header = {**HEADER, "x": "y" * extra}
        estimate = (length - len(sign(header=header, claims={**CLAIMS, "pad": ""}))) * 3 // 4
        for pad in range(estimate - 8, estimate + 8):
            token = sign(header=header, claims={**CLAIMS, "pad": "x" * pad})
            if len(token) == length:
                return token
    raise AssertionError(f"no credential of exactly {length} characters")


def test_the_length_limit_is_inclusive() -> None:
    assert MAX_CREDENTIAL_LENGTH == 16 * 1024  # documented: 16 KiB
    longest = exactly(16 * 1024)

    assert verify(longest)["jti"] == "j-1"
    assert refusal(longest + "A") == ("malformed", "credential is not a compact JWS")


def test_peek_header_reads_the_first_segment() -> None:
    assert peek_header(sign()) == HEADER


@pytest.mark.parametrize(
    ("action", "scope"),
    [
        (
            {"type": "tool.call", "name": "jira.search", "operation": "read"},
            "tool.call:jira.search:read",
        ),
        ({"type": "model.invoke", "name": "llm"}, "model.invoke:llm:"),
        ({"type": "data.read", "operation": "read"}, "data.read::read"),
        ({"type": "http.request", "name": None, "operation": None}, "http.request::"),
    ],
)
def test_the_scope_of_an_action_is_type_name_operation(action: dict[str, Any], scope: str) -> None:
    assert action_scope(action) == scope


def test_a_credential_error_carries_code_and_message() -> None:
    error = CredentialError("expired", "credential has expired")

    assert (error.code, error.message, str(error)) == (
        "expired",
        "credential has expired",
        "credential has expired",
    )
