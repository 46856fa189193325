"""`pdpctl approvals`: list, grant and deny just-in-time approvals (docs/approvals.md).

Approvers authenticate with the approver credential (``--approver-token`` /
``PDP_APPROVER_TOKEN``) or, failing that, the admin credential (as every admin command).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from pdp.textsafe import safe

from .admin_client import AdminClient, admin_options, echo_json, quote

F = TypeVar("F", bound=Callable[..., Any])

STATUSES = ("pending", "granted", "denied", "expired", "used", "all")


def approver_options(f: F) -> F:
    """admin_options, plus --approver-token, which replaces the admin credential."""

    def wrapper(client: AdminClient, approver_token: str | None, **kwargs: Any) -> Any:
        if approver_token:
            client = AdminClient(client.url, approver_token)
        return f(client=client, **kwargs)

    wrapper.__doc__ = f.__doc__
    wrapper.__name__ = f.__name__
    option = click.option(
        "--approver-token",
        envvar="PDP_APPROVER_TOKEN",
        show_envvar=True,
        help="Approver credential (default: the admin credential).",
    )
    return option(admin_options(wrapper))  # type: ignore[return-value]


@click.group()
def approvals() -> None:
    """Just-in-time approvals: list, grant, deny."""


def _line(a: dict[str, Any]) -> str:
    action = a["action"]
    call = f"{action['type']} {action['name'] or '-'} {action['operation'] or '-'}"
    who = f"  by {a['decided_by']}" + (f" ({a['approver']})" if a["approver"] else "")
    decided = who if a["decided_by"] else ""
    note = f"  note: {a['note']}" if a["note"] else ""
    return safe(
        f"{a['id']}  {a['status']}  {a['agent']}  {a['tenant']}  {call} -> {a['destination']}"
        f"  expires {a['expires_at']}{decided}{note}"
    )


@approvals.command("list")
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    default="pending",
    show_default=True,
    help="Only approvals in this state.",
)
@approver_options
def list_approvals(client: AdminClient, as_json: bool, status: str) -> None:
    """Approvals, newest first: the call each covers, its state and who decided it."""
    path = "/v1/approvals" + ("" if status == "all" else f"?status={status}")
    answer = client.call("GET", path)
    if as_json:
        echo_json(answer)
        return
    for a in answer["approvals"]:
        click.echo(_line(a))
    if not answer["approvals"]:
        click.echo(f"no {'' if status == 'all' else status + ' '}approvals")


def _decide(client: AdminClient, as_json: bool, verb: str, approval_id: str, **body: Any) -> None:
    payload = {k: v for k, v in body.items() if v is not None}
    answer = client.call("POST", f"/v1/approvals/{quote(approval_id)}/{verb}", payload)
    if as_json:
        echo_json(answer)
    else:
        click.echo(_line(answer))


@approvals.command()
@click.argument("approval_id")
@click.option("--approver", default=None, help="Who grants it (recorded with the grant).")
@click.option("--note", default=None, help="Why (recorded with the grant).")
@approver_options
def grant(
    client: AdminClient, as_json: bool, approval_id: str, approver: str | None, note: str | None
) -> None:
    """Grant APPROVAL_ID: the gateway may re-send the call with its approval_id."""
    _decide(client, as_json, "grant", approval_id, approver=approver, note=note)


@approvals.command()
@click.argument("approval_id")
@click.option("--approver", default=None, help="Who denies it (recorded).")
@click.option("--note", default=None, help="Why (recorded).")
@approver_options
def deny(
    client: AdminClient, as_json: bool, approval_id: str, approver: str | None, note: str | None
) -> None:
    """Deny APPROVAL_ID: the call stays denied."""
    _decide(client, as_json, "deny", approval_id, approver=approver, note=note)
