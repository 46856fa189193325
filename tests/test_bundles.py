"""pdp.identity.bundles, the parts tests/test_identity.py reaches only loosely: the file size
bound, each private JWK member, the SPIFFE bundle members' types, which keys count as a
SPIFFE bundle's, the curve and alg checks, and the lookups.

Fast (EC keys only; one short RSA key): no conftest fixtures.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pdp.identity import TrustBundleError, TrustBundles
from pdp.identity.bundles import MAX_BUNDLE_FILE_BYTES, MIN_RSA_KEY_BITS, TrustedKey
from tests.identity_helpers import DOMAIN, OTHER_DOMAIN, bundle_doc, ec_key, rsa_key

EC = ec_key("acme-ec")
EC384 = ec_key("acme-ec384", ec.SECP384R1())
EC521 = ec_key("acme-ec521", ec.SECP521R1())


def refusal(doc: Any, domain: Any = DOMAIN) -> str:
    with pytest.raises(TrustBundleError) as info:
        TrustBundles.from_documents({domain: doc})
    return str(info.value)


# --------------------------------------------------------------------------- files


def test_a_bundle_file_of_exactly_1_mib_loads_and_one_byte_more_is_refused(
    tmp_path: Path,
) -> None:
    doc = json.dumps(bundle_doc(EC.public_jwk())).encode()
    exact = tmp_path / "exact.json"
    exact.write_bytes(doc + b" " * (MAX_BUNDLE_FILE_BYTES - len(doc)))
    over = tmp_path / "over.json"
    over.write_bytes(doc + b" " * (MAX_BUNDLE_FILE_BYTES + 1 - len(doc)))

    assert MAX_BUNDLE_FILE_BYTES == 1024 * 1024
    assert TrustBundles.from_files({DOMAIN: exact}).domains() == {DOMAIN}
    with pytest.raises(TrustBundleError) as info:
        TrustBundles.from_files({DOMAIN: over})
    assert str(info.value) == (
        f"trust bundle for {DOMAIN!r} at {str(over)!r} is larger than 1048576 bytes"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[]", "must be a JSON object (a JWKS)"),
        (b'"keys"', "must be a JSON object (a JWKS)"),
    ],
    ids=["array", "string"],
)
def test_a_bundle_file_that_is_not_an_object_is_refused(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "b.json"
    path.write_bytes(content)

    with pytest.raises(TrustBundleError) as info:
        TrustBundles.from_files({DOMAIN: path})

    assert str(info.value) == f"trust bundle for {DOMAIN!r} at {str(path)!r} {problem}"


def test_a_bundle_file_that_is_not_json_is_refused_naming_domain_and_path(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.json"
    path.write_bytes(b"{not json")

    with pytest.raises(TrustBundleError) as info:
        TrustBundles.from_files({DOMAIN: path})

    assert str(info.value).startswith(
        f"trust bundle for {DOMAIN!r} at {str(path)!r} is not valid JSON: "
    )


def test_an_unreadable_bundle_file_names_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"

    with pytest.raises(TrustBundleError) as info:
        TrustBundles.from_files({DOMAIN: missing})

    assert str(info.value) == (
        f"trust bundle for {DOMAIN!r} at {str(missing)!r} cannot be read: No such file or directory"
    )


# --------------------------------------------------------------------------- documents


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth", "k"])
def test_any_private_jwk_member_is_refused_even_on_an_otherwise_public_key(member: str) -> None:
    message = refusal(bundle_doc(EC.public_jwk(**{member: "AQAB"})))

    assert message == (
        f"trust bundle for {DOMAIN!r}: keys[0] contains private key material ({member}); "
        "bundles must hold public keys only"
    )


def test_private_members_are_named_in_order() -> None:
    assert refusal(bundle_doc(EC.public_jwk(q="AQAB", d="AQAB"))).endswith(
        "keys[0] contains private key material (d, q); bundles must hold public keys only"
    )


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ({"spiffe_sequence": "1"}, "'spiffe_sequence' must be an integer"),
        ({"spiffe_sequence": True}, "'spiffe_sequence' must be an integer"),
        ({"spiffe_refresh_hint": 1.5}, "'spiffe_refresh_hint' must be an integer"),
        ({"spiffe_refresh_hint": False}, "'spiffe_refresh_hint' must be an integer"),
    ],
    ids=["sequence-string", "sequence-bool", "hint-float", "hint-bool"],
)
def test_spiffe_bundle_members_must_be_integers(members: dict[str, Any], problem: str) -> None:
    assert refusal({**bundle_doc(EC.public_jwk()), **members}) == (
        f"trust bundle for {DOMAIN!r}: {problem}"
    )


@pytest.mark.parametrize(
    "members",
    [{"spiffe_sequence": 0, "spiffe_refresh_hint": 0}, {"spiffe_sequence": None}],
    ids=["zeros", "null"],
)
def test_integer_or_null_spiffe_members_are_accepted(members: dict[str, Any]) -> None:
    bundles = TrustBundles.from_documents({DOMAIN: {**bundle_doc(EC.public_jwk()), **members}})

    assert bundles.key(DOMAIN, EC.kid) is not None


def test_any_spiffe_member_makes_use_mandatory() -> None:
    # A document with any spiffe_* member is a SPIFFE bundle: a key without "use" is not
    # one of its JWT-SVID keys (it is in a plain JWKS).
    doc = {"keys": [EC.public_jwk(use=None)], "spiffe_custom": 1}

    assert refusal(doc) == (
        f"trust bundle for {DOMAIN!r}: no keys usable for JWT-SVIDs "
        "(need RSA or EC keys with use 'jwt-svid')"
    )


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"keys": {}}, "'keys' must be present and be a list of JWKs"),
        ([], "the document must be a JSON object (a JWKS)"),
        ({"keys": [7]}, "keys[0] is not a JSON object"),
        (
            {"keys": [{"kty": "oct", "use": "x509-svid"}]},
            "keys[0] is a symmetric 'oct' key; JWT-SVIDs use public keys only",
        ),
        (
            bundle_doc(EC.public_jwk(kid="")),
            "keys[0] (EC, use 'jwt-svid') has no 'kid'; JWT-SVID keys need one",
        ),
        (
            bundle_doc(EC.public_jwk(kid=7)),
            "keys[0] (EC, use 'jwt-svid') has no 'kid'; JWT-SVID keys need one",
        ),
        (
            bundle_doc(EC.public_jwk(), EC384.public_jwk(kid=EC.kid)),
            "kid 'acme-ec' appears more than once",
        ),
        (
            bundle_doc(EC.public_jwk(crv="P-192")),
            "keys[0] (kid 'acme-ec') uses curve 'P-192'; only P-256, P-384, P-521 are allowed",
        ),
        (
            bundle_doc(EC.public_jwk(crv=None)),
            "keys[0] (kid 'acme-ec') uses curve None; only P-256, P-384, P-521 are allowed",
        ),
        (
            bundle_doc(EC.public_jwk(alg="ES384")),
            "keys[0] (kid 'acme-ec') declares alg 'ES384', which is not a JWT-SVID alg for it",
        ),
        (
            bundle_doc(EC.public_jwk(alg=["ES256"])),
            "keys[0] (kid 'acme-ec') declares alg ['ES256'], which is not a JWT-SVID alg for it",
        ),
        (
            bundle_doc(EC.public_jwk(crv="P-384")),
            "keys[0] (kid 'acme-ec') is not a valid EC public key: ",  # then PyJWT's words
        ),
    ],
    ids=[
        "keys-not-a-list",
        "not-an-object",
        "jwk-not-an-object",
        "oct-whatever-its-use",
        "empty-kid",
        "kid-a-number",
        "duplicate-kid",
        "p192",
        "no-curve",
        "alg-of-another-curve",
        "alg-a-list",
        "points-of-another-curve",
    ],
)
def test_an_unusable_document_is_refused_saying_why(doc: Any, problem: str) -> None:
    message = refusal(doc)

    assert message.startswith(f"trust bundle for {DOMAIN!r}: ")
    assert message.removeprefix(f"trust bundle for {DOMAIN!r}: ").startswith(problem), message


@pytest.mark.parametrize(
    "ignored",
    [
        EC384.public_jwk(use="x509-svid"),
        EC384.public_jwk(use=None),
        {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
         "kid": "ed", "use": "jwt-svid"},
    ],
    ids=["x509-use", "no-use-in-a-spiffe-bundle", "okp"],
)  # fmt: skip
def test_an_ignored_key_does_not_hide_the_keys_after_it(ignored: dict[str, Any]) -> None:
    bundles = TrustBundles.from_documents({DOMAIN: bundle_doc(ignored, EC.public_jwk())})

    assert bundles.key(DOMAIN, EC.kid) is not None


def test_an_invalid_trust_domain_name_is_refused_saying_why() -> None:
    assert refusal(bundle_doc(EC.public_jwk()), domain="acme.example:8443") == (
        "trust bundle for 'acme.example:8443': invalid trust domain name: "
        "a port is not allowed in a SPIFFE ID trust domain"
    )


def test_a_trust_domain_name_must_be_a_string() -> None:
    assert refusal(bundle_doc(EC.public_jwk()), domain=7) == (
        "trust domain names are strings, got 7"
    )


def test_rsa_keys_of_2048_bits_are_the_minimum() -> None:
    assert MIN_RSA_KEY_BITS == 2048
    short = rsa_key("short", bits=1024)

    assert refusal(bundle_doc(short.public_jwk())) == (
        f"trust bundle for {DOMAIN!r}: keys[0] (kid 'short') is a 1024-bit RSA key; "
        "at least 2048 is required"
    )


@pytest.mark.parametrize(
    ("key", "alg", "curve"),
    [(EC, "ES256", "secp256r1"), (EC384, "ES384", "secp384r1"), (EC521, "ES512", "secp521r1")],
    ids=["P-256", "P-384", "P-521"],
)
def test_each_allowed_curve_loads_with_its_alg(key: Any, alg: str, curve: str) -> None:
    bundles = TrustBundles.from_documents({DOMAIN: bundle_doc(key.public_jwk(alg=alg))})

    entry = bundles.trusted_key(DOMAIN, key.kid)
    assert entry is not None
    assert (entry.kty, entry.curve, entry.alg) == ("EC", curve, alg)
    assert entry.public_key.public_numbers() == key.private_key.public_key().public_numbers()


# --------------------------------------------------------------------------- lookups


def test_lookups_answer_none_for_unknown_domains_and_kids() -> None:
    bundles = TrustBundles.from_documents(
        {DOMAIN: bundle_doc(EC.public_jwk()), OTHER_DOMAIN: bundle_doc(EC384.public_jwk())}
    )

    assert bundles.trusted_key(DOMAIN, EC384.kid) is None
    assert bundles.trusted_key("evil.example", EC.kid) is None
    assert bundles.key(DOMAIN, "nope") is None
    assert bundles.key(OTHER_DOMAIN, EC384.kid) is not None


def test_the_repr_counts_keys_per_domain_and_shows_no_key_material() -> None:
    bundles = TrustBundles.from_documents(
        {
            OTHER_DOMAIN: bundle_doc(EC384.public_jwk()),
            DOMAIN: bundle_doc(EC.public_jwk(), EC521.public_jwk()),
        }
    )

    assert repr(bundles) == "TrustBundles(acme.example: 2 key(s), beta.example: 1 key(s))"


def test_a_trusted_key_cannot_be_changed() -> None:
    bundles = TrustBundles.from_documents({DOMAIN: bundle_doc(EC.public_jwk())})
    entry = bundles.trusted_key(DOMAIN, EC.kid)
    assert entry is not None

    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.alg = "ES384"  # type: ignore[misc]
    assert isinstance(entry, TrustedKey)
