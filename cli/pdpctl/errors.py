"""Exit codes and the one error type commands raise: one line on stderr, no traceback."""

from __future__ import annotations

from typing import IO, Any

import click

# The exit codes are defined beside the exception hierarchy they belong to (pdp.errors):
# every PDPError carries its exit_code, and the pdpctl group translates it (main.py).
from pdp.errors import (
    AUDIT_INVALID,
    BAD_INPUT,
    BUNDLE_INVALID,
    DOES_NOT_COMPILE,
    FAILED,
    LINT_FAILED,
    NOT_FORMATTED,
    OK,
    REPLAY_CHANGED,
    SERVICE_ERROR,
    TESTS_FAILED,
    TOOL_MISSING,
    USAGE,
)

__all__ = [
    "AUDIT_INVALID",
    "BAD_INPUT",
    "BUNDLE_INVALID",
    "DOES_NOT_COMPILE",
    "FAILED",
    "LINT_FAILED",
    "NOT_FORMATTED",
    "OK",
    "REPLAY_CHANGED",
    "SERVICE_ERROR",
    "TESTS_FAILED",
    "TOOL_MISSING",
    "USAGE",
    "CLIError",
]


class CLIError(click.ClickException):
    """An expected failure: printed as one line, exits with ``exit_code``."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        # click declares exit_code a ClassVar; a per-instance code is the point here.
        self.exit_code = code  # type: ignore[misc]

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)
