"""`pdpctl credentials`: introspect or revoke a minted credential (admin API)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from pdp.textsafe import safe

from .admin_client import AdminClient, admin_options, echo_json, fail
from .errors import BAD_INPUT, CLIError


def token_source(f: Any) -> Any:
    """TOKEN as an argument is optional: without it (or with ``-``) the token is read from
    stdin, or from --token-file, so no secret has to be on a command line."""
    f = click.argument("token", required=False)(f)
    return click.option(
        "--token-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Read the credential from this file ('-' or no TOKEN: from stdin).",
    )(f)


def read_token(token: str | None, token_file: Path | None) -> str:
    """The credential from the argument, the file, or stdin (first line, trimmed)."""
    if token is not None and token != "-" and token_file is not None:
        raise CLIError("give the credential as TOKEN or with --token-file, not both", BAD_INPUT)
    if token_file is not None:
        try:
            text = token_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"cannot read {str(token_file)!r}: {exc}", BAD_INPUT) from None
    elif token is None or token == "-":
        text = sys.stdin.read()
    else:
        text = token
    value = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not value:
        raise CLIError("no credential given (TOKEN, --token-file or stdin)", BAD_INPUT)
    return value


@click.group()
def credentials() -> None:
    """Credentials minted on allow: introspect (RFC 7662), revoke (RFC 7009)."""


@credentials.command()
@token_source
@admin_options
def introspect(
    client: AdminClient, as_json: bool, token: str | None, token_file: Path | None
) -> None:
    """Say whether TOKEN (or the one on stdin / in --token-file) is active and what it
    allows; exit 1 when inactive."""
    answer = client.call(
        "POST", "/v1/credentials/introspect", {"token": read_token(token, token_file)}
    )
    if as_json:
        echo_json(answer)
    elif answer.get("active"):
        click.echo(
            safe(
                f"active  jti {answer['jti']}  sub {answer['sub']}  aud {answer['aud']}  "
                f"scope {answer['scope']}  exp {answer['exp']}"
            )
        )
    else:
        click.echo("inactive")
    if not answer.get("active"):
        raise fail("the credential is not active")


@credentials.command()
@token_source
@admin_options
def revoke(client: AdminClient, as_json: bool, token: str | None, token_file: Path | None) -> None:
    """Revoke TOKEN (or the one on stdin / in --token-file) until it expires (succeeds for
    unknown tokens too, as RFC 7009 says)."""
    answer = client.call("POST", "/v1/credentials/revoke", {"token": read_token(token, token_file)})
    if as_json:
        echo_json(answer)
    else:
        click.echo("revoked")
