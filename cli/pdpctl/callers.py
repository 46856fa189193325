"""`pdpctl callers add`: a new caller (gateway) key; only its hash is stored."""

from __future__ import annotations

import os
from pathlib import Path

import click

from pdp.callers import CallerKeys, hash_key, new_key

from .errors import BAD_INPUT, CLIError


@click.group()
def callers() -> None:
    """Caller (PEP) keys for `pdpctl serve --caller-keys FILE`."""


@callers.command()
@click.argument("caller_id")
@click.option(
    "--keys-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The --caller-keys file to add the key's hash to (created 0600 if missing).",
)
def add(caller_id: str, keys_file: Path) -> None:
    """Make a key for CALLER_ID, add its SHA-256 to --keys-file, print the key once.

    The key is shown only here: give it to the gateway (it sends
    `Authorization: Bearer <key>`); the file keeps its hash. The service reads the file
    at start.
    """
    key = new_key()
    line = f"{caller_id} {hash_key(key)}\n"
    existing = keys_file.read_text() if keys_file.exists() else ""
    try:
        CallerKeys.parse(existing + line, str(keys_file))
    except ValueError as exc:
        raise CLIError(str(exc), BAD_INPUT) from None
    fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as handle:
        handle.write(line)
    click.echo(key)
