"""Caller (PEP) authentication: who is asking the PDP, before anything else is looked at.

An agent's JWT-SVID says which workload wants to act; it does not say that the request
comes from the gateway that is supposed to enforce the answer. Without caller
authentication an agent holding its own SVID can call ``POST /v1/decisions`` itself, leave
out the facts that would deny it, and walk away with a credential. So every request to the
decision API (and to any front door added later) first authenticates its *caller*:

    mtls      a client certificate verified by the TLS layer against ``--client-ca``
              (a PEM CA bundle, or a SPIFFE trust domain's X.509 bundle). Caller identity:
              the certificate's SPIFFE ID (its one URI SAN; required, and in
              ``--client-trust-domain`` when that is set), else its first DNS SAN, else
              its subject CN.
    api_key   ``Authorization: Bearer <key>`` matching a key whose SHA-256 is listed in
              ``--caller-keys FILE`` (lines ``<caller-id> sha256:<hex>``; the keys
              themselves are never stored). Caller identity: the line's caller id.

A request that presents neither, or a wrong one, is answered ``401`` with
``{"allow": false, "error": {"code": "caller_unauthenticated", ...}}`` before any agent
token is verified, so nothing is minted and nothing reaches policy. The caller's identity
goes into every audit record (``caller``) and to policy as ``input.pep``.

Paths that never need a caller: ``/healthz``, ``/readyz``, ``/.well-known/jwks.json``
(public), and the admin surface, which has its own credential (pdp.admin).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, NoReturn

import orjson
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import CallerAuthError

__all__ = [
    "ANONYMOUS",
    "Caller",
    "CallerAuthenticator",
    "CallerKeys",
    "client_ca_pem",
    "hash_key",
    "new_key",
    "peercert_of_pem",
    "server_ssl_context",
]

log = logging.getLogger("pdp.callers")

Method = Literal["mtls", "api_key", "none"]

#: Paths served to anyone: liveness, readiness, the public keys of minted credentials.
PUBLIC_PATHS: Final = frozenset({"/healthz", "/readyz", "/.well-known/jwks.json"})
_CALLER_ID: Final = re.compile(r"[A-Za-z0-9._:/@+=-]{1,256}")
_HASH: Final = re.compile(r"sha256:([0-9a-f]{64})")
#: Caller keys longer than this are refused before hashing.
MAX_KEY_LENGTH: Final = 512


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller of one request (or the anonymous one)."""

    authenticated: bool
    id: str | None
    method: Method

    def to_input(self) -> dict[str, Any]:
        """``input.pep`` and the audit record's ``caller``."""
        return {"authenticated": self.authenticated, "id": self.id, "method": self.method}


#: The caller when caller authentication is off (the embedded default on loopback).
ANONYMOUS: Final = Caller(authenticated=False, id=None, method="none")


# --------------------------------------------------------------------------- caller keys


def hash_key(key: str) -> str:
    """``sha256:<hex>`` of a caller key, as the keys file lists it."""
    return "sha256:" + hashlib.sha256(key.encode("ascii")).hexdigest()


def new_key() -> str:
    """A new caller key: 256 random bits, URL-safe."""
    return "pdpk_" + secrets.token_urlsafe(32)


class CallerKeys:
    """Caller id by SHA-256 of its key, from a ``--caller-keys`` file."""

    def __init__(self, by_digest: Mapping[bytes, str]) -> None:
        self._by_digest = dict(by_digest)

    def __len__(self) -> int:
        return len(self._by_digest)

    @classmethod
    def parse(cls, text: str, source: str = "caller keys") -> CallerKeys:
        """Parse ``<caller-id> sha256:<hex>`` lines (``#`` comments, blank lines)."""
        by_digest: dict[bytes, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2 or not _CALLER_ID.fullmatch(parts[0]):
                raise ValueError(f"{source} line {number}: expected '<caller-id> sha256:<hex>'")
            found = _HASH.fullmatch(parts[1])
            if found is None:
                raise ValueError(
                    f"{source} line {number}: the key must be given as sha256:<64 hex digits> "
                    "(the hash, never the key itself)"
                )
            digest = bytes.fromhex(found.group(1))
            if digest in by_digest:
                raise ValueError(f"{source} line {number}: the same key is listed twice")
            by_digest[digest] = parts[0]
        if not by_digest:
            raise ValueError(f"{source}: no caller keys")
        return cls(by_digest)

    @classmethod
    def load(cls, path: Path) -> CallerKeys:
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read caller keys from {str(path)!r}: {exc}") from None
        return cls.parse(text, str(path))

    def lookup(self, key: str) -> str | None:
        """The caller id of ``key``, or None."""
        if not key or len(key) > MAX_KEY_LENGTH or not key.isascii():
            return None
        return self._by_digest.get(hashlib.sha256(key.encode("ascii")).digest())


# --------------------------------------------------------------------------- TLS


def client_ca_pem(path: Path) -> str:
    """The CA certificates of ``--client-ca`` as PEM: the file itself when it is PEM, or
    the ``x509-svid`` certificates (``x5c``) of a SPIFFE bundle (JSON JWKS)."""
    raw = path.read_bytes()
    if raw.lstrip().startswith(b"{"):
        doc = orjson.loads(raw)
        pems: list[str] = []
        for key in doc.get("keys", []) if isinstance(doc, dict) else []:
            if not isinstance(key, dict) or key.get("use") != "x509-svid":
                continue
            for der in key.get("x5c", [])[:1]:
                cert = x509.load_der_x509_certificate(base64.b64decode(der))
                pems.append(cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))
        if not pems:
            raise ValueError(f"{str(path)!r}: a SPIFFE bundle without x509-svid certificates")
        return "".join(pems)
    certs = x509.load_pem_x509_certificates(raw)
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)


def server_ssl_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2+ server context; with ``client_ca``, client certificates are requested and
    verified against it (optional at the TLS layer so that a caller without one gets a
    401 JSON answer rather than a bare handshake failure; a certificate that does not
    verify still fails the handshake)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        context.load_verify_locations(cadata=client_ca_pem(client_ca))
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _cert_identity(peercert: Mapping[str, Any], trust_domain: str | None) -> str | None:
    """Caller id of a verified peer certificate (``SSLSocket.getpeercert()`` shape)."""
    sans: Iterable[tuple[str, str]] = peercert.get("subjectAltName", ())
    uris = [v for k, v in sans if k == "URI"]
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    if trust_domain is not None:
        # X.509-SVID: exactly one URI SAN, a SPIFFE ID in the expected trust domain.
        if len(uris) != 1 or len(spiffe) != 1:
            return None
        from .identity import parse_spiffe_id

        try:
            domain, path = parse_spiffe_id(spiffe[0])
        except ValueError:
            return None
        return spiffe[0] if domain == trust_domain and path else None
    if spiffe:
        return spiffe[0] if len(uris) == 1 else None
    dns = [v for k, v in sans if k == "DNS"]
    if dns:
        return dns[0]
    for rdn in peercert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


# --------------------------------------------------------------------------- middleware


class CallerAuthenticator:
    """Decides who the caller of a request is; raises CallerAuthError (401) when it must
    be someone and is not."""

    def __init__(
        self,
        *,
        keys: CallerKeys | None = None,
        mtls: bool = False,
        trust_domain: str | None = None,
    ) -> None:
        self.keys = keys
        self.mtls = mtls
        self.trust_domain = trust_domain

    @property
    def enabled(self) -> bool:
        return self.keys is not None or self.mtls

    def authenticate(self, request: web.Request) -> Caller:
        """The caller of an HTTP request (its verified client certificate, else its
        ``Authorization: Bearer <caller key>``)."""
        if not self.enabled:
            return ANONYMOUS
        where = f"{request.method} {request.path} from {request.remote}"
        peercert = None
        if self.mtls and request.transport is not None:
            peercert = request.transport.get_extra_info("peercert")
        values: list[str] = []
        if self.keys is not None:
            # Every value, so that identify() refuses a caller key sent twice, as on gRPC.
            values = request.headers.getall("Authorization", [])
            if any(not v.isascii() or not v.isprintable() for v in values):
                self._refuse(where, "an Authorization header that is not visible ASCII")
        return self.identify(peercert, values, where)

    def identify(
        self, peercert: Mapping[str, Any] | None, authorization: list[str], where: str
    ) -> Caller:
        """The caller presenting ``peercert`` (a certificate the TLS layer verified against
        ``--client-ca``, in ``SSLSocket.getpeercert()`` shape) and ``authorization`` (the
        values of its Authorization header or metadata), by the same rules for every
        transport: the certificate's identity first, else the caller key. Raises
        CallerAuthError when caller authentication is on and neither is acceptable."""
        if not self.enabled:
            return ANONYMOUS
        if self.mtls and peercert:
            caller_id = _cert_identity(peercert, self.trust_domain)
            if caller_id is None:
                self._refuse(where, "a client certificate without an acceptable identity")
            return Caller(True, caller_id, "mtls")
        if self.keys is not None and authorization:
            if len(authorization) > 1:
                self._refuse(where, "the caller key sent more than once")
            scheme, _, value = authorization[0].partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                caller_id = self.keys.lookup(value.strip())
                if caller_id is None:
                    self._refuse(where, "an unknown caller key")
                return Caller(True, caller_id, "api_key")
        self._refuse(where, "no client certificate and no caller key")

    def _refuse(self, where: str, what: str) -> NoReturn:
        log.warning("caller authentication failed: %s on %s", what, where)
        wanted = " or ".join(
            w
            for w, on in (
                ("a client certificate", self.mtls),
                ("Authorization: Bearer <caller key>", self.keys is not None),
            )
            if on
        )
        raise CallerAuthError(f"the caller must authenticate with {wanted}")


def peercert_of_pem(pem: bytes) -> dict[str, Any]:
    """A PEM certificate in ``SSLSocket.getpeercert()`` shape (``subjectAltName`` URI and
    DNS entries, ``subject`` common names): how a verified peer certificate handed over by
    another TLS stack (gRPC's auth context) is judged by the same rules."""
    cert = x509.load_pem_x509_certificate(pem)
    sans: list[tuple[str, str]] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        ext = None
    if ext is not None:
        sans += [("URI", v) for v in ext.get_values_for_type(x509.UniformResourceIdentifier)]
        sans += [("DNS", v) for v in ext.get_values_for_type(x509.DNSName)]
    subject = tuple(
        (("commonName", str(a.value)),)
        for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    )
    return {"subjectAltName": tuple(sans), "subject": subject}


CALLER: Final = web.AppKey("caller_authenticator", CallerAuthenticator)
#: Where :func:`authenticate_caller` leaves the request's Caller.
CALLER_KEY: Final = web.RequestKey("caller", Caller)


def authenticate_caller(
    request: web.Request, authenticator: CallerAuthenticator, *, exempt: bool
) -> None:
    """Authenticate the caller of every request that needs one (raises CallerAuthError);
    store it on the request. ``exempt``: a path with its own credential (the admin
    surface); public paths need none either. Called for every route by the app's one
    middleware (:func:`pdp.app.error_middleware`)."""
    path = request.path
    if (
        exempt
        or path in PUBLIC_PATHS
        or path == "/.well-known/authzen-configuration"  # public metadata
    ):
        request[CALLER_KEY] = ANONYMOUS
    else:
        request[CALLER_KEY] = authenticator.authenticate(request)


def request_caller(request: web.Request) -> Caller:
    """The authenticated caller of ``request`` (ANONYMOUS when caller auth is off)."""
    caller: Caller = request.get(CALLER_KEY, ANONYMOUS)
    return caller
