"""Exit codes and the one error type commands raise: one line on stderr, no traceback."""

from __future__ import annotations

from typing import IO, Any

import click

OK = 0
#: A check failed in a generic way (e.g. `decide` answer differs from `expect`).
FAILED = 1
#: Usage error (click's own).
USAGE = 2
#: A tool (opa, regal) is missing.
TOOL_MISSING = 3
#: Policies do not compile (`policy check`, `bundle build`).
DOES_NOT_COMPILE = 4
#: Policy tests failed or coverage is under the gate.
TESTS_FAILED = 5
#: Regal found lint violations.
LINT_FAILED = 6
#: Files are not `opa fmt` formatted (`policy fmt --check`).
NOT_FORMATTED = 7
#: The service could not be reached or answered an error.
SERVICE_ERROR = 8
#: Bad configuration or input file.
BAD_INPUT = 9
#: The audit trail failed verification (a record modified, deleted, reordered, truncated).
AUDIT_INVALID = 10
#: Replay found changed decisions that --fail-on refuses (e.g. access gained).
REPLAY_CHANGED = 11
#: A bundle's signature does not verify (unsigned, tampered with, another key).
BUNDLE_INVALID = 12


class CLIError(click.ClickException):
    """An expected failure: printed as one line, exits with ``exit_code``."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        # click declares exit_code a ClassVar; a per-instance code is the point here.
        self.exit_code = code  # type: ignore[misc]

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)
