"""The signed trail in the running service: the audit JWKS endpoint, the checkpoint anchor,
key rotation through the admin API, forwarding with bearer and mTLS authentication that
carries the checkpoints, and the collector's copy as the anchor `audit verify` checks."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pdpctl import errors
from pdpctl.main import cli

from pdp.audit.checkpoint import check_record, load_public_keys
from pdp.audit.segment import iter_records

from .conftest import ClientFactory, free_port
from .opa_process import OPAProcess
from .test_audit_forward import Collector, decide_n


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, Any] | None, **kw: Any
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if kw.get("ip"):
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(kw["ip"]))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> Path:
    data = cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    path.write_bytes(data)
    return path


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A CA made for this test, a server certificate for 127.0.0.1 and a client one."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, None)
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "ca": _write(tmp_path / "ca.pem", ca, None),
        "server": _write(
            tmp_path / "server.pem",
            _cert("collector", server_key, ("test-ca", ca_key), ip="127.0.0.1"),
            server_key,
        ),
        "client": _write(
            tmp_path / "client.pem", _cert("agent-pdp", client_key, ("test-ca", ca_key)), client_key
        ),
    }


class AuthCollector(Collector):
    """A collector that demands a bearer token, or (with TLS) a client certificate."""

    def __init__(self, port: int, token: str | None, tls: ssl.SSLContext | None) -> None:
        super().__init__(port)
        self.token = token
        self.tls = tls
        self.refused = 0
        if tls is not None:
            self.url = f"https://127.0.0.1:{port}/logs"

    async def handle(self, request: web.Request) -> web.Response:
        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            self.refused += 1
            return web.Response(status=401)
        return await super().handle(request)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/logs", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls).start()


SigningPDP = Callable[..., Awaitable[Any]]


@pytest.fixture
async def signing_pdp(
    make_client: ClientFactory, shared_opa: OPAProcess, tmp_path: Path
) -> AsyncIterator[SigningPDP]:
    """Start a PDP that signs its trail (``tmp_path``/audit, /audit-keys); with a
    ``collector`` (started here, stopped after the test) it forwards the trail to it."""
    made: list[Collector] = []

    async def start(collector: Collector | None = None, **overrides: Any) -> Any:
        if collector is not None:
            made.append(collector)
            await collector.start()
            overrides["audit_forward_url"] = collector.url
        return await make_client(
            shared_opa.url,
            opa_timeout_ms=5000,
            audit_dir=tmp_path / "audit",
            audit_keys_dir=tmp_path / "audit-keys",
            **overrides,
        )

    yield start
    for c in made:
        await c.stop()


async def test_forwarding_with_a_bearer_token_carries_the_signed_checkpoints(
    signing_pdp: SigningPDP, tmp_path: Path, mint: Callable[..., str]
) -> None:
    token = "collector-token-0123456789"
    collector = AuthCollector(free_port(), token, None)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    client = await signing_pdp(
        collector,
        audit_checkpoint_every=3,
        audit_forward_token_file=token_file,
        audit_forward_max_backoff_s=0.2,
    )
    ids = await decide_n(client, mint, 7)
    await collector.wait_for(7)
    await client.close()  # the final checkpoint is written at shutdown

    assert collector.ids() == ids and collector.refused == 0
    keys = load_public_keys(tmp_path / "audit-keys" / "jwks.json")
    assert collector.checkpoints, "no checkpoint reached the collector"
    for event in collector.checkpoints:
        check_record(event["audit"], keys)
    # The collector's copy is the anchor a third party verifies the trail against.
    kept = tmp_path / "collected.json"
    kept.write_text(json.dumps(collector.checkpoints))
    result = run(
        "audit", "verify", "--dir", str(tmp_path / "audit"),
        "--keys", str(tmp_path / "audit-keys" / "jwks.json"), "--expect-checkpoint", str(kept),
    )  # fmt: skip
    assert result.exit_code == errors.OK, result.output
    assert "reached and matches" in result.output


async def test_forwarding_with_a_wrong_token_is_refused_and_retried_without_loss(
    signing_pdp: SigningPDP, mint: Callable[..., str]
) -> None:
    collector = AuthCollector(free_port(), "the-right-token-0123456", None)
    client = await signing_pdp(
        collector,
        audit_forward_token="a-wrong-token-0123456789",
        audit_forward_max_backoff_s=0.1,
    )
    await decide_n(client, mint, 2)
    for _ in range(100):
        if collector.refused >= 2:
            break
        await asyncio.sleep(0.02)
    assert collector.refused >= 2 and collector.events == []
    text = await (await client.get("/metrics")).text()
    assert "pdp_audit_forward_failures_total" in text
    await client.close()


async def test_forwarding_over_mtls_presents_the_client_certificate(
    signing_pdp: SigningPDP, mint: Callable[..., str], pki: dict[str, Path]
) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"]))
    tls.load_cert_chain(str(pki["server"]))
    tls.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no handshake
    collector = AuthCollector(free_port(), None, tls)
    client = await signing_pdp(
        collector,
        audit_forward_tls_ca=pki["ca"],
        audit_forward_tls_cert=pki["client"],
        audit_forward_max_backoff_s=0.2,
    )
    ids = await decide_n(client, mint, 3)
    await collector.wait_for(3)
    assert collector.ids() == ids
    await client.close()


async def test_the_audit_jwks_checkpoint_and_rotation_endpoints(
    signing_pdp: SigningPDP, tmp_path: Path, mint: Callable[..., str], dev_state: Path
) -> None:
    client = await signing_pdp(audit_checkpoint_every=0, audit_checkpoint_interval_s=0)
    admin = {"Authorization": f"Bearer {(dev_state / 'admin-token').read_text().strip()}"}
    await decide_n(client, mint, 2)

    resp = await client.get("/.well-known/audit-jwks.json")
    assert resp.status == 200
    first = await resp.json()
    assert [k["alg"] for k in first["keys"]] == ["ES256"]
    assert all("d" not in k for k in first["keys"])  # public keys only
    assert (await client.get("/v1/audit/checkpoint")).status == 401

    resp = await client.get("/v1/audit/checkpoint", headers=admin)
    assert resp.status == 200
    anchor = await resp.json()
    seq = anchor["checkpoint"]["seq"]
    records = list(iter_records(tmp_path / "audit"))
    assert records[-1]["type"] == "checkpoint" and records[-2]["seq"] == seq

    resp = await client.post("/v1/audit/keys/rotate", headers=admin, json={})
    assert resp.status == 200
    rotated = await resp.json()
    assert rotated["previous"] == first["keys"][0]["kid"]
    jwks = await (await client.get("/.well-known/audit-jwks.json")).json()
    assert [k["kid"] for k in jwks["keys"]] == [rotated["previous"], rotated["current"]]
    await decide_n(client, mint, 1)
    await client.close()
    kids = {
        r["checkpoint"]["kid"]
        for r in iter_records(tmp_path / "audit")
        if r["type"] == "checkpoint"
    }
    assert kids == {rotated["previous"], rotated["current"]}
    result = run(
        "audit", "verify", "--dir", str(tmp_path / "audit"),
        "--keys", str(tmp_path / "audit-keys" / "jwks.json"),
    )  # fmt: skip
    assert result.exit_code == errors.OK, result.output


async def test_signing_off_serves_no_audit_keys(
    make_client: ClientFactory, shared_opa: OPAProcess, tmp_path: Path
) -> None:
    client = await make_client(
        shared_opa.url, opa_timeout_ms=5000, audit_dir=tmp_path / "audit", audit_signing=False
    )
    resp = await client.get("/.well-known/audit-jwks.json")
    assert resp.status == 404 and (await resp.json())["allow"] is False
    await client.close()
