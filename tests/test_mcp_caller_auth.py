"""The MCP gateway as the PDP's caller (PEP), end to end: the official MCP client -> our
gateway -> a real PDP on its real listener that requires caller authentication (mTLS with
certificates made at test time, and hashed caller keys) on a real OPA -> the example MCP
servers. With the right caller credentials calls go through (and their outcomes are
recorded); without them, or with wrong ones, every call is refused and nothing reaches an
upstream (fail closed)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from mcp.shared.exceptions import MCPError
from pdpctl import errors
from pdpctl.main import cli

from examples.mcp_server import ExampleServer, example_server
from pdp.callers import hash_key, new_key
from pdp.devtrust import mint_svid
from pdp.mcp.gateway import GatewayConfig, build_app, load_verifier
from pdp.mcp.pdp_client import CallerCredentials
from pdp.target import CredentialVerifier
from tests.audit_helpers import records
from tests.boundary_helpers import Serve, serve_fixture  # noqa: F401  (fixture)
from tests.conftest import DEV_DOMAINS, ROOT, free_port
from tests.test_mcp_gateway import ASSISTANT, Uvicorn, agent, clean_env, wait_listening
from tests.tls_helpers import CA, write_pair

GATEWAY = "spiffe://gateways.example/mcp-gw"
CALLER_ID = "mcp-gw-1"
CALLS = [("hr.list_employees", {}), ("web.fetch", {"url": "https://example.org"})]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("mcp-pki")
    ca, other = CA.new("gateways CA"), CA.new("someone else's CA")
    (d / "ca.pem").write_bytes(ca.pem)
    key = new_key()
    (d / "caller.key").write_text(key + "\n")
    (d / "wrong.key").write_text(new_key() + "\n")
    (d / "caller-keys").write_text(f"{CALLER_ID} {hash_key(key)}\n")
    return {
        "ca": ca,
        "ca_file": d / "ca.pem",
        "server": write_pair(d, "server", ca.issue("pdp", server=True)),
        "gateway": write_pair(d, "gateway", ca.issue("mcp-gw", uris=(GATEWAY,))),
        "foreign": write_pair(d, "foreign", other.issue("mcp-gw", uris=(GATEWAY,))),
        "caller_keys": d / "caller-keys",
        "key_file": d / "caller.key",
        "wrong_key_file": d / "wrong.key",
        "key": key,
    }


@dataclass
class Stack:
    pdp_url: str
    upstreams: dict[str, ExampleServer]
    upstream_urls: dict[str, str]

    def seen(self) -> list[dict[str, Any]]:
        return [s for u in self.upstreams.values() for s in u.seen]


@contextlib.asynccontextmanager
async def upstreams_of(pdp_url: str, ca: CA | None) -> AsyncIterator[Stack]:
    """The two example upstreams, verifying credentials against the PDP's JWKS (over TLS
    with ``ca`` when the PDP speaks https)."""
    examples: dict[str, ExampleServer] = {}
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for name in ("hr-files", "web"):
            session = None
            if ca is not None:
                context = ssl.create_default_context(cadata=ca.pem.decode())
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
            verifier = CredentialVerifier(pdp_url=pdp_url, audience=name, session=session)
            example = examples[name] = example_server(name, pdp_url)
            example._verifier = verifier
            if session is not None:
                stack.push_async_callback(session.close)
            served = await stack.enter_async_context(Uvicorn(example.app()))
            urls[name] = served.url + "/mcp"
        yield Stack(pdp_url, examples, urls)
        for example in examples.values():
            await example.close()


@contextlib.asynccontextmanager
async def gateway(
    stack: Stack, dev_state: Path, caller: CallerCredentials | None
) -> AsyncIterator[str]:
    config = GatewayConfig(
        pdp_url=stack.pdp_url,
        upstreams=stack.upstream_urls,
        verifier=load_verifier("agent-pdp", {}, DEV_DOMAINS, dev_state),
        port=free_port(),
        pdp_timeout_s=5.0,
        upstream_timeout_s=5.0,
        pdp_caller=caller,
    )
    async with Uvicorn(build_app(config), config.port) as served:
        yield served.url + "/mcp"


async def forwarded(stack: Stack, audit: Path) -> tuple[dict[str, Any], ...]:
    """(what the upstream saw of the one forwarded call, its decision record, its outcome
    record once the gateway reported it, status ok)."""
    [seen] = stack.seen()
    [decision] = [
        r
        for r in records(audit)
        if r.get("type") == "decision"
        and (r.get("credential") or {}).get("jti") == seen["claims"]["jti"]
    ]
    for _ in range(200):
        found = [r for r in records(audit) if r.get("type") == "outcome"]
        if found:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("no outcome record was written")
    assert found[-1]["decision_id"] == decision["decision_id"] and found[-1]["status"] == "ok"
    return seen, decision, found[-1]


# --------------------------------------------------------------------------- mTLS


@pytest.fixture
async def caller_pdp(
    request: pytest.FixtureRequest, serve: Serve, pki: dict[str, Any], tmp_path: Path
) -> AsyncIterator[tuple[Stack, Path]]:
    """(the upstreams, the audit directory) of a PDP that requires caller authentication:
    ``mtls`` (https, a client certificate of the gateways CA) or ``key`` (loopback http, a
    caller key)."""
    store = f"sqlite://{tmp_path / 'pdp.sqlite3'}"
    if request.param == "mtls":
        cert, key = pki["server"]
        url, _ = await serve(tls_cert=cert, tls_key=key, client_ca=pki["ca_file"], store_url=store)
    else:
        url, _ = await serve(caller_keys=pki["caller_keys"], store_url=store)
    async with upstreams_of(url, pki["ca"] if request.param == "mtls" else None) as stack:
        yield stack, tmp_path / "state" / "audit"


@pytest.mark.parametrize("caller_pdp", ["mtls"], indirect=True)
async def test_with_its_client_certificate_the_gateway_is_the_pdps_caller(
    caller_pdp: tuple[Stack, Path], pki: dict[str, Any], dev_state: Path, mint: Callable[..., str]
) -> None:
    stack, audit = caller_pdp
    caller = CallerCredentials(ca_file=pki["ca_file"], cert_file=pki["gateway"][0],
                               key_file=pki["gateway"][1])  # fmt: skip
    async with gateway(stack, dev_state, caller) as url:
        async with agent(url, mint(ASSISTANT)) as client:
            listed = await client.list_tools()
            result = await client.call_tool("hr.list_employees", {})

    assert "hr.list_employees" in {t.name for t in listed.tools}
    assert result.is_error is not True
    seen, decision, outcome = await forwarded(stack, audit)
    assert seen["claims"]["scope"] == "tool.call:hr.list_employees:read"
    # The PDP knows which gateway asked: the certificate's SPIFFE ID.
    assert decision["caller"] == {"authenticated": True, "id": GATEWAY, "method": "mtls"}
    assert outcome["target"] == "hr-files"


# --------------------------------------------------------------------------- caller keys


@pytest.mark.parametrize("caller_pdp", ["key"], indirect=True)
async def test_with_its_caller_key_the_gateway_is_the_pdps_caller_and_outcomes_are_recorded(
    caller_pdp: tuple[Stack, Path], pki: dict[str, Any], dev_state: Path, mint: Callable[..., str]
) -> None:
    stack, audit = caller_pdp
    async with gateway(stack, dev_state, CallerCredentials(caller_key=pki["key"])) as url:
        async with agent(url, mint(ASSISTANT)) as client:
            result = await client.call_tool("web.fetch", {"url": "https://example.org"})

    assert result.is_error is not True
    # The outcome report keeps Authorization for the caller key and carries the
    # decision's credential in X-PDP-Credential: it is accepted and recorded.
    seen, decision, outcome = await forwarded(stack, audit)
    assert seen["claims"]["scope"] == "tool.call:web.fetch:read"
    assert decision["caller"] == {"authenticated": True, "id": CALLER_ID, "method": "api_key"}
    assert outcome["target"] == "web"


@pytest.mark.parametrize(
    ("caller_pdp", "credentials"),
    [
        ("mtls", "no client certificate"),
        ("mtls", "a certificate of another CA"),
        ("key", "no caller key"),
        ("key", "a wrong caller key"),
    ],
    indirect=["caller_pdp"],
)
async def test_without_accepted_caller_credentials_every_call_is_refused_and_nothing_forwarded(
    caller_pdp: tuple[Stack, Path],
    pki: dict[str, Any],
    dev_state: Path,
    mint: Callable[..., str],
    credentials: str,
) -> None:
    stack, audit = caller_pdp
    foreign_cert, foreign_key = pki["foreign"]
    caller = {
        "no client certificate": CallerCredentials(ca_file=pki["ca_file"]),
        "a certificate of another CA": CallerCredentials(
            ca_file=pki["ca_file"], cert_file=foreign_cert, key_file=foreign_key
        ),
        "no caller key": CallerCredentials(),
        "a wrong caller key": CallerCredentials(
            caller_key=pki["wrong_key_file"].read_text().strip()
        ),
    }[credentials]
    async with gateway(stack, dev_state, caller) as url:
        async with agent(url, mint(ASSISTANT)) as client:
            with pytest.raises(MCPError) as listing:
                await client.list_tools()
            for tool, arguments in CALLS:
                with pytest.raises(MCPError) as raised:
                    await client.call_tool(tool, arguments)
                assert raised.value.code == -32603, tool

    assert listing.value.code == -32603
    assert stack.seen() == []  # nothing reached an upstream
    # Nothing was decided either: the PDP refused the caller before any decision.
    assert [r for r in records(audit) if r.get("type") == "decision"] == []


# --------------------------------------------------------------------------- the command


@pytest.mark.parametrize("caller_pdp", ["mtls"], indirect=True)
async def test_pdpctl_mcp_gateway_authenticates_with_the_files_it_is_given(
    caller_pdp: tuple[Stack, Path], pki: dict[str, Any], dev_state: Path, tmp_path: Path
) -> None:
    """The real command, its caller flags given as files (no secret on the command line)."""
    stack, _ = caller_pdp
    token = mint_svid(dev_state, ASSISTANT)
    port = free_port()
    upstreams = [f"--upstream={name}={url}" for name, url in stack.upstream_urls.items()]
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pdpctl", "mcp-gateway", "--pdp", stack.pdp_url,
            *upstreams, "--listen", f"127.0.0.1:{port}", "--state-dir", str(dev_state),
            "--pdp-ca", str(pki["ca_file"]), "--pdp-client-cert", str(pki["gateway"][0]),
            "--pdp-client-key", str(pki["gateway"][1]),
            cwd=ROOT, env=clean_env(), stdout=out, stderr=out,
        )  # fmt: skip
        try:
            await wait_listening(port, proc, log)
            async with agent(f"http://127.0.0.1:{port}/mcp", token) as client:
                result = await client.call_tool("hr.list_employees", {})
        finally:
            proc.terminate()
            await proc.wait()
    assert result.is_error is not True, log.read_text()
    assert [s["scope"] for s in stack.seen()] == ["tool.call:hr.list_employees:read"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pdp-ca", "{ca}"], "need an https:// --pdp URL"),
        (["--pdp-client-cert", "{cert}"], "need an https:// --pdp URL"),
        (
            ["--pdp", "https://pdp.internal:8700", "--pdp-client-key", "{key}"],
            "needs --pdp-client-cert",
        ),  # fmt: skip
        (
            ["--pdp", "http://pdp.internal:8700", "--pdp-caller-key-file", "{keyfile}"],
            "in clear",
        ),  # fmt: skip
        (["--pdp-caller-key-file", "{empty}"], "expected one caller key"),
        (
            ["--pdp", "https://pdp.internal:8700", "--pdp-client-cert", "{ca_key}"],
            "--pdp-client-cert",
        ),  # fmt: skip
    ],
    ids=[
        "ca-without-https",
        "cert-without-https",
        "key-without-cert",
        "key-in-clear",
        "empty-key",
        "not-a-cert",
    ],  # fmt: skip
)
def test_caller_flags_that_cannot_work_are_refused_at_start(
    pki: dict[str, Any], tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "not-a-cert.pem").write_text("not a certificate\n")
    files = {
        "ca": pki["ca_file"],
        "cert": pki["gateway"][0],
        "key": pki["gateway"][1],
        "keyfile": pki["key_file"],
        "empty": tmp_path / "empty",
        "ca_key": tmp_path / "not-a-cert.pem",
    }
    argv = ["mcp-gateway", "--upstream", "hr-files=http://127.0.0.1:1/mcp"]
    argv += [a.format(**files) for a in args]
    result = CliRunner().invoke(cli, argv, env=clean_env())
    assert result.exit_code == errors.BAD_INPUT, result.output
    assert message in result.output
    assert pki["key"] not in result.output  # the caller key is never echoed


def test_serve_refuses_the_embedded_gateway_with_caller_authentication(
    pki: dict[str, Any], tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "serve",
            "--state-dir",
            str(tmp_path / "state"),
            "--port",
            str(free_port()),
            "--caller-keys",
            str(pki["caller_keys"]),
            "--mcp-upstream",
            "hr-files=http://127.0.0.1:1/mcp",
        ],  # fmt: skip
        env=clean_env(),
    )
    assert result.exit_code == errors.BAD_INPUT, result.output
    assert "pdpctl mcp-gateway" in result.output
