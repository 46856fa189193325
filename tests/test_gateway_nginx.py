"""A real gateway: nginx (``auth_request``) in front of examples/target_service.py, asking
agent-pdp's ext_authz HTTP mode before every request.

nginx runs examples/gateways/nginx.conf (ports and a writable prefix filled in); the PDP
runs examples/gateways/routes.yaml on a real OPA; the target verifies the credential it
receives with pdp.target and counts every request that reaches it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import string
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from examples.target_service import create_app as create_target
from pdp.app import create_app
from pdp.config import Settings
from pdp.target import CredentialVerifier

from .conftest import DEV_DOMAINS, ROOT, free_port
from .credential_helpers import ADMIN, INTROSPECTOR
from .http_helpers import is_uuid
from .opa_process import OPAProcess

pytestmark = pytest.mark.opa

GATEWAYS = ROOT / "examples" / "gateways"
SUPPORT_BOT = "spiffe://acme.example/agents/support-bot"
RESEARCH_BOT = "spiffe://globex.example/agents/research-bot"
SEARCH = "/rest/api/2/search"


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail("nginx is not installed (apt-get install nginx; .ci/run does it)")
    return found


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def nginx_factory(tmp_path: Path) -> Iterator[Any]:
    """Start nginx with examples/gateways/nginx.conf for given PDP and upstream ports."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(pdp_port: int, upstream_port: int) -> int:
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        port = free_port()
        conf = string.Template((GATEWAYS / "nginx.conf").read_text()).safe_substitute(
            PREFIX=str(prefix),
            LISTEN_PORT=str(port),
            PDP_PORT=str(pdp_port),
            UPSTREAM_PORT=str(upstream_port),
        )
        if os.geteuid() == 0:  # as root, workers would drop to "nobody" (no access to tmp)
            conf = "user root;\n" + conf
        (prefix / "nginx.conf").write_text(conf)
        proc = subprocess.Popen(
            [
                nginx_binary(),
                "-p",
                str(prefix),
                "-c",
                str(prefix / "nginx.conf"),
                "-e",
                str(prefix / "error.log"),
                "-g",
                "daemon off;",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        deadline = time.monotonic() + 15
        while not _listening(port):
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"nginx exited {proc.returncode}: {err}")
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not start listening")
            time.sleep(0.05)
        return port

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@dataclass
class Stack:
    pdp: TestClient[Any, Any]
    gateway: str
    #: (method, path, Authorization, X-PDP-Decision-Id) of every request the target saw.
    seen: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)


@pytest.fixture
async def stack(
    aiohttp_client: Any,
    aiohttp_server: Any,
    dev_state: Path,
    tmp_path: Path,
    shared_opa: OPAProcess,
    nginx_factory: Any,
) -> AsyncIterator[Stack]:
    settings = Settings(
        state_dir=tmp_path / "state",
        opa_url=shared_opa.url,
        opa_timeout_ms=5000,
        dev_trust_domains=(),
        trust_bundles={d: dev_state / "dev-trust" / d / "bundle.json" for d in DEV_DOMAINS},
        admin_token=ADMIN,
        introspection_token=INTROSPECTOR,
        ext_authz_routes=GATEWAYS / "routes.yaml",
    )
    pdp: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    verifier = CredentialVerifier(
        pdp_url=f"http://127.0.0.1:{pdp.port}", audience="jira", introspection_token=INTROSPECTOR
    )
    target = create_target(verifier)
    seen: list[tuple[str, str, str | None, str | None]] = []

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        seen.append(
            (
                request.method,
                request.path,
                request.headers.get("Authorization"),
                request.headers.get("X-PDP-Decision-Id"),
            )
        )

    target.on_response_prepare.append(count)
    upstream = await aiohttp_server(target)
    port = await asyncio.to_thread(nginx_factory, pdp.port, upstream.port)
    yield Stack(pdp=pdp, gateway=f"http://127.0.0.1:{port}", seen=seen)


async def through_gateway(
    stack: Stack, path: str, token: str | None, method: str = "GET"
) -> tuple[int, str]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, stack.gateway + path, headers=headers) as resp:
            return resp.status, await resp.text()


async def test_a_valid_svid_reaches_the_target_with_the_minted_credential(
    stack: Stack, mint: Any
) -> None:
    svid = mint(SUPPORT_BOT)
    status, body = await through_gateway(stack, SEARCH + "?jql=project%3DSUP", svid)
    assert status == 200, body
    assert '"for": "' + SUPPORT_BOT + '"' in body  # the target verified it with pdp.target
    assert len(stack.seen) == 1
    method, path, authorization, decision_id = stack.seen[0]
    assert (method, path) == ("GET", SEARCH)
    assert authorization is not None and authorization.startswith("Bearer ")
    credential = authorization.removeprefix("Bearer ")
    assert credential != svid  # the agent's SVID never reaches the upstream
    claims = jwt.decode(credential, options={"verify_signature": False})
    assert claims["sub"] == SUPPORT_BOT and claims["aud"] == "jira"
    assert claims["scope"] == "tool.call:jira.search_issues:read"
    assert is_uuid(decision_id)


@pytest.mark.parametrize(
    ("path", "agent", "method"),
    [
        (SEARCH, RESEARCH_BOT, "GET"),  # a globex agent on acme's jira: policy deny
        (SEARCH, None, "GET"),  # no SVID
        ("/healthz", SUPPORT_BOT, "GET"),  # no route: deny, even for an open target path
        (SEARCH, SUPPORT_BOT, "DELETE"),  # route exists for GET only
    ],
)
async def test_a_denied_request_gets_403_and_never_reaches_the_target(
    stack: Stack, mint: Any, path: str, agent: str | None, method: str
) -> None:
    status, _ = await through_gateway(stack, path, mint(agent) if agent else None, method)
    assert status == 403
    assert stack.seen == []


async def test_with_the_pdp_stopped_nginx_answers_an_error_and_nothing_passes(
    stack: Stack, mint: Any
) -> None:
    svid = mint(SUPPORT_BOT)
    assert (await through_gateway(stack, SEARCH, svid))[0] == 200
    stack.seen.clear()
    await stack.pdp.close()
    status, _ = await through_gateway(stack, SEARCH, svid)
    assert status >= 500
    assert stack.seen == []
