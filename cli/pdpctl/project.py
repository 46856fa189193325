"""The context object every command receives: where the policies are, how to run OPA."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import click

from pdp.bundle import source_roots
from pdp.errors import BundleError
from pdp.tools import ToolNotFoundError, find_opa, find_regal

from .errors import BAD_INPUT, TOOL_MISSING, CLIError


@dataclass
class Project:
    """Policy directory plus tool locations, shared by the subcommands."""

    policies_dir: Path
    opa_binary: str | None = None

    def opa(self) -> str:
        try:
            return find_opa(self.opa_binary)
        except ToolNotFoundError as exc:
            raise CLIError(str(exc), TOOL_MISSING) from None

    def regal(self) -> str:
        try:
            return find_regal()
        except ToolNotFoundError as exc:
            raise CLIError(str(exc), TOOL_MISSING) from None

    def bundle_roots(self) -> list[str]:
        """The folders that go into a bundle (pdp/ and data/): what the PDP evaluates."""
        try:
            return [str(p) for p in source_roots(self.policies_dir)]
        except BundleError as exc:
            raise CLIError(str(exc), BAD_INPUT) from None

    def roots(self) -> list[str]:
        """The policy source folders OPA loads (pdp/ and data/), plus invariants/ (the
        properties `policy fuzz` proves: formatted, checked and tested with the policies,
        never part of a bundle)."""
        try:
            roots = [str(p) for p in source_roots(self.policies_dir)]
        except BundleError as exc:
            raise CLIError(str(exc), BAD_INPUT) from None
        invariants = self.policies_dir / "invariants"
        return roots + [str(invariants)] if invariants.is_dir() else roots

    def run(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        """Run a tool, capturing its output (shown by the caller as needed)."""
        return subprocess.run(cmd, capture_output=True, text=True, check=False)


pass_project = click.make_pass_decorator(Project)
