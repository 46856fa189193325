"""`pdpctl keys`: the credential-signing keys of a running service (admin API)."""

from __future__ import annotations

import time
from typing import Any

import click

from .admin_client import AdminClient, admin_options, echo_json


@click.group()
def keys() -> None:
    """Credential-signing keys: list, rotate (through the running service's admin API)."""


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@keys.command("list")
@admin_options
def list_keys(client: AdminClient, as_json: bool) -> None:
    """List the keys in the JWKS; * marks the one this replica signs with."""
    answer = client.call("GET", "/v1/keys")
    if as_json:
        echo_json(answer)
        return
    for key in answer["keys"]:
        mark = "*" if key["kid"] == answer["current"] else " "
        drop = f"  drop after {_when(key['drop_after'])}" if key["drop_after"] else ""
        click.echo(
            f"{mark} {key['kid']}  {key['alg']}  {key['state']:<7}  node {key['node']}  "
            f"created {_when(key['created_at'])}{drop}"
        )


@keys.command()
@admin_options
def rotate(client: AdminClient, as_json: bool) -> None:
    """Make a new key current on every replica; the old one stays in the JWKS until the
    last credential it signed has expired."""
    answer: dict[str, Any] = client.call("POST", "/v1/keys/rotate", {})
    if as_json:
        echo_json(answer)
        return
    click.echo(f"rotated: {answer['previous']} -> {answer['current']}")
