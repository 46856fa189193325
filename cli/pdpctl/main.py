"""pdpctl: one click group; subcommands receive a :class:`Project` context object."""

from __future__ import annotations

import json
import logging
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from pdp.bundle import BundleError
from pdp.bundledata import DataSchemaError
from pdp.config import ConfigError, Settings
from pdp.devtrust import mint_svid
from pdp.errors import PDPError
from pdp.eventloop import loop_name
from pdp.statelock import lock_state_dir
from pdp.textsafe import safe
from pdp.tools import ToolNotFoundError

from .agents import agents
from .approvals import approvals
from .audit import audit
from .bundles import inspect_command, publish_command, verify_command
from .callers import callers
from .ci import ci
from .credentials import credentials
from .errors import (
    BAD_INPUT,
    FAILED,
    SERVICE_ERROR,
    CLIError,
)
from .fuzz import fuzz
from .keys import keys
from .mcp import (
    DEFAULT_LISTEN,
    caller_credentials,
    embed,
    gateway_config,
    mcp_gateway,
    parse_listen,
    parse_upstreams,
)
from .options import agent_trust_options, agent_trust_settings, caller_credential_options
from .policy import bundle, policy
from .project import Project
from .replay import replay_command
from .serve_options import supply_options
from .shadow import shadow

DEFAULT_URL = "http://127.0.0.1:8700"


class _Group(click.Group):
    """The pdpctl group: every :class:`~pdp.errors.PDPError` a command lets through becomes
    one line on stderr and the exit code its class carries (translated here, once)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PDPError as exc:
            raise CLIError(str(exc), exc.exit_code) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--policies",
    "policies_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("policies"),
    envvar="PDP_POLICIES_DIR",
    show_envvar=True,
    show_default=True,
    help="Policy directory: Rego under pdp/, data under data/.",
)
@click.option(
    "--opa", "opa_binary", envvar="PDP_OPA_BINARY", show_envvar=True, help="Path of `opa`."
)
@click.version_option(package_name="agent-pdp")
@click.pass_context
def cli(ctx: click.Context, policies_dir: Path, opa_binary: str | None) -> None:
    """agent-pdp: an OPA-backed policy decision point for AI gateways."""
    ctx.obj = Project(policies_dir=policies_dir, opa_binary=opa_binary)


policy.add_command(fuzz)
cli.add_command(policy)
cli.add_command(bundle)
bundle.add_command(verify_command)
bundle.add_command(inspect_command)
bundle.add_command(publish_command)
cli.add_command(keys)
cli.add_command(credentials)
cli.add_command(callers)
cli.add_command(agents)
cli.add_command(approvals)
cli.add_command(audit)
cli.add_command(replay_command)
cli.add_command(shadow)
cli.add_command(ci)
cli.add_command(mcp_gateway)


def trust_boundary_options(f: Any) -> Any:
    """The listener, caller-authentication and overload flags of `serve` (each also a
    PDP_* variable, read through Settings so a bad value names the variable)."""
    path = click.Path(dir_okay=False, path_type=Path)
    options = [
        click.option(
            "--tls-cert", type=path, help="TLS certificate chain (PEM). Env: PDP_TLS_CERT."
        ),
        click.option("--tls-key", type=path, help="TLS private key (PEM). Env: PDP_TLS_KEY."),
        click.option(
            "--client-ca",
            type=path,
            help="Callers' client certificates must chain to these CAs (PEM) or this SPIFFE "
            "X.509 bundle (JSON). Env: PDP_CLIENT_CA.",
        ),
        click.option(
            "--client-trust-domain",
            help="Caller certificates must be X.509-SVIDs of this trust domain. "
            "Env: PDP_CLIENT_TRUST_DOMAIN.",
        ),
        click.option(
            "--client-id-prefix",
            help="SPIFFE ID prefix of gateways that share a trust domain with agents "
            "(spiffe://td/gateways/); any other caller certificate of an agents' trust "
            "domain is an agent and its decisions are denied. Env: PDP_CLIENT_ID_PREFIX.",
        ),
        click.option(
            "--caller-keys",
            type=path,
            help="Hashed caller keys, '<caller-id> sha256:<hex>' lines (`pdpctl callers add`). "
            "Env: PDP_CALLER_KEYS.",
        ),
        click.option(
            "--insecure-no-caller-auth",
            is_flag=True,
            default=None,
            help="Listen beyond loopback without caller authentication (never in production).",
        ),
        click.option(
            "--admin-host", help="Admin listener address [127.0.0.1]. Env: PDP_ADMIN_HOST."
        ),
        click.option(
            "--admin-port",
            type=int,
            help="Serve the admin API and /metrics on their own port. Env: PDP_ADMIN_PORT.",
        ),
        click.option(
            "--trust-bundle-refresh",
            "trust_bundle_refresh_s",
            type=float,
            help="Seconds between trust bundle file checks [2; 0: never]. "
            "Env: PDP_TRUST_BUNDLE_REFRESH_S.",
        ),
        click.option(
            "--svid-max-lifetime",
            "svid_max_lifetime_s",
            type=int,
            help="Longest accepted JWT-SVID lifetime, seconds [86400]. "
            "Env: PDP_SVID_MAX_LIFETIME_S.",
        ),
        click.option(
            "--max-in-flight",
            type=int,
            help="Decisions evaluated at once; more are answered 503 [32]. Env: PDP_MAX_IN_FLIGHT.",
        ),
        click.option(
            "--max-connections",
            type=int,
            help="Open connections per listener [1024]. Env: PDP_MAX_CONNECTIONS.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@cli.command()
@click.option("--host", envvar="PDP_HOST", show_envvar=True, help="Listen address [127.0.0.1].")
# Integer settings read their PDP_* variable through Settings.from_env, not click: a bad
# value there is a configuration error (exit 9) naming the variable, like every other.
@click.option("--port", type=int, help="Listen port [8700]. Env: PDP_PORT.")
@agent_trust_options("State directory [.pdp-state].")
@click.option(
    "--opa-url",
    envvar="PDP_OPA_URL",
    show_envvar=True,
    help="Use a remote OPA (http://host:port or unix:///sock) instead of the embedded one.",
)
@click.option(
    "--opa-timeout-ms",
    type=int,
    help="Deadline per OPA evaluation [100]. Env: PDP_OPA_TIMEOUT_MS.",
)
@click.option(
    "--policies",
    "serve_policies",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Serve this policy directory (the bundle is built from it); same as "
    "`pdpctl --policies DIR serve`. Example: examples/authzen/todo.",
)
@supply_options
@click.option(
    "--mcp-upstream",
    "mcp_upstreams",
    multiple=True,
    metavar="NAME=URL",
    help="Also run the MCP gateway (`pdpctl mcp-gateway`) in this process, in front of "
    "this upstream MCP server (repeatable); it calls this server's decision API.",
)
@click.option(
    "--mcp-listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    help="Where the embedded MCP gateway listens.",
)
@click.option(
    "--ext-authz-grpc-port",
    type=int,
    help="Serve Envoy ext_authz gRPC (envoy.service.auth.v3.Authorization) on this port "
    "of --host, with the TLS and caller authentication of the HTTP listener. "
    "Env: PDP_EXT_AUTHZ_GRPC_PORT.",
)
@click.option(
    "--routes",
    "routes_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="ext_authz route file (YAML, docs/gateways.md). Env: PDP_EXT_AUTHZ_ROUTES.",
)
@trust_boundary_options
@click.pass_obj
def serve(
    project: Project,
    /,
    host: str | None,
    port: int | None,
    state_dir: Path | None,
    audience: str | None,
    trust_bundles: tuple[str, ...],
    opa_url: str | None,
    opa_timeout_ms: int | None,
    no_dev_trust: bool,
    serve_policies: Path | None,
    mcp_upstreams: tuple[str, ...],
    mcp_listen: str,
    supply: dict[str, Any],
    ext_authz_grpc_port: int | None,
    routes_file: Path | None,
    **boundary: Any,
) -> None:
    """Serve the decision API (embedded OPA unless --opa-url is given).

    On loopback (the default) no caller authentication is needed. On any other address
    callers must authenticate (--client-ca and/or --caller-keys, over --tls-cert/--tls-key),
    unless --insecure-no-caller-auth is given; the admin API and /metrics are then served
    only on --admin-host/--admin-port (docs/security.md).
    """
    from pdp import server
    from pdp.app import create_app

    try:
        settings = Settings.from_env(
            host=host,
            port=port,
            **agent_trust_settings(state_dir, audience, trust_bundles, no_dev_trust),
            opa_url=opa_url,
            opa_timeout_ms=opa_timeout_ms,
            opa_binary=project.opa_binary,
            policies_dir=serve_policies or project.policies_dir,
            **{k: v for k, v in boundary.items() if v is not None and v is not False},
            **supply,
            ext_authz_grpc_port=ext_authz_grpc_port,
            ext_authz_routes=routes_file,
        )
        if mcp_upstreams and (settings.caller_auth or settings.tls_cert is not None):
            # The embedded gateway calls this server over plain loopback HTTP with no caller
            # credentials: it would be refused (every call denied). Say so at start instead.
            raise CLIError(
                "--mcp-upstream: the embedded MCP gateway cannot call a server with TLS or "
                "caller authentication; run `pdpctl mcp-gateway` with --pdp-ca and "
                "--pdp-client-cert / --pdp-caller-key-file instead (docs/mcp.md)",
                BAD_INPUT,
            )
        # Before anything in the state dir is touched (bundle, OPA socket, audit, keys):
        # a second serve on the same directory stops here, exit 9, the first unharmed.
        state_lock = lock_state_dir(settings.state_dir)
    except ConfigError as exc:
        raise CLIError(str(exc), exc.exit_code) from None
    except OSError as exc:  # the state dir cannot be created or locked
        raise CLIError(f"could not start: {exc}", BAD_INPUT) from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pdp").info("event loop: %s", loop_name(settings.event_loop))
    app = create_app(settings)
    mcp_note = ""
    if mcp_upstreams:
        own = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        gateway = gateway_config(
            f"http://{own}:{settings.port}",
            parse_upstreams(mcp_upstreams, "--mcp-upstream"),
            parse_listen(mcp_listen, "--mcp-listen"),
            settings,
        )
        embed(app, gateway)
        mcp_note = f"; MCP gateway on http://{gateway.host}:{gateway.port}/mcp"
    scheme = "https" if settings.tls_cert is not None else "http"

    def ready(started: server.Started) -> None:  # once listening
        admin = (
            f"; admin on {scheme}://{settings.admin_host}:{started.admin_port}"
            if started.admin_port is not None
            else ""
        )
        engine = (
            f"OPA with {settings.opa_config}"
            if settings.opa_config
            else "embedded OPA"
            if settings.embedded
            else settings.opa_url
        )
        click.echo(
            f"agent-pdp serving on {scheme}://{settings.host}:{started.port} "
            f"({engine}; state in {settings.state_dir}{admin}{mcp_note})",
            err=True,
        )

    try:
        server.run(app, settings, on_ready=ready)
    except ToolNotFoundError as exc:
        raise CLIError(str(exc), exc.exit_code) from None
    except BundleError as exc:
        what = (
            "data documents do not match their schemas"
            if isinstance(exc, DataSchemaError)
            else "policies do not compile"
        )
        message = f"could not start: {what}: {exc}"
        raise CLIError(message, exc.exit_code) from None
    except PDPError as exc:  # start-up failures: one line, no traceback
        raise CLIError(f"could not start: {exc}", exc.exit_code) from None
    except OSError as exc:  # the address is in use, the state dir is not writable
        raise CLIError(f"could not start: {exc}", FAILED) from None
    finally:
        state_lock.close()  # the kernel releases it at exit anyway


@cli.group()
def dev() -> None:
    """Development helpers for the embedded default."""


@dev.command()
@click.option(
    "--spiffe-id",
    required=True,
    help="SPIFFE ID of the agent, e.g. spiffe://acme.example/agents/support-bot.",
)
@click.option("--audience", default="agent-pdp", envvar="PDP_AUDIENCE", show_default=True)
@click.option(
    "--ttl", type=click.IntRange(1, 86400), default=300, show_default=True, help="Seconds."
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".pdp-state"),
    envvar="PDP_STATE_DIR",
    show_default=True,
)
def token(spiffe_id: str, audience: str, ttl: int, state_dir: Path) -> None:
    """Print a JWT-SVID signed by the dev trust domain of SPIFFE_ID (start `serve` once first)."""
    try:
        click.echo(mint_svid(state_dir, spiffe_id, audience=audience, ttl_seconds=ttl))
    except ValueError as exc:  # DevTrustError, or a SPIFFE ID that does not parse
        raise CLIError(str(exc), BAD_INPUT) from None


@cli.command()
@click.argument("file", type=click.File("rb"))
@click.option("--url", default=DEFAULT_URL, envvar="PDP_URL", show_envvar=True, show_default=True)
@click.option("--token", "token_", default=None, help="Agent token to send (overrides the file's).")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".pdp-state"),
    envvar="PDP_STATE_DIR",
    show_default=True,
    help="Where dev keys are, to mint a token for an example's spiffe_id.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the raw JSON response (stdout: JSON only)."
)
@caller_credential_options("--", who="pdpctl")
def decide(
    file: Any,
    url: str,
    token_: str | None,
    state_dir: Path,
    as_json: bool,
    ca: Path | None,
    client_cert: Path | None,
    client_key: Path | None,
    caller_key_file: Path | None,
) -> None:
    """Send a decision request from FILE and print the decision.

    FILE is either a plain decision request, or an example
    ({"spiffe_id", "request", "expect"}): a dev token is minted for its spiffe_id and the
    answer is compared with "expect" (exit 1 when it differs; the comparison goes to stderr
    under --json). A PDP that authenticates callers (serve --caller-keys / --client-ca) takes
    --caller-key-file and/or --client-cert/--client-key (files only), with --ca for its
    certificate.
    """
    caller = caller_credentials(url, ca, client_cert, client_key, caller_key_file, "--", "--url")
    try:
        doc = json.load(file)
    except ValueError as exc:
        raise CLIError(f"{file.name}: not JSON: {exc}", BAD_INPUT) from None
    if not isinstance(doc, dict):
        raise CLIError(f"{file.name}: must hold a JSON object", BAD_INPUT)
    expect = doc.get("expect") if "request" in doc else None
    request: dict[str, Any] = doc["request"] if "request" in doc else doc
    if token_ is None and doc.get("spiffe_id") and "request" in doc:
        try:
            token_ = mint_svid(state_dir, doc["spiffe_id"])
        except ValueError as exc:  # DevTrustError, or a SPIFFE ID that does not parse
            raise CLIError(str(exc), BAD_INPUT) from None
    if token_ is not None:
        request = {**request, "agent": {**request.get("agent", {}), "token": token_}}
    status, answer = _post_json(
        url.rstrip("/") + "/v1/decisions",
        request,
        headers=caller.headers(),
        context=caller.ssl_context(),
    )
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    else:
        _print_decision(status, answer)
    if status != 200:
        raise CLIError(f"service answered {status}", SERVICE_ERROR)
    if expect is not None:
        got = {"allow": answer.get("allow"), "reasons": [r["code"] for r in answer["reasons"]]}
        want = {"allow": expect.get("allow"), "reasons": list(expect.get("reasons", []))}
        if got != want:
            raise CLIError(f"expected {json.dumps(want)}, got {json.dumps(got)}", FAILED)
        click.echo("matches expect", err=as_json)  # under --json stdout is the JSON only


def _post_json(
    url: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            raise CLIError(f"{url}: HTTP {exc.code}", SERVICE_ERROR) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CLIError(f"{url}: cannot reach the service ({reason})", SERVICE_ERROR) from None


def _print_decision(status: int, answer: dict[str, Any]) -> None:
    if "error" in answer:
        err = answer["error"]
        click.echo(safe(f"ERROR {status} {err.get('code')}: {err.get('message')}"))
        for f in err.get("fields", []):
            click.echo(safe(f"  {f['path']}: {f['message']}"))
        return
    verdict = "ALLOW" if answer.get("allow") else "DENY"
    revision = (answer.get("policy") or {}).get("revision")
    click.echo(safe(f"{verdict}  decision {answer.get('decision_id')}  policy {revision}"))
    for r in answer.get("reasons", []):
        click.echo(safe(f"  - {r.get('code')}: {r.get('message')}  [{r.get('rule')}]"))
    obligations = answer.get("obligations") or {}
    if obligations:
        click.echo(safe(f"  obligations: {json.dumps(obligations, sort_keys=True)}"))


def main() -> None:  # pragma: no cover - console entry point
    cli(prog_name=os.path.basename(sys.argv[0]) or "pdpctl")
