"""`pdpctl policy ...` and `pdpctl bundle ...`: thin, honest wrappers over opa and regal."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pdp.bundle import BundleError, build_bundle

from .errors import DOES_NOT_COMPILE, LINT_FAILED, NOT_FORMATTED, TESTS_FAILED, CLIError
from .project import Project, pass_project


def _echo_output(out: str, err: str = "") -> None:
    for text, to_err in ((out, False), (err, True)):
        if text.strip():
            click.echo(text.rstrip(), err=to_err)


@click.group()
def policy() -> None:
    """Format, check, lint and test the Rego policies."""


@policy.command()
@click.option("--check", is_flag=True, help="Only report files that need formatting.")
@pass_project
def fmt(project: Project, check: bool) -> None:
    """Format Rego with `opa fmt` (or, with --check, list unformatted files and fail)."""
    opa = project.opa()
    if check:
        proc = project.run([opa, "fmt", "--list", "--fail", *project.roots()])
        files = [line for line in proc.stdout.splitlines() if line.strip()]
        if files or proc.returncode not in (0, 2):
            _echo_output("\n".join(files), proc.stderr)
            raise CLIError(f"{len(files)} file(s) need `pdpctl policy fmt`", NOT_FORMATTED)
        click.echo("all Rego files are formatted")
        return
    proc = project.run([opa, "fmt", "--write", "--list", *project.roots()])
    if proc.returncode != 0:
        _echo_output(proc.stdout, proc.stderr)
        raise CLIError("opa fmt failed (does the policy parse?)", DOES_NOT_COMPILE)
    files = [line for line in proc.stdout.splitlines() if line.strip()]
    for f in files:
        click.echo(f"formatted {f}")
    click.echo(f"{len(files)} file(s) reformatted")


@policy.command()
@pass_project
def check(project: Project) -> None:
    """Compile the policies with `opa check --strict` (exit 4 when they do not compile)."""
    proc = project.run([project.opa(), "check", "--strict", *project.roots()])
    if proc.returncode != 0:
        _echo_output(proc.stdout, proc.stderr)
        raise CLIError("policies do not compile", DOES_NOT_COMPILE)
    click.echo("policies compile (opa check --strict)")


@policy.command()
@pass_project
def lint(project: Project) -> None:
    """Lint the policies with Regal (exit 6 on violations)."""
    proc = project.run([project.regal(), "lint", "--format", "pretty", str(project.policies_dir)])
    if proc.returncode != 0:
        _echo_output(proc.stdout, proc.stderr)
        raise CLIError("regal lint found violations", LINT_FAILED)
    click.echo("regal lint: no violations")


@policy.command()
@click.option(
    "--coverage-min",
    type=click.FloatRange(0, 100),
    default=None,
    help="Fail when line coverage (percent) is below this.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show every test.")
@pass_project
def test(project: Project, coverage_min: float | None, verbose: bool) -> None:
    """Run the Rego unit tests with `opa test --fail-on-empty` (exit 5 on failure)."""
    opa, roots = project.opa(), project.roots()
    proc = project.run([opa, "test", *roots, "--fail-on-empty", *(["-v"] if verbose else [])])
    _echo_output(proc.stdout, proc.stderr)
    if proc.returncode != 0:
        raise CLIError("policy tests failed", TESTS_FAILED)
    if coverage_min is None:
        return
    proc = project.run([opa, "test", *roots, "--coverage", "--format", "json"])
    try:
        report = json.loads(proc.stdout)
        coverage = float(report["coverage"])
    except (ValueError, KeyError, TypeError):
        _echo_output("", proc.stderr)
        raise CLIError("could not read opa's coverage report", TESTS_FAILED) from None
    click.echo(f"coverage: {coverage:.1f}% (minimum {coverage_min:g}%)")
    if coverage < coverage_min:
        for name, f in sorted(report.get("files", {}).items()):
            missed = f.get("not_covered") or []
            if missed:
                rows = ", ".join(f"{r['start']['row']}-{r['end']['row']}" for r in missed)
                click.echo(f"  {name}: not covered {rows}")
        raise CLIError(f"coverage {coverage:.1f}% is below {coverage_min:g}%", TESTS_FAILED)


@click.group()
def bundle() -> None:
    """Build policy bundles."""


@bundle.command()
@click.option(
    "--policies",
    "policies_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Policy directory (default: the global --policies).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("bundles/bundle.tar.gz"),
    show_default=True,
    help="Bundle file to write.",
)
@click.option("--revision", default=None, help="Bundle revision (default: a content hash).")
@pass_project
def build(project: Project, policies_dir: Path | None, output: Path, revision: str | None) -> None:
    """Build a bundle (tests excluded) with `opa build`; print its path and revision."""
    src = policies_dir or project.policies_dir
    try:
        built = build_bundle(project.opa(), src, output, revision=revision)
    except BundleError as exc:
        click.echo(str(exc), err=True)
        raise CLIError("bundle build failed: policies do not compile", DOES_NOT_COMPILE) from None
    click.echo(f"built {built.path} revision {built.revision}")
