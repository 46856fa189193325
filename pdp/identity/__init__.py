"""Workload authentication: SPIFFE IDs, trust bundles and JWT-SVID verification.

The only thing the rest of the service needs from this module is an :class:`Identity`,
produced by :meth:`SVIDVerifier.verify` from whatever token the gateway sent. ``verify``
never raises: every problem becomes ``Identity.failure(code, message)``, which policies see
as a deny-worthy ``identity.error`` (fail closed).

Error codes (``Identity.error_code``)::

    authn.token_missing      no token (None or "")
    authn.malformed          not a compact JWS, > 16 KiB, bad base64/JSON, bad typ, a header
                             parameter other than alg/kid/typ, a claim of the wrong type
    authn.alg_not_allowed    alg outside RS/PS/ES 256/384/512 (none, HS*, EdDSA, ...), or an alg
                             the selected key cannot serve (RSA key + ES256, P-256 key + ES384,
                             a JWK whose own "alg" differs)
    authn.unknown_kid        no kid, or no key with that kid in the sub's trust domain bundle
    authn.invalid_spiffe_id  sub is not a SPIFFE ID, or names a trust domain and no workload
    authn.untrusted_domain   sub is in a trust domain with no configured bundle
    authn.invalid_signature  signature does not verify with the selected key
    authn.missing_claim      sub, exp or aud absent (or aud empty)
    authn.audience_mismatch  aud does not contain the configured audience
    authn.expired            exp + leeway <= now
    authn.not_yet_valid      nbf - leeway > now
    authn.issued_in_future   iat - leeway > now (a token minted by a clock far ahead, or forged
                             to outlive a key rotation)
    authn.lifetime_too_long  exp - iat (exp - now without iat) beyond the maximum SVID lifetime
                             (PDP_SVID_MAX_LIFETIME_S, 24 h by default): a stolen long-lived
                             token is not accepted, nor cached for its whole life
    authn.error              an unexpected internal failure (a bug); still a deny
    authn.unauthenticated    only from to_input() of an Identity(authenticated=False) built
                             without a code (the same fallback pdp.rules.authn uses)

Key/alg mismatch is reported as ``authn.alg_not_allowed`` rather than
``authn.invalid_signature``: it is decided from the header and the public bundle before any
cryptography runs, it tells an operator exactly what is wrong (an issuer signing with an
algorithm its key cannot produce), and it reveals nothing an attacker cannot read from the
bundle. PyJWT is only ever handed the one algorithm that key can serve.

Checks that must precede signature verification (alg, kid, sub -> trust domain -> key) use
the unverified header and claims; everything else (exp, nbf, aud, the sub again) is judged
only on a token whose signature has verified, so forged tokens report invalid_signature.

One concept per module (as go-spiffe's ``spiffeid``, ``bundle/jwtbundle``, ``svid/jwtsvid``):

    spiffeid.py   SPIFFE IDs: parse_spiffe_id, check_trust_domain
    bundles.py    TrustBundles (trust domain -> JWT-SVID keys), TrustBundleError
    svid.py       SVIDVerifier: token -> Identity, with its cache
    result.py     Identity: what the rest of the service sees
"""

from __future__ import annotations

from .bundles import MAX_BUNDLE_FILE_BYTES, MIN_RSA_KEY_BITS, TrustBundleError, TrustBundles
from .result import Identity
from .spiffeid import MAX_SPIFFE_ID_LENGTH, parse_spiffe_id
from .svid import MAX_TOKEN_LENGTH, SVIDVerifier

__all__ = [
    "MAX_BUNDLE_FILE_BYTES",
    "MAX_SPIFFE_ID_LENGTH",
    "MAX_TOKEN_LENGTH",
    "MIN_RSA_KEY_BITS",
    "Identity",
    "SVIDVerifier",
    "TrustBundleError",
    "TrustBundles",
    "parse_spiffe_id",
]
