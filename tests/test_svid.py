"""pdp.identity.svid, the parts tests/test_identity.py reaches only loosely: every refusal's
exact code and message (what policies, the audit trail and an operator see), the bounds
(token length, NumericDate range, clock skew, lifetime), the cache at its edges, bundle
replacement, the PyJWT options that must stay off or on, and the settings.

Fast (EC keys made once per module; the RSA keys only for the tests that need them) and
fixture-free apart from pytest's own: it runs without the conftest.
"""

from __future__ import annotations

import math
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.warnings import InsecureKeyLengthWarning

from pdp.identity import MAX_TOKEN_LENGTH, Identity, SVIDVerifier, TrustBundles
from pdp.identity.bundles import TrustedKey
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
    forge,
    rsa_key,
    sign,
)

LEEWAY = 30
DAY = 86400
EC = ec_key("acme-ec")
EC521 = ec_key("acme-ec521", ec.SECP521R1())
BETA = ec_key("beta-ec")
OTHER_SUB = "spiffe://beta.example/agents/reporter"


def bundles_of(*keys: KeyPair, beta: KeyPair = BETA) -> TrustBundles:
    return TrustBundles.from_documents(
        {
            DOMAIN: bundle_doc(*(k.public_jwk() for k in keys)),
            OTHER_DOMAIN: bundle_doc(beta.public_jwk()),
        }
    )


BUNDLES = bundles_of(EC, EC521)


def verifier(
    clock: FakeClock | None = None, bundles: TrustBundles = BUNDLES, **kwargs: Any
) -> SVIDVerifier:
    return SVIDVerifier(
        bundles, AUDIENCE, clock=clock or FakeClock(), **{"leeway_seconds": LEEWAY, **kwargs}
    )


def refusal(identity: Identity) -> tuple[bool, str | None, str | None]:
    return identity.authenticated, identity.error_code, identity.error_message


@pytest.fixture(scope="module")
def rsa2048() -> KeyPair:
    return rsa_key("acme-rsa")


# --------------------------------------------------------------------------- refusals

REFUSALS: list[Any] = [
    pytest.param(None, "authn.token_missing", "no agent token was presented", id="no token"),
    pytest.param(b"a.b.c", "authn.malformed", "the token must be a string", id="bytes"),
    pytest.param("é.é.é", "authn.malformed", "token contains non-ASCII characters", id="non-ascii"),
    pytest.param(
        "a.b",
        "authn.malformed",
        "token is not a compact JWS (header.payload.signature)",
        id="two parts",
    ),
    pytest.param(
        "!!!!.e30.c2ln",
        "authn.malformed",
        "token is not a compact JWS (header.payload.signature)",
        id="outside base64url",
    ),
    pytest.param(
        "bm90IGpzb24.e30.c2ln",
        "authn.malformed",
        "token header is not base64url JSON",
        id="header not JSON",
    ),
    pytest.param(
        b64json({"alg": "ES256", "kid": "acme-ec"}) + ".bm90IGpzb24.c2ln",
        "authn.malformed",
        "token payload is not base64url JSON",
        id="payload not JSON",
    ),
    pytest.param(
        forge(["ES256"], {}),
        "authn.malformed",
        "token header is not a JSON object",
        id="header an array",
    ),
    pytest.param(
        forge({"alg": "ES256"}, [1]),
        "authn.malformed",
        "token payload is not a JSON object",
        id="payload an array",
    ),
    pytest.param(
        forge({"alg": "ES256", "kid": "acme-ec", "x5u": "u", "jku": "u"}, claims()),
        "authn.malformed",
        "header parameter 'jku' is not permitted in a JWT-SVID",
        id="extra headers: the first named",
    ),
    pytest.param(
        forge({"alg": "ES256", "kid": "acme-ec", "typ": "at+jwt"}, claims()),
        "authn.malformed",
        "typ 'at+jwt' is not JWT or JOSE",
        id="other typ",
    ),
    pytest.param(
        forge({"alg": "ES256", "kid": "acme-ec", "typ": ["JWT"]}, claims()),
        "authn.malformed",
        "typ ['JWT'] is not JWT or JOSE",
        id="typ a list",
    ),
    pytest.param(
        forge({"kid": "acme-ec", "typ": "JWT"}, claims()),
        "authn.malformed",
        "token header has no alg",
        id="no alg",
    ),
    pytest.param(
        forge({"alg": "HS256", "kid": "acme-ec"}, claims()),
        "authn.alg_not_allowed",
        "alg 'HS256' is not allowed",
        id="HS256",
    ),
    pytest.param(
        forge({"alg": "ES256", "kid": ""}, claims()),
        "authn.unknown_kid",
        "token header has no kid",
        id="empty kid",
    ),
    pytest.param(
        forge({"alg": "ES256"}, claims()),
        "authn.unknown_kid",
        "token header has no kid",
        id="no kid",
    ),
    pytest.param(
        forge({"alg": "ES256", "kid": 7}, claims()),
        "authn.malformed",
        "kid must be a string",
        id="kid a number",
    ),
    pytest.param(
        forge({"alg": "ES256", "kid": "acme-ec"}, claims(sub=None)),
        "authn.missing_claim",
        "required claim 'sub' is missing",
        id="no sub",
    ),
    pytest.param(
        forge({"alg": "ES256", "kid": "acme-ec"}, claims(sub="user:bob")),
        "authn.invalid_spiffe_id",
        "sub is not a valid SPIFFE ID: 'user:bob' is not a SPIFFE ID: the scheme must be "
        "'spiffe://'",
        id="sub not a SPIFFE ID",
    ),
    pytest.param(
        forge({"alg": "ES256", "kid": "acme-ec"}, claims(sub="spiffe://acme.example")),
        "authn.invalid_spiffe_id",
        "sub names a trust domain, not a workload (no path)",
        id="sub without a path",
    ),
    pytest.param(
        forge({"alg": "ES256", "kid": "acme-ec"}, claims(sub="spiffe://evil.example/a")),
        "authn.untrusted_domain",
        "trust domain 'evil.example' is not trusted",
        id="untrusted domain",
    ),
    pytest.param(
        forge({"alg": "ES256", "kid": "beta-ec"}, claims()),
        "authn.unknown_kid",
        "no key with kid 'beta-ec' in the trust bundle of 'acme.example'",
        id="another domain's kid",
    ),
    pytest.param(
        forge({"alg": "ES384", "kid": "acme-ec"}, claims()),
        "authn.alg_not_allowed",
        "alg ES384 cannot be used with key 'acme-ec' of 'acme.example'",
        id="alg the key cannot serve",
    ),
    pytest.param(
        forge({"alg": "ES256", "kid": "acme-ec"}, claims(), b"\0" * 64),
        "authn.invalid_signature",
        "token signature does not verify",
        id="bad signature",
    ),
]


@pytest.mark.parametrize(("token", "code", "message"), REFUSALS)
def test_each_refusal_has_its_code_and_a_message_saying_what_is_wrong(
    token: Any, code: str, message: str
) -> None:
    assert refusal(verifier().verify(token)) == (False, code, message)


SIGNED_REFUSALS: list[Any] = [
    pytest.param(
        claims(aud=None), "authn.missing_claim", "required claim 'aud' is missing", id="no aud"
    ),
    pytest.param(
        claims(exp=None), "authn.missing_claim", "required claim 'exp' is missing", id="no exp"
    ),
    pytest.param(
        claims(aud=["reports"]),
        "authn.audience_mismatch",
        "token audience does not include 'agent-pdp'",
        id="other audience",
    ),
    pytest.param(
        claims(jti=42), "authn.malformed", "invalid token: JWT ID must be a string", id="jti int"
    ),
    pytest.param(
        claims(exp="soon"),
        "authn.malformed",
        "claim 'exp' must be a number (NumericDate)",
        id="exp a string",
    ),
    pytest.param(
        claims(nbf=True),
        "authn.malformed",
        "claim 'nbf' must be a number (NumericDate)",
        id="nbf a boolean",
    ),
    pytest.param(
        claims(exp=2**53),
        "authn.malformed",
        "claim 'exp' must be a finite number below 2^53",
        id="exp 2^53",
    ),
    pytest.param(
        claims(nbf=-(2**53)),
        "authn.malformed",
        "claim 'nbf' must be a finite number below 2^53",
        id="nbf -2^53",
    ),
    pytest.param(
        claims(iat=10**400),
        "authn.malformed",
        "claim 'iat' must be a finite number below 2^53",
        id="iat beyond a double",
    ),
    pytest.param(
        claims(exp=math.nan),
        "authn.malformed",
        "claim 'exp' must be a finite number below 2^53",
        id="exp NaN",
    ),
    pytest.param(
        claims(exp=math.inf),
        "authn.malformed",
        "claim 'exp' must be a finite number below 2^53",
        id="exp infinite",
    ),
    pytest.param(
        claims(exp=2**53 - 1),
        "authn.lifetime_too_long",
        f"token lifetime {2**53 - 1 - NOW} s exceeds the maximum {DAY} s",
        id="exp 2^53-1 is a date, and far too late",
    ),
    pytest.param(
        claims(exp=NOW - LEEWAY), "authn.expired", "token has expired", id="expired by the leeway"
    ),
    pytest.param(
        claims(nbf=NOW + LEEWAY + 1),
        "authn.not_yet_valid",
        "token is not valid yet (nbf)",
        id="nbf beyond the leeway",
    ),
    pytest.param(
        claims(iat=NOW + LEEWAY + 1, exp=NOW + 600),
        "authn.issued_in_future",
        "token is issued in the future (iat)",
        id="iat beyond the leeway",
    ),
    pytest.param(
        claims(iat=NOW, exp=NOW + DAY + 1),
        "authn.lifetime_too_long",
        f"token lifetime {DAY + 1} s exceeds the maximum {DAY} s",
        id="a day and a second",
    ),
    pytest.param(
        claims(iat=None, exp=NOW + DAY + 1),
        "authn.lifetime_too_long",
        f"token lifetime {DAY + 1} s exceeds the maximum {DAY} s",
        id="no iat: counted from now",
    ),
]


@pytest.mark.parametrize(("payload", "code", "message"), SIGNED_REFUSALS)
def test_a_signed_token_with_bad_claims_is_refused_with_its_code_and_message(
    payload: dict[str, Any], code: str, message: str
) -> None:
    assert refusal(verifier().verify(sign(EC, payload))) == (False, code, message)


# --------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(claims(iat=NOW, exp=NOW + DAY), id="a lifetime of exactly a day"),
        pytest.param(claims(iat=None, exp=NOW + DAY), id="a day from now without iat"),
        pytest.param(claims(nbf=NOW + LEEWAY), id="nbf ahead by exactly the leeway"),
        pytest.param(claims(iat=NOW + LEEWAY), id="iat ahead by exactly the leeway"),
        pytest.param(claims(nbf=-(2**53 - 1)), id="the earliest NumericDate"),
    ],
)
def test_a_token_at_the_edge_of_each_bound_is_accepted(payload: dict[str, Any]) -> None:
    identity = verifier().verify(sign(EC, payload))

    assert identity.authenticated, identity.error_message


def sized_token(length: int) -> str:
    """A validly signed token of exactly ``length`` characters (a padding claim)."""
    base = len(sign(EC, claims(jti="j", pad="")))
    start = max(0, (length - base) * 3 // 4 - 4)
    for pad in range(start, start + 12):
        for jti in ("j", "jj"):  # base64 grows in steps of 1-2 characters: try both
            token = sign(EC, claims(jti=jti, pad="x" * pad))
            if len(token) == length:
                return token
    raise AssertionError(f"no token of {length} characters")


def test_a_token_of_exactly_16_kib_is_verified_and_one_character_more_is_not() -> None:
    longest = sized_token(MAX_TOKEN_LENGTH)
    too_long = sized_token(MAX_TOKEN_LENGTH + 1)

    assert MAX_TOKEN_LENGTH == 16 * 1024
    assert verifier().verify(longest).authenticated
    assert refusal(verifier().verify(too_long)) == (
        False,
        "authn.malformed",
        "token is longer than 16384 characters",
    )


@pytest.mark.parametrize("kid", ["k", "k2", "k23", "k234"])
def test_headers_of_every_length_modulo_4_decode(kid: str) -> None:
    # base64url segments arrive unpadded; each length class needs its own padding back.
    key = ec_key(kid)
    bundles = TrustBundles.from_documents({DOMAIN: bundle_doc(key.public_jwk())})

    assert verifier(bundles=bundles).verify(sign(key)).authenticated


def test_time_claims_are_judged_by_the_verifiers_clock_not_the_wall_clock() -> None:
    # A clock far ahead of the wall clock: PyJWT's own nbf/iat/exp checks (which use the
    # wall clock) must stay off, or this valid token would be refused as not yet valid.
    later = 4_102_444_800  # 2100-01-01
    token = sign(EC, claims(iat=later, nbf=later, exp=later + 300))

    assert verifier(FakeClock(later)).verify(token).authenticated


def test_a_leeway_of_zero_is_allowed_and_then_exp_is_exact() -> None:
    clock = FakeClock(NOW + 299)
    strict = verifier(clock, leeway_seconds=0)
    token = sign(EC)

    assert strict.leeway_seconds == 0
    assert strict.verify(token).authenticated
    clock.now = NOW + 300
    assert strict.verify(token).error_code == "authn.expired"


def test_the_defaults_are_30_seconds_of_skew_and_a_day_of_lifetime() -> None:
    default = SVIDVerifier(BUNDLES, AUDIENCE, clock=FakeClock())

    assert (default.audience, default.bundles, default.leeway_seconds) == (
        AUDIENCE,
        BUNDLES,
        30,
    )
    assert default.verify(sign(EC, claims(iat=NOW, exp=NOW + DAY))).authenticated
    assert default.verify(sign(EC, claims(iat=NOW, exp=NOW + DAY + 1))).error_code == (
        "authn.lifetime_too_long"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"audience": ""}, "audience must be a non-empty string"),
        ({"leeway_seconds": -1}, "leeway_seconds must be >= 0"),
        ({"cache_size": -1}, "cache_size must be >= 0"),
    ],
    ids=["audience", "leeway", "cache-size"],
)
def test_a_bad_setting_is_refused_naming_it(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        SVIDVerifier(BUNDLES, **{"audience": AUDIENCE, **kwargs})


# --------------------------------------------------------------------------- algorithms


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
def test_every_rsa_jwt_svid_alg_verifies(rsa2048: KeyPair, alg: str) -> None:
    bundles = TrustBundles.from_documents({DOMAIN: bundle_doc(rsa2048.public_jwk())})

    assert verifier(bundles=bundles).verify(sign(rsa2048, alg=alg)).authenticated


def test_es512_verifies_with_a_p521_key() -> None:
    assert verifier().verify(sign(EC521, alg="ES512")).authenticated


def test_a_short_rsa_key_that_reached_the_bundles_is_still_refused() -> None:
    # The bundle loader refuses keys under 2048 bits; PyJWT's own minimum-length check is
    # the second line, for key sets built any other way.
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    bundles = TrustBundles({DOMAIN: {"short": TrustedKey(short.public_key(), "RSA", None, None)}})
    with pytest.warns(InsecureKeyLengthWarning):
        token = sign(KeyPair(short, "short"), alg="RS256")

    identity = verifier(bundles=bundles).verify(token)

    assert (identity.authenticated, identity.error_code) == (False, "authn.alg_not_allowed")


def test_an_unexpected_failure_is_a_deny_naming_only_the_exception_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(jwt, "decode", broken)

    assert refusal(verifier().verify(sign(EC))) == (
        False,
        "authn.error",
        "token verification failed unexpectedly (RuntimeError)",
    )


# --------------------------------------------------------------------------- cache


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = jwt.decode

    def spy(token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", spy)
    return calls


def test_a_cached_token_is_served_within_the_leeway_after_exp(decodes: list[str]) -> None:
    clock = FakeClock()
    cached = verifier(clock)
    token = sign(EC)
    assert cached.verify(token).authenticated

    clock.now = NOW + 300 + LEEWAY - 1
    assert cached.verify(token).authenticated
    clock.now = NOW + 300 + LEEWAY
    assert refusal(cached.verify(token)) == (False, "authn.expired", "token has expired")
    assert len(decodes) == 1


def test_an_expired_token_leaves_the_cache() -> None:
    clock = FakeClock()
    cached = verifier(clock)
    token = sign(EC)
    assert cached.verify(token).authenticated

    clock.now = NOW + 300 + LEEWAY
    assert cached.verify(token).error_code == "authn.expired"
    assert cached.replace_bundles(BUNDLES, {DOMAIN}) == 0


def test_a_cache_holds_as_many_tokens_as_its_size(decodes: list[str]) -> None:
    cached = verifier(cache_size=2)
    first, second = sign(EC, claims(jti="a")), sign(EC, claims(jti="b"))
    for token in (first, second, first, second):
        assert cached.verify(token).authenticated

    assert decodes == [first, second]


def test_replacing_bundles_forgets_only_the_changed_domains_tokens(decodes: list[str]) -> None:
    cached = verifier()
    acme, beta = sign(EC), sign(BETA, claims(sub=OTHER_SUB))
    assert cached.verify(acme).authenticated and cached.verify(beta).authenticated
    rotated = bundles_of(EC521)  # acme's EC key is gone

    dropped = cached.replace_bundles(rotated, {DOMAIN})

    assert (dropped, cached.bundles) == (1, rotated)
    assert cached.verify(beta).authenticated  # still cached
    assert refusal(cached.verify(acme)) == (
        False,
        "authn.unknown_kid",
        "no key with kid 'acme-ec' in the trust bundle of 'acme.example'",
    )
    assert decodes == [acme, beta]


def test_replaced_bundles_bring_their_trust_domains() -> None:
    cached = verifier(bundles=TrustBundles.from_documents({DOMAIN: bundle_doc(EC.public_jwk())}))
    beta = sign(BETA, claims(sub=OTHER_SUB))
    assert cached.verify(beta).error_code == "authn.untrusted_domain"

    assert cached.replace_bundles(BUNDLES, {OTHER_DOMAIN}) == 0
    assert cached.verify(beta).authenticated


def test_the_identity_comes_from_the_verified_claims() -> None:
    identity = verifier().verify(sign(EC, claims(jti=None, exp=NOW + 300.5)))

    assert identity == Identity(
        authenticated=True,
        spiffe_id=SPIFFE_ID,
        trust_domain=DOMAIN,
        path=("agents", "support-bot"),
        expires_at=NOW + 300,
        jti=None,
        kid="acme-ec",
    )
