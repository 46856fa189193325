"""`pdpctl policy fuzz`: prove the invariants on a compiled bundle with generated inputs."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click

from pdp.bundle import BundleError, build_bundle
from pdp.errors import INVARIANT_VIOLATED, PDPError
from pdp.fuzz import BatchOPA, FuzzReport, run_fuzz
from pdp.fuzz.properties import dumps
from pdp.schema import load_schema

from .errors import BAD_INPUT, DOES_NOT_COMPILE, SERVICE_ERROR, CLIError
from .project import Project, pass_project

#: Where the invariants are declared, relative to the policy directory.
INVARIANTS = Path("invariants") / "invariants.rego"


def render(report: FuzzReport, seconds: float) -> str:
    """The text report: what was checked, then each shrunk counterexample."""
    checked = ", ".join(f"{k} {v}" for k, v in sorted(report.preconditions.items())) or "none"
    lines = [
        f"{report.cases} generated inputs, {report.evaluations} evaluations "
        f"({report.allowed} allowed, {report.denied} denied) in {seconds:.1f}s",
        f"  never-allow preconditions met: {checked}",
        f"  monotonicity checks (relaxed variants of denied inputs): {report.monotonic_checks}",
        f"  violations: {len(report.violations)}",
    ]
    for v in report.violations:
        lines.append("")
        head = f"VIOLATED {v.prop}"
        if v.change is not None:
            verdict = (v.variant_answer or {}).get("reasons") or "allow"
            lines.append(f"{head}: {v.change} turns deny {v.answer['reasons']} into {verdict}")
        else:
            lines.append(f"{head}: allowed although the input meets its precondition")
        lines.append("shrunk counterexample (OPA input):")
        lines.append(dumps(v.case))
    return "\n".join(lines)


def fuzz_bundle(
    opa: str, bundle: Path, invariants: Path, *, cases: int, seed: int
) -> tuple[FuzzReport, float]:
    """Run the fuzzer on ``bundle`` with the invariants module; (report, seconds)."""
    started = time.monotonic()
    try:
        with BatchOPA(opa, bundle, [invariants]) as engine:
            report = run_fuzz(engine, load_schema("opa-input"), cases=cases, seed_value=seed)
    except PDPError as exc:
        raise CLIError(f"fuzz: {exc}", SERVICE_ERROR) from None
    return report, time.monotonic() - started


@click.command("fuzz")
@click.option(
    "--cases",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Generated inputs (each is evaluated with its relaxed variants).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Hypothesis seed.")
@click.option(
    "--bundle",
    "bundle_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Bundle to prove (.tar.gz); default: build one from the policies.",
)
@click.option(
    "--invariants",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Invariants module [POLICIES/{INVARIANTS}].",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@pass_project
def fuzz(
    project: Project,
    cases: int,
    seed: int,
    bundle_path: Path | None,
    invariants: Path | None,
    fmt: str,
) -> None:
    """Generate OPA inputs (Hypothesis, from pdp/schemas/opa-input.schema.json and the
    bundle's inventory), evaluate them with a real OPA on the built bundle, and check the
    properties declared in policies/invariants/invariants.rego: unauthenticated, disabled,
    unapproved and cross-tenant calls are never allowed, a destination type other than the
    inventory's is never allowed, and removing an optional field or relaxing a declared
    one never turns a deny into an allow.

    Exit 13 with a shrunk counterexample per violated property; 0 when all hold.
    """
    opa = project.opa()
    invariants = invariants or project.policies_dir / INVARIANTS
    if not invariants.is_file():
        raise CLIError(f"{invariants}: no invariants module", BAD_INPUT)
    with tempfile.TemporaryDirectory(prefix="pdp-fuzz-bundle-") as tmp:
        if bundle_path is None:
            try:
                bundle_path = build_bundle(opa, project.policies_dir, Path(tmp) / "b.tar.gz").path
            except BundleError as exc:
                raise CLIError(str(exc), DOES_NOT_COMPILE) from None
        elif not bundle_path.is_file():
            raise CLIError(f"{bundle_path}: no such bundle", BAD_INPUT)
        report, seconds = fuzz_bundle(opa, bundle_path, invariants, cases=cases, seed=seed)
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(render(report, seconds))
    if report.violations:
        props = ", ".join(sorted({v.prop for v in report.violations}))
        raise CLIError(f"invariants violated: {props}", INVARIANT_VIOLATED)
