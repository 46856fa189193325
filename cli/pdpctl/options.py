"""Option groups more than one command shares: each flag is spelled, typed and defaulted
once, so two commands cannot drift apart on a flag they both take.

- :func:`agent_trust_options`: how agents' JWT-SVIDs are verified (`serve`, `mcp-gateway`),
  read by :func:`agent_trust_settings`;
- :func:`report_options`: the report flags of `replay` and `shadow report`;
- :func:`path_option`: an optional file or directory flag;
- :func:`caller_credential_options`: how a client authenticates to a PDP as its caller
  (`mcp-gateway --pdp-*`, `decide`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pdp.config import Settings, parse_trust_bundles

F = TypeVar("F", bound=Callable[..., Any])

#: `replay` and `shadow report` formats.
REPORT_FORMATS = ("text", "json", "markdown", "junit")


def _apply(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    def decorate(f: F) -> F:
        for option in reversed(options):  # the first option listed is the first in --help
            f = option(f)
        return f

    return decorate


def path_option(
    flag: str, dest: str, help: str, *, file_okay: bool = True, dir_okay: bool = True
) -> Callable[[F], F]:
    """An optional path flag (default None) passed as ``dest``."""
    return click.option(
        flag,
        dest,
        type=click.Path(file_okay=file_okay, dir_okay=dir_okay, path_type=Path),
        default=None,
        help=help,
    )


def agent_trust_options(state_dir_help: str) -> Callable[[F], F]:
    """``--state-dir``, ``--audience``, ``--trust-bundle`` (repeatable), ``--no-dev-trust``:
    the command gets ``state_dir``, ``audience``, ``trust_bundles``, ``no_dev_trust``."""
    return _apply(
        [
            click.option(
                "--state-dir",
                type=click.Path(file_okay=False, path_type=Path),
                envvar="PDP_STATE_DIR",
                show_envvar=True,
                help=state_dir_help,
            ),
            click.option(
                "--audience",
                envvar="PDP_AUDIENCE",
                show_envvar=True,
                help="Required SVID audience.",
            ),
            click.option(
                "--trust-bundle",
                "trust_bundles",
                multiple=True,
                metavar="DOMAIN=FILE",
                help="SPIFFE trust bundle for a trust domain (repeatable; replaces that domain's "
                "bundle). Env: PDP_TRUST_BUNDLES=D=F,D2=F2.",
            ),
            click.option(
                "--no-dev-trust",
                is_flag=True,
                help="Do not create or accept dev trust domains (production). "
                "Env: PDP_DEV_TRUST_DOMAINS=''.",
            ),
        ]
    )


def agent_trust_settings(
    state_dir: Path | None,
    audience: str | None,
    trust_bundles: tuple[str, ...],
    no_dev_trust: bool,
) -> dict[str, Any]:
    """The :class:`~pdp.config.Settings` overrides of :func:`agent_trust_options`: each
    ``--trust-bundle`` replaces its domain's bundle of ``PDP_TRUST_BUNDLES`` (ConfigError
    when a value is wrong)."""
    env_bundles = Settings.from_env().trust_bundles
    return {
        "state_dir": state_dir,
        "audience": audience,
        "trust_bundles": {**env_bundles, **parse_trust_bundles(trust_bundles, "--trust-bundle")},
        "dev_trust_domains": () if no_dev_trust else None,
    }


def report_options(fail_on: tuple[str, ...], fail_on_help: str) -> Callable[[F], F]:
    """``--since``, ``--format`` and ``--fail-on`` of a replay-shaped report."""
    return _apply(
        [
            click.option(
                "--since", help="Only decisions since: a duration back (30m, 24h, 7d) or a time."
            ),
            click.option(
                "--format",
                "fmt",
                type=click.Choice(REPORT_FORMATS),
                default="text",
                show_default=True,
            ),
            click.option(
                "--fail-on",
                type=click.Choice(fail_on),
                default="allow-gained",
                show_default=True,
                help=fail_on_help,
            ),
        ]
    )


def caller_credential_options(
    prefix: str, envvars: dict[str, str] | None = None, who: str = "this client"
) -> Callable[[F], F]:
    """``{prefix}ca``, ``{prefix}client-cert``, ``{prefix}client-key``,
    ``{prefix}caller-key-file``: how a client authenticates to a PDP as its caller
    (docs/security.md); files only, so no secret is on the command line. ``envvars`` maps
    the suffixes (``ca``, ``client-cert``, ``client-key``, ``caller-key-file``) to
    environment variables."""
    env = envvars or {}
    path = click.Path(dir_okay=False, exists=True, path_type=Path)

    def option(suffix: str, help: str) -> Callable[[F], F]:
        return click.option(
            f"{prefix}{suffix}",
            type=path,
            envvar=env.get(suffix),
            show_envvar=suffix in env,
            help=help,
        )

    return _apply(
        [
            option(
                "ca",
                "CA certificates (PEM) the PDP's TLS certificate must chain to [the system's].",
            ),
            option(
                "client-cert",
                "Client certificate (PEM) to present to a PDP that authenticates callers "
                "by mTLS (serve --client-ca).",
            ),
            option(
                "client-key", f"Private key (PEM) of {prefix}client-cert [in the certificate file]."
            ),
            option(
                "caller-key-file",
                f"File holding {who}'s caller key (`pdpctl callers add`), sent as "
                "Authorization: Bearer to a PDP with --caller-keys.",
            ),
        ]
    )
