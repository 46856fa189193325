"""Workload authentication: SPIFFE IDs, trust bundles, JWT-SVID verification, dev trust."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jsonschema
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import pdp
from pdp.devtrust import (
    DEV_AUDIENCE_DEFAULT,
    DevTrustError,
    ensure_dev_trust,
    jwk_thumbprint,
    mint_svid,
)
from pdp.identity import (
    MAX_TOKEN_LENGTH,
    Identity,
    SVIDVerifier,
    TrustBundleError,
    TrustBundles,
    parse_spiffe_id,
)
from tests.identity_helpers import (
    AUDIENCE,
    DOMAIN,
    NOW,
    OTHER_DOMAIN,
    SPIFFE_ID,
    FakeClock,
    KeyPair,
    b64json,
    bundle_doc,
    claims,
    ec_key,
    ed25519_key,
    forge,
    forge_hs256,
    replace_payload,
    rsa_key,
    sign,
)

LEEWAY = 30


@dataclass(frozen=True)
class Keys:
    """Every key the tests sign with; only some are in the trust bundles."""

    ec: KeyPair  # acme.example, P-256
    ec384: KeyPair  # acme.example, P-384
    rsa: KeyPair  # acme.example, RSA 2048 (no "alg" in its JWK: serves RS* and PS*)
    beta: KeyPair  # beta.example, P-256
    attacker: KeyPair  # P-256, in no bundle
    ed: KeyPair  # Ed25519, in no bundle


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        ec=ec_key("acme-ec"),
        ec384=ec_key("acme-ec384", ec.SECP384R1()),
        rsa=rsa_key("acme-rsa"),  # RSA keygen is slow: once per session
        beta=ec_key("beta-ec"),
        attacker=ec_key("acme-ec"),  # claims the real key's kid
        ed=ed25519_key("acme-ec"),
    )


@pytest.fixture(scope="session")
def bundles(keys: Keys) -> TrustBundles:
    return TrustBundles.from_documents(
        {
            DOMAIN: bundle_doc(
                keys.ec.public_jwk(), keys.ec384.public_jwk(), keys.rsa.public_jwk()
            ),
            OTHER_DOMAIN: bundle_doc(keys.beta.public_jwk()),
        }
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def verifier(bundles: TrustBundles, clock: FakeClock) -> SVIDVerifier:
    return SVIDVerifier(bundles, AUDIENCE, leeway_seconds=LEEWAY, clock=clock)


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts signature verifications (calls of jwt.decode) made by the verifier."""
    calls: list[str] = []
    real_decode = jwt.decode

    def spy(token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", spy)
    return calls


def identity_schema() -> dict[str, Any]:
    path = Path(pdp.__file__).parent / "schemas" / "opa-input.schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    return cast(dict[str, Any], schema["properties"]["identity"])


# --------------------------------------------------------------------------- valid tokens


@pytest.mark.parametrize(
    ("key_name", "alg"),
    [
        pytest.param("ec", "ES256", id="an ES256 SVID authenticates"),
        pytest.param("ec384", "ES384", id="an ES384 SVID authenticates"),
        pytest.param("rsa", "RS256", id="an RS256 SVID authenticates"),
        pytest.param("rsa", "RS512", id="an RS512 SVID authenticates"),
        pytest.param("rsa", "PS256", id="a PS256 SVID authenticates"),
        pytest.param("rsa", "PS384", id="a PS384 SVID authenticates"),
    ],
)
def test_valid_svid_authenticates_with_its_identity(
    verifier: SVIDVerifier, keys: Keys, key_name: str, alg: str
) -> None:
    key: KeyPair = getattr(keys, key_name)
    identity = verifier.verify(sign(key, alg=alg))
    assert identity == Identity(
        authenticated=True,
        spiffe_id=SPIFFE_ID,
        trust_domain=DOMAIN,
        path=("agents", "support-bot"),
        expires_at=NOW + 300,
        jti="jti-1",
        kid=key.kid,
    )


@pytest.mark.parametrize(
    ("payload", "headers", "now"),
    [
        pytest.param(claims(aud=AUDIENCE), {}, NOW, id="a plain string aud equal to ours"),
        pytest.param(claims(aud=["reports", AUDIENCE]), {}, NOW, id="an aud list containing ours"),
        pytest.param(claims(), {}, NOW + 300 + LEEWAY - 1, id="exp passed but within leeway"),
        pytest.param(claims(nbf=NOW + LEEWAY - 1), {}, NOW, id="nbf ahead but within leeway"),
        pytest.param(claims(jti=None), {}, NOW, id="no jti (it is optional)"),
        pytest.param(claims(exp=NOW + 300.9), {}, NOW, id="a fractional exp"),
        pytest.param(claims(), {"typ": "JOSE"}, NOW, id="typ JOSE"),
        pytest.param(claims(iss="spiffe://acme.example", team="x"), {}, NOW, id="extra claims"),
    ],
)
def test_acceptable_variation_authenticates(
    verifier: SVIDVerifier,
    keys: Keys,
    clock: FakeClock,
    payload: dict[str, Any],
    headers: dict[str, Any],
    now: int,
) -> None:
    clock.now = now
    identity = verifier.verify(sign(keys.ec, payload, headers=headers))
    assert identity.authenticated, identity.error_message
    assert identity.spiffe_id == SPIFFE_ID


def test_fractional_exp_is_reported_rounded_down(verifier: SVIDVerifier, keys: Keys) -> None:
    identity = verifier.verify(sign(keys.ec, claims(exp=NOW + 300.9)))
    assert identity.expires_at == NOW + 300


# --------------------------------------------------------------------------- attacks

TokenMaker = Callable[[Keys], str]

ATTACKS: list[Any] = [
    pytest.param(
        lambda k: forge({"alg": "none", "kid": k.ec.kid, "typ": "JWT"}, claims()),
        "authn.alg_not_allowed",
        id="an unsigned alg none token is refused",
    ),
    pytest.param(
        lambda k: forge({"alg": "None", "kid": k.ec.kid}, claims()),
        "authn.alg_not_allowed",
        id="alg None in another case is refused",
    ),
    pytest.param(
        lambda k: forge_hs256(
            {"alg": "HS256", "kid": k.ec.kid, "typ": "JWT"}, claims(), k.ec.public_pem()
        ),
        "authn.alg_not_allowed",
        id="HS256 keyed with the EC public key PEM is refused",
    ),
    pytest.param(
        lambda k: forge_hs256(
            {"alg": "HS256", "kid": k.rsa.kid, "typ": "JWT"}, claims(), k.rsa.public_pem()
        ),
        "authn.alg_not_allowed",
        id="HS256 keyed with the RSA public key PEM is refused",
    ),
    pytest.param(
        lambda k: sign(k.ed, alg="EdDSA"),
        "authn.alg_not_allowed",
        id="EdDSA is not a JWT-SVID alg",
    ),
    pytest.param(
        lambda k: forge({"alg": ["ES256"], "kid": k.ec.kid}, claims()),
        "authn.alg_not_allowed",
        id="an alg that is a list is refused",
    ),
    pytest.param(
        lambda k: sign(k.rsa, alg="RS256", kid=k.ec.kid),
        "authn.alg_not_allowed",
        id="RS256 naming an EC key is refused before any crypto",
    ),
    pytest.param(
        lambda k: sign(k.ec384, alg="ES384", kid=k.ec.kid),
        "authn.alg_not_allowed",
        id="ES384 naming a P-256 key is refused",
    ),
    pytest.param(
        lambda k: sign(k.ec, alg="ES256", kid=k.rsa.kid),
        "authn.alg_not_allowed",
        id="ES256 naming an RSA key is refused",
    ),
    pytest.param(
        lambda k: replace_payload(sign(k.ec), claims(sub="spiffe://acme.example/agents/admin")),
        "authn.invalid_signature",
        id="a payload tampered after signing fails the signature",
    ),
    pytest.param(
        lambda k: sign(k.ec).rsplit(".", 1)[0] + ".",
        "authn.invalid_signature",
        id="a stripped signature fails the signature",
    ),
    pytest.param(
        lambda k: sign(k.attacker),
        "authn.invalid_signature",
        id="a key outside the bundle reusing a trusted kid fails the signature",
    ),
    pytest.param(
        lambda k: sign(k.ec, kid="no-such-key"),
        "authn.unknown_kid",
        id="an unknown kid is refused",
    ),
    pytest.param(
        lambda k: sign(k.ec, kid=None),
        "authn.unknown_kid",
        id="a missing kid is refused",
    ),
    pytest.param(
        lambda k: sign(k.beta),
        "authn.unknown_kid",
        id="another trust domain's key cannot sign for this domain",
    ),
    pytest.param(
        lambda k: sign(k.attacker, claims(sub="spiffe://evil.example/agents/x")),
        "authn.untrusted_domain",
        id="a sub in an unconfigured trust domain is untrusted",
    ),
    pytest.param(
        lambda k: sign(k.ec, claims(aud=None)),
        "authn.missing_claim",
        id="a missing aud is refused",
    ),
    pytest.param(
        lambda k: sign(k.ec, claims(aud=[])),
        "authn.missing_claim",
        id="an empty aud list is refused",
    ),
    pytest.param(
        lambda k: sign(k.ec, claims(aud=["reports"])),
        "authn.audience_mismatch",
        id="an aud for another service is refused",
    ),
    pytest.param(
        lambda k: sign(k.ec, claims(aud=AUDIENCE + "-x")),
        "authn.audience_mismatch",
        id="an aud that merely starts with ours is refused",
    ),
    pytest.param(
        lambda k: sign(k.ec, claims(exp=None)),
        "authn.missing_claim",
        id="a missing exp is refused",
    ),
    pytest.param(
        lambda k: sign(k.ec, claims(sub=None)),
        "authn.missing_claim",
        id="a missing sub is refused",
    ),
    pytest.param(
        lambda k: sign(k.ec, claims(exp=NOW - LEEWAY - 1)),
        "authn.expired",
        id="a token expired beyond the leeway is refused",
    ),
    pytest.param(
        lambda k: sign(k.ec, claims(exp=NOW - LEEWAY)),
        "authn.expired",
        id="a token expired exactly by the leeway is refused",
    ),
    pytest.param(
        lambda k: sign(k.ec, claims(nbf=NOW + LEEWAY + 1)),
        "authn.not_yet_valid",
        id="a token whose nbf is beyond the leeway is refused",
    ),
    pytest.param(
        lambda k: sign(k.ec, claims(exp="tomorrow")),
        "authn.malformed",
        id="a non-numeric exp is malformed",
    ),
    pytest.param(
        lambda k: sign(k.ec, claims(exp=True)),
        "authn.malformed",
        id="a boolean exp is malformed",
    ),
    pytest.param(
        lambda k: sign(k.ec, claims(jti=42)),
        "authn.malformed",
        id="a non-string jti is malformed",
    ),
    pytest.param(
        lambda k: sign(k.ec, headers={"typ": "at+jwt"}),
        "authn.malformed",
        id="a typ other than JWT or JOSE is malformed",
    ),
    pytest.param(
        lambda k: sign(k.ec, headers={"jku": "https://evil.example/jwks"}),
        "authn.malformed",
        id="a jku header is not permitted",
    ),
    pytest.param(
        lambda k: sign(k.attacker, headers={"jwk": k.attacker.public_jwk()}),
        "authn.malformed",
        id="an embedded jwk header is not permitted",
    ),
    pytest.param(
        lambda k: forge({"alg": "ES256", "kid": k.ec.kid, "b64": False, "crit": ["b64"]}, {}),
        "authn.malformed",
        id="an unencoded-payload b64 header is not permitted",
    ),
    pytest.param(
        lambda k: forge({"alg": "ES256", "kid": 7}, claims()),
        "authn.malformed",
        id="a non-string kid is malformed",
    ),
    pytest.param(
        lambda k: sign(k.ec, claims(pad="x" * MAX_TOKEN_LENGTH)),
        "authn.malformed",
        id="a validly signed token over 16 KiB is refused",
    ),
]


@pytest.mark.parametrize(("make_token", "code"), ATTACKS)
def test_bad_token_is_refused_with_its_error_code(
    verifier: SVIDVerifier, keys: Keys, make_token: TokenMaker, code: str
) -> None:
    token = make_token(keys)
    identity = verifier.verify(token)
    assert (identity.authenticated, identity.error_code) == (False, code), identity
    assert identity.error_message
    assert token not in identity.error_message
    assert identity.spiffe_id is None


@pytest.mark.parametrize(
    "sub",
    [
        pytest.param("user:bob", id="a non-URI user name"),
        pytest.param("spiffe://Acme.Example/x", id="an uppercase trust domain"),
        pytest.param("spiffe://acme.example", id="a trust domain with no workload path"),
        pytest.param("spiffe://acme.example/", id="a bare trailing slash"),
        pytest.param("spiffe://acme.example/a/../b", id="a dot-dot segment"),
        pytest.param("spiffe://acme.example:8443/a", id="a port"),
        pytest.param("spiffe://bob@acme.example/a", id="userinfo"),
        pytest.param("spiffe://acme.example/a?admin=1", id="a query"),
        pytest.param("spiffe://acme.example/a#frag", id="a fragment"),
        pytest.param("SPIFFE://acme.example/a", id="an uppercase scheme"),
        pytest.param("https://acme.example/a", id="another scheme"),
        pytest.param("spiffe://acme.example/a%2Fb", id="percent-encoding"),
        pytest.param(42, id="a number"),
        pytest.param(["spiffe://acme.example/a"], id="a list"),
    ],
)
def test_sub_that_is_not_a_workload_spiffe_id_is_refused(
    verifier: SVIDVerifier, keys: Keys, sub: Any
) -> None:
    identity = verifier.verify(sign(keys.ec, claims(sub=sub)))
    assert (identity.authenticated, identity.error_code) == (False, "authn.invalid_spiffe_id")


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("garbage", id="one word"),
        pytest.param("a.b", id="two parts"),
        pytest.param("a.b.c", id="three parts of junk"),
        pytest.param("a.b.c.d", id="four parts"),
        pytest.param("..", id="three empty parts"),
        pytest.param("Bearer x.y.z", id="a Bearer prefix left on"),
        pytest.param("é.é.é", id="non-ASCII"),
        pytest.param("\ud800.a.b", id="a lone surrogate"),
        pytest.param("!!!!.!!!!.!!!!", id="characters outside base64url"),
        pytest.param(forge(["ES256"], {}), id="a header that is a JSON array"),
        pytest.param(
            forge({"alg": "ES256", "kid": "acme-ec"}, []), id="a payload that is a JSON array"
        ),
        pytest.param(
            b64json({"alg": "ES256"}) + ".bm90IGpzb24.c2ln", id="a payload that is not JSON"
        ),
        pytest.param("a" * (MAX_TOKEN_LENGTH + 1), id="a 16 KiB string"),
        pytest.param("x." * 100_000, id="a very long dotted string"),
    ],
)
def test_garbage_is_malformed(verifier: SVIDVerifier, token: str) -> None:
    identity = verifier.verify(token)
    assert (identity.authenticated, identity.error_code) == (False, "authn.malformed")


@pytest.mark.parametrize("token", [None, ""], ids=["None", "the empty string"])
def test_absent_token_is_reported_missing(verifier: SVIDVerifier, token: str | None) -> None:
    identity = verifier.verify(token)
    assert (identity.authenticated, identity.error_code) == (False, "authn.token_missing")


@pytest.mark.parametrize("value", [b"a.b.c", 42, {"token": "x"}], ids=["bytes", "an int", "a dict"])
def test_non_string_input_does_not_raise(verifier: SVIDVerifier, value: Any) -> None:
    assert verifier.verify(value).error_code == "authn.malformed"


def test_key_whose_jwk_declares_an_alg_refuses_other_algs(keys: Keys) -> None:
    bundles = TrustBundles.from_documents({DOMAIN: bundle_doc(keys.rsa.public_jwk(alg="RS256"))})
    verifier = SVIDVerifier(bundles, AUDIENCE, clock=FakeClock())
    assert verifier.verify(sign(keys.rsa, alg="RS256")).authenticated
    assert verifier.verify(sign(keys.rsa, alg="PS256")).error_code == "authn.alg_not_allowed"


def test_unexpected_internal_error_fails_closed(
    verifier: SVIDVerifier, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(jwt, "decode", broken)
    identity = verifier.verify(sign(keys.ec))
    assert (identity.authenticated, identity.error_code) == (False, "authn.error")


# --------------------------------------------------------------------------- cache


def test_repeated_token_is_served_from_cache_without_reverifying(
    verifier: SVIDVerifier, keys: Keys, decode_calls: list[str]
) -> None:
    token = sign(keys.ec)
    first = verifier.verify(token)
    second = verifier.verify(token)
    assert first.authenticated and second == first
    assert len(decode_calls) == 1


def test_cached_token_expires_when_the_clock_passes_exp(
    verifier: SVIDVerifier, keys: Keys, clock: FakeClock, decode_calls: list[str]
) -> None:
    token = sign(keys.ec)
    assert verifier.verify(token).authenticated
    clock.now = NOW + 300 + LEEWAY
    assert verifier.verify(token).error_code == "authn.expired"
    assert len(decode_calls) == 1


def test_failures_are_not_cached(
    verifier: SVIDVerifier, keys: Keys, clock: FakeClock, decode_calls: list[str]
) -> None:
    token = sign(keys.ec, claims(nbf=NOW + 120))
    assert verifier.verify(token).error_code == "authn.not_yet_valid"
    clock.now = NOW + 120
    assert verifier.verify(token).authenticated
    assert len(decode_calls) == 2


def test_cache_evicts_least_recently_used_beyond_its_size(
    bundles: TrustBundles, keys: Keys, decode_calls: list[str]
) -> None:
    verifier = SVIDVerifier(bundles, AUDIENCE, cache_size=2, clock=FakeClock())
    first, second, third = (sign(keys.ec, claims(jti=f"j{n}")) for n in range(3))
    for token in (first, second, first, third):  # third evicts second, not first
        assert verifier.verify(token).authenticated
    assert verifier.verify(first).authenticated
    assert len(decode_calls) == 3
    assert verifier.verify(second).authenticated
    assert len(decode_calls) == 4


def test_cache_size_zero_disables_the_cache(
    bundles: TrustBundles, keys: Keys, decode_calls: list[str]
) -> None:
    verifier = SVIDVerifier(bundles, AUDIENCE, cache_size=0, clock=FakeClock())
    token = sign(keys.ec)
    assert verifier.verify(token).authenticated and verifier.verify(token).authenticated
    assert len(decode_calls) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"audience": ""}, id="an empty audience"),
        pytest.param({"leeway_seconds": -1}, id="a negative leeway"),
        pytest.param({"cache_size": -1}, id="a negative cache size"),
    ],
)
def test_verifier_rejects_bad_settings(bundles: TrustBundles, kwargs: dict[str, Any]) -> None:
    settings: dict[str, Any] = {"audience": AUDIENCE, **kwargs}
    with pytest.raises(ValueError):
        SVIDVerifier(bundles, **settings)


# --------------------------------------------------------------------------- to_input


def test_authenticated_identity_input_matches_the_schema(
    verifier: SVIDVerifier, keys: Keys
) -> None:
    document = verifier.verify(sign(keys.ec)).to_input()
    jsonschema.Draft202012Validator(identity_schema()).validate(document)
    assert document == {
        "authenticated": True,
        "spiffe_id": SPIFFE_ID,
        "trust_domain": DOMAIN,
        "path": ["agents", "support-bot"],
        "expires_at": NOW + 300,
        "jti": "jti-1",
        "error": None,
    }


def test_failed_identity_input_matches_the_schema_and_nulls_everything_else() -> None:
    failed = Identity(
        authenticated=False,
        spiffe_id=SPIFFE_ID,  # must not leak into the input even if set
        error_code="authn.expired",
        error_message="token has expired",
    )
    document = failed.to_input()
    jsonschema.Draft202012Validator(identity_schema()).validate(document)
    assert document == {
        "authenticated": False,
        "spiffe_id": None,
        "trust_domain": None,
        "path": None,
        "expires_at": None,
        "jti": None,
        "error": {"code": "authn.expired", "message": "token has expired"},
    }


def test_unauthenticated_identity_without_a_code_reports_unauthenticated() -> None:
    document = Identity(authenticated=False).to_input()
    jsonschema.Draft202012Validator(identity_schema()).validate(document)
    assert document["error"] == {"code": "authn.unauthenticated", "message": "not authenticated"}


def test_failure_requires_an_authn_code() -> None:
    with pytest.raises(ValueError, match="authn"):
        Identity.failure("expired", "token has expired")


# --------------------------------------------------------------------------- SPIFFE IDs


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("spiffe://acme.example/agents/bot", ("acme.example", ("agents", "bot"))),
        ("spiffe://acme.example", ("acme.example", ())),
        ("spiffe://a_b-c.9/A.b_C-9/x", ("a_b-c.9", ("A.b_C-9", "x"))),
        ("spiffe://acme.example/...", ("acme.example", ("...",))),
    ],
    ids=["a workload", "a trust domain", "every allowed character", "three dots"],
)
def test_parse_spiffe_id_splits_domain_and_path(
    value: str, expected: tuple[str, tuple[str, ...]]
) -> None:
    assert parse_spiffe_id(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("acme.example/a", "scheme"),
        ("spiffe:/acme.example/a", "scheme"),
        ("spiffe:///a", "trust domain is missing"),
        ("spiffe://Acme.example/a", "lowercase"),
        ("spiffe://acme example/a", "may contain only"),
        ("spiffe://acme.example:8443/a", "port"),
        ("spiffe://u:p@acme.example/a", "userinfo"),
        ("spiffe://acme.example/a?b", "query"),
        ("spiffe://acme.example/a#b", "fragment"),
        ("spiffe://acme.example/a//b", "empty segment"),
        ("spiffe://acme.example/a/", "trailing"),
        ("spiffe://acme.example/./a", "'.'"),
        ("spiffe://acme.example/a/..", "'..'"),
        ("spiffe://acme.example/a b", "may contain only"),
        ("spiffe://acme.example/é", "ASCII"),
        ("spiffe://acme.example/" + "a" * 2048, "longer than 2048"),
        ("spiffe://" + "a" * 256 + "/x", "longer than 255"),
    ],
    ids=lambda v: v if len(v) < 40 else v[:37] + "...",
)
def test_parse_spiffe_id_rejects_invalid_ids_precisely(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_spiffe_id(value)


# --------------------------------------------------------------------------- trust bundles


def test_bundles_expose_domains_and_keys_by_kid(bundles: TrustBundles, keys: Keys) -> None:
    assert bundles.domains() == {DOMAIN, OTHER_DOMAIN}
    key = bundles.key(DOMAIN, keys.ec.kid)
    assert key is not None
    assert key.public_numbers() == keys.ec.private_key.public_key().public_numbers()
    assert bundles.key(DOMAIN, keys.beta.kid) is None
    assert bundles.key("evil.example", keys.ec.kid) is None


@pytest.mark.parametrize(
    ("make_doc", "message"),
    [
        pytest.param(
            lambda k: bundle_doc(k.ec.private_jwk()),
            "private key material",
            id="an EC private key is rejected",
        ),
        pytest.param(
            lambda k: bundle_doc(k.rsa.private_jwk()),
            "private key material",
            id="an RSA private key is rejected",
        ),
        pytest.param(
            lambda k: bundle_doc(k.ec.public_jwk(), {**k.beta.private_jwk(), "use": "x509-svid"}),
            "private key material",
            id="a private key is rejected even when its use is ignored",
        ),
        pytest.param(
            lambda k: bundle_doc(
                k.ec.public_jwk(), {"kty": "oct", "kid": "h", "use": "jwt-svid", "k": "c2VjcmV0"}
            ),
            "private key material",
            id="an oct key with its secret is rejected",
        ),
        pytest.param(
            lambda k: bundle_doc(k.ec.public_jwk(), {"kty": "oct", "kid": "h", "use": "jwt-svid"}),
            "symmetric",
            id="an oct key is rejected",
        ),
        pytest.param(
            lambda k: bundle_doc(k.ec.public_jwk(kid=None)),
            "has no 'kid'",
            id="a JWT-SVID key without a kid is rejected",
        ),
        pytest.param(
            lambda k: bundle_doc(k.ec.public_jwk(), k.ec384.public_jwk(kid=k.ec.kid)),
            "more than once",
            id="a duplicate kid is rejected",
        ),
        pytest.param(
            lambda k: bundle_doc(k.ec.public_jwk(alg="RS256")),
            "not a JWT-SVID alg",
            id="an EC key declaring RS256 is rejected",
        ),
        pytest.param(
            lambda k: bundle_doc(k.rsa.public_jwk(alg="HS256")),
            "not a JWT-SVID alg",
            id="an RSA key declaring HS256 is rejected",
        ),
        pytest.param(
            lambda k: bundle_doc(k.ec.public_jwk(crv="secp256k1")),
            "curve",
            id="a secp256k1 key is rejected",
        ),
        pytest.param(
            lambda k: bundle_doc(k.ec.public_jwk(x="AAAA")),
            "not a valid EC public key",
            id="broken key material is rejected",
        ),
        pytest.param(
            lambda k: bundle_doc(k.ec.public_jwk(use="x509-svid")),
            "no keys usable for JWT-SVIDs",
            id="a bundle with only X.509 keys is rejected",
        ),
        pytest.param(
            lambda k: bundle_doc(k.ec.public_jwk(use=None)),
            "no keys usable for JWT-SVIDs",
            id="a key without use in a SPIFFE bundle is ignored",
        ),
        pytest.param(lambda k: {"spiffe_sequence": 1}, "'keys'", id="a bundle without keys"),
        pytest.param(
            lambda k: bundle_doc(k.ec.public_jwk()) | {"spiffe_sequence": "1"},
            "spiffe_sequence",
            id="a non-integer spiffe_sequence is rejected",
        ),
        pytest.param(
            lambda k: bundle_doc(cast(Any, "not a jwk")),
            "not a JSON object",
            id="a JWK that is a string",
        ),
    ],
)
def test_unusable_bundle_is_rejected_naming_the_domain(
    keys: Keys, make_doc: Callable[[Keys], Any], message: str
) -> None:
    with pytest.raises(TrustBundleError, match=message) as raised:
        TrustBundles.from_documents({DOMAIN: make_doc(keys)})
    assert DOMAIN in str(raised.value)


def test_short_rsa_key_is_rejected() -> None:
    short = rsa_key("short", bits=1024)
    with pytest.raises(TrustBundleError, match="1024-bit"):
        TrustBundles.from_documents({DOMAIN: bundle_doc(short.public_jwk())})


def test_invalid_trust_domain_name_is_rejected(keys: Keys) -> None:
    with pytest.raises(TrustBundleError, match="invalid trust domain name"):
        TrustBundles.from_documents({"Acme.Example": bundle_doc(keys.ec.public_jwk())})


def test_keys_for_other_uses_and_types_are_ignored(keys: Keys) -> None:
    bundles = TrustBundles.from_documents(
        {
            DOMAIN: bundle_doc(
                keys.ec.public_jwk(),
                keys.ec384.public_jwk(use="x509-svid"),
                keys.beta.public_jwk(use=None),
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                    "kid": "ed",
                    "use": "jwt-svid",
                },
            )
        }
    )
    assert bundles.key(DOMAIN, keys.ec.kid) is not None
    assert bundles.key(DOMAIN, keys.ec384.kid) is None
    assert bundles.key(DOMAIN, keys.beta.kid) is None
    assert bundles.key(DOMAIN, "ed") is None


def test_plain_jwks_keys_without_use_are_accepted(keys: Keys) -> None:
    bundles = TrustBundles.from_documents(
        {DOMAIN: bundle_doc(keys.ec.public_jwk(use=None), spiffe=False)}
    )
    assert bundles.key(DOMAIN, keys.ec.kid) is not None


def test_bundles_load_from_files(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "acme.json"
    path.write_text(json.dumps(bundle_doc(keys.ec.public_jwk())), encoding="utf-8")
    bundles = TrustBundles.from_files({DOMAIN: path})
    verifier = SVIDVerifier(bundles, AUDIENCE, clock=FakeClock())
    assert verifier.verify(sign(keys.ec)).authenticated


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(None, "cannot be read", id="a missing file"),
        pytest.param("{not json", "not valid JSON", id="a file that is not JSON"),
        pytest.param("[]", "JSON object", id="a file holding a JSON array"),
    ],
)
def test_unreadable_bundle_file_is_rejected_naming_domain_and_path(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "bundle.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(TrustBundleError, match=message) as raised:
        TrustBundles.from_files({DOMAIN: path})
    assert DOMAIN in str(raised.value) and str(path) in str(raised.value)


# --------------------------------------------------------------------------- dev trust


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_ensure_dev_trust_is_idempotent(tmp_path: Path) -> None:
    first = ensure_dev_trust(tmp_path, [DOMAIN, OTHER_DOMAIN])
    keys_before = {d: (p.parent / "key.pem").read_bytes() for d, p in first.items()}
    bundles_before = {d: p.read_bytes() for d, p in first.items()}
    second = ensure_dev_trust(tmp_path, [DOMAIN, OTHER_DOMAIN])
    assert (
        second
        == first
        == {
            DOMAIN: tmp_path / "dev-trust" / DOMAIN / "bundle.json",
            OTHER_DOMAIN: tmp_path / "dev-trust" / OTHER_DOMAIN / "bundle.json",
        }
    )
    assert {d: (p.parent / "key.pem").read_bytes() for d, p in second.items()} == keys_before
    assert {d: p.read_bytes() for d, p in second.items()} == bundles_before
    assert keys_before[DOMAIN] != keys_before[OTHER_DOMAIN]


def test_dev_trust_files_are_private(tmp_path: Path) -> None:
    bundle = ensure_dev_trust(tmp_path, [DOMAIN])[DOMAIN]
    assert mode(bundle.parent / "key.pem") == 0o600
    assert mode(bundle.parent) == 0o700
    assert mode(tmp_path / "dev-trust") == 0o700


def test_loosened_key_permissions_are_tightened_again(tmp_path: Path) -> None:
    key = ensure_dev_trust(tmp_path, [DOMAIN])[DOMAIN].parent / "key.pem"
    os.chmod(key, 0o644)
    ensure_dev_trust(tmp_path, [DOMAIN])
    assert mode(key) == 0o600


def test_dev_bundle_is_a_spiffe_bundle_keyed_by_thumbprint(tmp_path: Path) -> None:
    bundle = json.loads(ensure_dev_trust(tmp_path, [DOMAIN])[DOMAIN].read_text("utf-8"))
    (jwk,) = bundle["keys"]
    assert {k: jwk[k] for k in ("kty", "crv", "use", "alg")} == {
        "kty": "EC",
        "crv": "P-256",
        "use": "jwt-svid",
        "alg": "ES256",
    }
    assert jwk["kid"] == jwk_thumbprint(jwk)
    assert "d" not in jwk
    assert bundle["spiffe_sequence"] == 1 and bundle["spiffe_refresh_hint"] > 0


def test_jwk_thumbprint_matches_rfc_7638_example() -> None:
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1"
        "L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5"
        "v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08"
        "qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8aw"
        "apJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_minted_svid_verifies_against_the_dev_bundle(tmp_path: Path) -> None:
    clock = FakeClock()
    bundles = TrustBundles.from_files(ensure_dev_trust(tmp_path, [DOMAIN, OTHER_DOMAIN]))
    verifier = SVIDVerifier(bundles, DEV_AUDIENCE_DEFAULT, clock=clock)
    token = mint_svid(tmp_path, SPIFFE_ID, ttl_seconds=60, clock=clock, extra_claims={"x": 1})
    identity = verifier.verify(token)
    assert identity.authenticated, identity.error_message
    assert (identity.spiffe_id, identity.trust_domain, identity.expires_at) == (
        SPIFFE_ID,
        DOMAIN,
        NOW + 60,
    )
    assert identity.jti and identity.kid == jwt.get_unverified_header(token)["kid"]
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": identity.kid, "typ": "JWT"}


def test_minted_svids_get_distinct_jtis(tmp_path: Path) -> None:
    ensure_dev_trust(tmp_path, [DOMAIN])
    first, second = (
        jwt.decode(mint_svid(tmp_path, SPIFFE_ID), options={"verify_signature": False})
        for _ in range(2)
    )
    assert first["jti"] != second["jti"]


def test_minting_for_a_domain_without_a_dev_key_names_the_domain(tmp_path: Path) -> None:
    ensure_dev_trust(tmp_path, [DOMAIN])
    with pytest.raises(DevTrustError, match="'globex.example' has no dev signing key"):
        mint_svid(tmp_path, "spiffe://globex.example/agents/x")


@pytest.mark.parametrize(
    "spiffe_id",
    ["spiffe://acme.example", "not-a-spiffe-id"],
    ids=["a trust domain ID", "a non-SPIFFE string"],
)
def test_minting_for_a_non_workload_id_is_refused(tmp_path: Path, spiffe_id: str) -> None:
    ensure_dev_trust(tmp_path, [DOMAIN])
    with pytest.raises(DevTrustError, match="cannot mint"):
        mint_svid(tmp_path, spiffe_id)


def test_extra_claims_cannot_override_identity_claims(tmp_path: Path) -> None:
    ensure_dev_trust(tmp_path, [DOMAIN])
    with pytest.raises(ValueError, match="sub"):
        mint_svid(tmp_path, SPIFFE_ID, extra_claims={"sub": "spiffe://acme.example/admin"})


@pytest.mark.parametrize(
    "domain",
    ["Acme.Example", "..", "acme.example/x", ""],
    ids=["uppercase", "a parent-directory name", "a path", "empty"],
)
def test_invalid_dev_trust_domain_is_refused(tmp_path: Path, domain: str) -> None:
    with pytest.raises(DevTrustError, match="invalid dev trust domain"):
        ensure_dev_trust(tmp_path, [domain])
    assert not (tmp_path / "dev-trust").exists()
