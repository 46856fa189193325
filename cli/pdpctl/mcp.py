"""`pdpctl mcp-gateway`: the MCP front door (pdp/mcp/gateway.py, docs/mcp.md).

Also runnable inside `pdpctl serve` (``--mcp-upstream``): :func:`embed` starts the same
gateway on the server's event loop, pointed at that server's own decision API over
loopback, so the embedded default has MCP with one command and both ways share one code
path (the gateway never reaches into the decision service, it calls it over HTTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import click

from pdp.config import ConfigError, Settings, is_loopback

from .errors import BAD_INPUT, FAILED, CLIError
from .options import agent_trust_options, agent_trust_settings, caller_credential_options

if TYPE_CHECKING:  # the MCP SDK is imported only by the commands that run the gateway
    from aiohttp import web

    from pdp.mcp.gateway import GatewayConfig
    from pdp.mcp.pdp_client import CallerCredentials

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_LISTEN = "127.0.0.1:8710"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

log = logging.getLogger("pdp.mcp")


def parse_upstreams(items: tuple[str, ...], flag: str) -> dict[str, str]:
    """``NAME=URL`` items (NAME: the PDP destination; URL: its MCP endpoint)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, url = item.partition("=")
        parts = urlsplit(url)
        if not sep or not _NAME.fullmatch(name):
            raise CLIError(
                f"{flag} {item!r}: expected NAME=URL, NAME a destination name", BAD_INPUT
            )
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CLIError(f"{flag} {item!r}: URL must be http(s)://host:port/path", BAD_INPUT)
        if name in out:
            raise CLIError(f"{flag} {name!r} is given twice", BAD_INPUT)
        out[name] = url
    return out


def parse_listen(value: str, flag: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6)."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CLIError(f"{flag} {value!r}: expected HOST:PORT", BAD_INPUT)
    return host, int(port)


#: How `mcp-gateway` authenticates to the PDP as its caller (docs/mcp.md).
pdp_caller_options = caller_credential_options(
    "--pdp-",
    {
        "ca": "PDP_MCP_PDP_CA",
        "client-cert": "PDP_MCP_CLIENT_CERT",
        "client-key": "PDP_MCP_CLIENT_KEY",
        "caller-key-file": "PDP_MCP_CALLER_KEY_FILE",
    },
    who="this gateway",
)


def caller_credentials(
    pdp_url: str,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    caller_key_file: Path | None,
    prefix: str = "--pdp-",
    url_flag: str = "--pdp",
) -> CallerCredentials:
    """A client's caller credentials from :func:`~pdpctl.options.caller_credential_options`
    with flag ``prefix`` (CLIError, exit 9, when they cannot work: TLS files for a
    plain-HTTP PDP, a key without its certificate, an unreadable or empty key file, a caller
    key sent in clear beyond loopback)."""
    from pdp.mcp.pdp_client import CallerCredentials

    parts = urlsplit(pdp_url)
    if (ca_file or cert_file) and parts.scheme != "https":
        raise CLIError(
            f"{prefix}ca and {prefix}client-cert need an https:// {url_flag} URL", BAD_INPUT
        )
    if key_file is not None and cert_file is None:
        raise CLIError(f"{prefix}client-key needs {prefix}client-cert", BAD_INPUT)
    caller_key = None
    if caller_key_file is not None:
        try:
            caller_key = caller_key_file.read_text("ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"{prefix}caller-key-file: cannot read it: {exc}", BAD_INPUT) from None
        if not caller_key or not caller_key.isprintable() or " " in caller_key:
            raise CLIError(f"{prefix}caller-key-file: expected one caller key", BAD_INPUT)
        if parts.scheme != "https" and not is_loopback(parts.hostname or ""):
            raise CLIError(
                f"{prefix}caller-key-file: the PDP is reached over plain http beyond loopback; "
                "the caller key would travel in clear (use https://)",
                BAD_INPUT,
            )
    credentials = CallerCredentials(ca_file, cert_file, key_file, caller_key)
    try:
        credentials.ssl_context()  # a file that is no PEM certificate or key: say so now
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        message = f"{prefix}ca / {prefix}client-cert / {prefix}client-key: {exc}"
        raise CLIError(message, BAD_INPUT) from None
    return credentials


def gateway_config(
    pdp_url: str,
    upstreams: Mapping[str, str],
    listen: tuple[str, int],
    settings: Settings,
    *,
    public_url: str | None = None,
    list_ttl_s: float = 30.0,
    caller: CallerCredentials | None = None,
) -> GatewayConfig:
    """The :class:`~pdp.mcp.gateway.GatewayConfig` for these flags and PDP settings;
    ``caller``: how the gateway authenticates to the PDP (:func:`caller_credentials`)."""
    from pdp.mcp.gateway import GatewayConfig, load_verifier

    verifier = load_verifier(
        settings.audience,
        settings.trust_bundles,
        settings.dev_trust_domains,
        settings.state_dir,
        leeway_seconds=settings.clock_skew_seconds,
    )
    return GatewayConfig(
        pdp_url=pdp_url,
        upstreams=dict(upstreams),
        verifier=verifier,
        host=listen[0],
        port=listen[1],
        public_url=public_url,
        list_ttl_s=list_ttl_s,
        pdp_caller=caller,
    )


def _server(config: GatewayConfig, *, own_signals: bool) -> Any:
    """A uvicorn server for the gateway; without ``own_signals`` it leaves SIGINT/SIGTERM
    to the process it is embedded in."""
    import uvicorn

    from pdp.mcp.gateway import build_app

    class _Embedded(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    kind = uvicorn.Server if own_signals else _Embedded
    return kind(
        uvicorn.Config(
            build_app(config),
            host=config.host,
            port=config.port,
            log_level="warning",
            lifespan="on",
        )
    )


def embed(app: web.Application, config: GatewayConfig) -> None:
    """Run the gateway on ``app``'s (the `pdpctl serve` aiohttp app's) event loop."""
    from aiohttp import web

    server = _server(config, own_signals=False)
    key = web.AppKey("mcp_gateway_task", asyncio.Task)

    async def start(app: web.Application) -> None:
        app[key] = asyncio.create_task(server.serve())

    async def stop(app: web.Application) -> None:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await app[key]

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


@click.command("mcp-gateway")
@click.option(
    "--pdp",
    "pdp_url",
    default="http://127.0.0.1:8700",
    envvar="PDP_URL",
    show_envvar=True,
    show_default=True,
    help="The PDP whose decision API decides every call.",
)
@click.option(
    "--upstream",
    "upstreams",
    multiple=True,
    required=True,
    metavar="NAME=URL",
    help="An upstream MCP server: NAME is its PDP destination, URL its endpoint (repeatable).",
)
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT")
@click.option("--public-url", help="URL agents reach the gateway at [http://HOST:PORT].")
@agent_trust_options("Where the dev trust keys are [.pdp-state].")
@click.option(
    "--list-ttl",
    type=click.FloatRange(0, 3600),
    default=30.0,
    show_default=True,
    help="Seconds a listed catalog and a per-agent list filter are reused.",
)
@pdp_caller_options
def mcp_gateway(
    pdp_url: str,
    upstreams: tuple[str, ...],
    listen: str,
    public_url: str | None,
    state_dir: Path | None,
    audience: str | None,
    trust_bundles: tuple[str, ...],
    no_dev_trust: bool,
    list_ttl: float,
    pdp_ca: Path | None,
    pdp_client_cert: Path | None,
    pdp_client_key: Path | None,
    pdp_caller_key_file: Path | None,
) -> None:
    """Serve MCP at /mcp in front of upstream MCP servers; the PDP decides every call.

    Agents present their JWT-SVID as the bearer token and name their tenant and task in
    X-PDP-Tenant / X-PDP-Task-Id / X-PDP-Task-Purpose / X-PDP-Session headers (or _meta),
    and the approval a retried call uses in X-PDP-Approval-Id.

    When the PDP authenticates its callers, the gateway is one: --pdp-client-cert (mTLS)
    and/or --pdp-caller-key-file; without them every call is refused and nothing is
    forwarded.
    """
    upstream_map = parse_upstreams(upstreams, "--upstream")
    where = parse_listen(listen)
    caller = caller_credentials(
        pdp_url, pdp_ca, pdp_client_cert, pdp_client_key, pdp_caller_key_file
    )
    try:
        settings = Settings.from_env(
            **agent_trust_settings(state_dir, audience, trust_bundles, no_dev_trust)
        )
        config = gateway_config(
            pdp_url,
            upstream_map,
            where,
            settings,
            public_url=public_url,
            list_ttl_s=list_ttl,
            caller=caller,
        )
    except ConfigError as exc:
        raise CLIError(str(exc), exc.exit_code) from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    names = ", ".join(f"{n} -> {u}" for n, u in upstream_map.items())
    click.echo(
        f"agent-pdp MCP gateway on http://{where[0]}:{where[1]}/mcp (PDP {pdp_url}; {names})",
        err=True,
    )
    server = _server(config, own_signals=True)
    try:
        server.run()
    except OSError as exc:
        raise CLIError(f"could not start: {exc}", FAILED) from None
