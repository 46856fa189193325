"""`pdpctl credentials`: introspect or revoke a minted credential (admin API)."""

from __future__ import annotations

import click

from pdp.textsafe import safe

from .admin_client import AdminClient, admin_options, echo_json, fail


@click.group()
def credentials() -> None:
    """Credentials minted on allow: introspect (RFC 7662), revoke (RFC 7009)."""


@credentials.command()
@click.argument("token")
@admin_options
def introspect(client: AdminClient, as_json: bool, token: str) -> None:
    """Say whether TOKEN is active and what it allows; exit 1 when inactive."""
    answer = client.call("POST", "/v1/credentials/introspect", {"token": token})
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
@click.argument("token")
@admin_options
def revoke(client: AdminClient, as_json: bool, token: str) -> None:
    """Revoke TOKEN until it expires (succeeds for unknown tokens too, as RFC 7009 says)."""
    answer = client.call("POST", "/v1/credentials/revoke", {"token": token})
    if as_json:
        echo_json(answer)
    else:
        click.echo("revoked")
