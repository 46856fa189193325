"""`pdpctl agents`: every agent the PDP has seen; disable and enable them (admin API)."""

from __future__ import annotations

import time

import click

from pdp.textsafe import safe

from .admin_client import AdminClient, admin_options, echo_json


@click.group()
def agents() -> None:
    """Agent lifecycle: list, disable, enable."""


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@agents.command("list")
@admin_options
def list_agents(client: AdminClient, as_json: bool) -> None:
    """Every agent seen: status, last seen, decisions, credentials outstanding, tools."""
    answer = client.call("GET", "/v1/agents")
    if as_json:
        echo_json(answer)
        return
    for a in answer["agents"]:
        reason = f" ({a['reason']})" if a["status"] == "disabled" and a["reason"] else ""
        click.echo(
            safe(
                f"{a['spiffe_id']}  {a['status']}{reason}  last seen {_when(a['last_seen'])}  "
                f"allowed {a['decisions_allowed']}  denied {a['decisions_denied']}  credentials "
                f"{a['credentials_outstanding']}  tools {','.join(a['tools_used']) or '-'}"
            )
        )


@agents.command()
@click.argument("spiffe_id")
@click.option("--reason", required=True, help="Why (shown in `agents list` and the logs).")
@admin_options
def disable(client: AdminClient, as_json: bool, spiffe_id: str, reason: str) -> None:
    """Deny SPIFFE_ID from now on and make its credentials inactive."""
    answer = client.call("POST", "/v1/agents/disable", {"spiffe_id": spiffe_id, "reason": reason})
    if as_json:
        echo_json(answer)
    else:
        click.echo(f"disabled {answer['spiffe_id']}")


@agents.command()
@click.argument("spiffe_id")
@click.option("--reason", default=None, help="Why (logged).")
@admin_options
def enable(client: AdminClient, as_json: bool, spiffe_id: str, reason: str | None) -> None:
    """Let SPIFFE_ID be decided again (credentials issued before stay inactive)."""
    body = {"spiffe_id": spiffe_id}
    if reason:
        body["reason"] = reason
    answer = client.call("POST", "/v1/agents/enable", body)
    if as_json:
        echo_json(answer)
    else:
        click.echo(f"enabled {answer['spiffe_id']}")
