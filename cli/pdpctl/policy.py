"""`pdpctl policy ...` and `pdpctl bundle ...`: thin, honest wrappers over opa and regal."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click

from pdp import cache_safety
from pdp.bundle import FAST_REVIEW_FILE, BundleError, build_bundle, fast_review, source_roots
from pdp.bundledata import DataSchemaError, policy_data_problems
from pdp.bundlesign import SIGNING_ALGS, BundleSigningError, sign_bundle
from pdp.config import DEFAULT_BUNDLE_KEY_ID
from pdp.schema import load_schema

from .errors import BAD_INPUT, DOES_NOT_COMPILE, LINT_FAILED, NOT_FORMATTED, TESTS_FAILED, CLIError
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
        # opa exits 2 both for "would reformat" (files listed) and for a parse error
        if proc.returncode != 0 and not files:
            _echo_output("", proc.stderr)
            raise CLIError("opa fmt failed (does the policy parse?)", DOES_NOT_COMPILE)
        if files:
            _echo_output("\n".join(files), proc.stderr)
            raise CLIError(f"{len(files)} file(s) need `pdpctl policy fmt`", NOT_FORMATTED)
        click.echo("all Rego files are formatted")
        return
    # `opa fmt --write --list` only lists: find the files first, then rewrite those.
    proc = project.run([opa, "fmt", "--list", *project.roots()])
    files = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode == 0 and files:
        proc = project.run([opa, "fmt", "--write", *files])
    if proc.returncode != 0:
        _echo_output(proc.stdout, proc.stderr)
        raise CLIError("opa fmt failed (does the policy parse?)", DOES_NOT_COMPILE)
    for f in files:
        click.echo(f"formatted {f}")
    click.echo(f"{len(files)} file(s) reformatted")


#: schema.<name> in the type-checking annotation -> the pdp/schemas/<file>.schema.json it
#: may be (several: any of them, e.g. the agent input or a PEP-asserted subject's).
TYPE_SCHEMAS = {"input": ("opa-input", "opa-input-asserted"), "inventory": ("inventory",)}
# Given to `opa check` only (never bundled, so it adds nothing to the annotation chains
# reasons are built from): every module under pdp is type-checked against the schemas.
_TYPES_MODULE = """# METADATA
# description: Added by pdpctl policy check; types input and data.inventory in pdp.**.
# scope: subpackages
# schemas:
#   - input: schema.input
#   - data.inventory: schema.inventory
package pdp
"""


@policy.command()
@pass_project
def check(project: Project) -> None:
    """Compile the policies with `opa check --strict`, type-checked against the OPA input
    schema and the inventory data schema (--schema); validate the data documents against
    their schemas; then check that a policy reading time declares no decision-cache TTL
    (exit 4 for any); last, say whether the fast path's review (pdp/fast/REVIEWED) still
    holds (a stale one is a warning: the fast path is then off, every decision composed)."""
    opa, roots = project.opa(), project.roots()
    with tempfile.TemporaryDirectory(prefix="pdpctl-check-") as tmp:
        schemas = Path(tmp) / "schemas"
        schemas.mkdir()
        for name, files in TYPE_SCHEMAS.items():
            (schemas / f"{name}.json").write_text(json.dumps(_any_of(files)))
        types = Path(tmp) / "types.rego"
        types.write_text(_TYPES_MODULE)
        cmd = [opa, "check", "--strict", "--schema", str(schemas), *roots, str(types)]
        proc = project.run(cmd)
    if proc.returncode != 0:
        _echo_output(proc.stdout, proc.stderr)
        raise CLIError("policies do not compile", DOES_NOT_COMPILE)
    try:
        problems = policy_data_problems(project.policies_dir, source_roots(project.policies_dir))
    except DataSchemaError as exc:  # a schema of the policy directory is not one
        problems = exc.problems
    if problems:
        _echo_output("", "\n".join(problems))
        raise CLIError("data documents do not match their schemas", DOES_NOT_COMPILE)
    click.echo("policies compile (opa check --strict)")
    click.echo("data documents: valid (every one against its JSON Schema)")
    found = cache_safety.problems(_module_asts(project))
    if found:
        click.echo("\n".join(found), err=True)
        raise CLIError("a policy that reads time declares a decision-cache TTL", DOES_NOT_COMPILE)
    click.echo("decision-cache TTLs: safe (no TTL depends on time or other per-request input)")
    _echo_fast_review(project.policies_dir)


def _echo_fast_review(policies_dir: Path) -> None:
    """Say whether the fast path's review holds (a stale one is safe: the bundle then turns
    the fast path off and every decision is composed, only slower)."""
    if not (policies_dir / FAST_REVIEW_FILE).parent.is_dir():
        return
    holds, now, reviewed = fast_review(policies_dir)
    if holds:
        click.echo(f"fast path: reviewed against these modules ({now})")
        return
    click.echo(
        f"warning: fast path OFF: the policy modules ({now}) are not the ones "
        f"{FAST_REVIEW_FILE} was reviewed against ({reviewed or 'none'}); every decision "
        "is composed. Review pdp/fast/fast.rego against the change, then run "
        "`pdpctl policy review-fast`.",
        err=True,
    )


@policy.command("review-fast")
@pass_project
def review_fast(project: Project) -> None:
    """Record that the fast path (pdp/fast/fast.rego) was reviewed against the policy
    modules as they are now: writes their digest to pdp/fast/REVIEWED. Bundles built from
    other modules turn the fast path off (data.pdp_index.fast_reviewed). Run it only after
    checking that `cleared` still keeps every deny rule silent (docs/policy-authoring.md)."""
    file = project.policies_dir / FAST_REVIEW_FILE
    if not file.parent.is_dir():
        raise CLIError(f"{file.parent}: this policy directory has no fast path", BAD_INPUT)
    _, now, _ = fast_review(project.policies_dir)
    file.write_text(now + "\n", encoding="ascii")
    click.echo(f"{FAST_REVIEW_FILE}: {now}")


def _module_asts(project: Project) -> list[tuple[str, dict[str, Any]]]:
    """(path, OPA's JSON AST) of every bundled policy module but tests, from `opa parse`
    (not the invariants: `policy fuzz` loads them beside a bundle, never into one)."""
    opa = project.opa()
    out = []
    for root in project.bundle_roots():
        for path in sorted(Path(root).rglob("*.rego")):
            if path.name.endswith("_test.rego"):
                continue
            proc = project.run([opa, "parse", "--format", "json", str(path)])
            if proc.returncode != 0:
                _echo_output(proc.stdout, proc.stderr)
                raise CLIError(f"opa parse failed on {path}", DOES_NOT_COMPILE)
            out.append((str(path), json.loads(proc.stdout)))
    return out


def _any_of(files: tuple[str, ...]) -> dict[str, Any]:
    """One schema for OPA's type checker: the file's, or anyOf several (ids dropped). The
    schemas' ``$defs`` move to the root, where their ``#/$defs/...`` references point."""
    defs: dict[str, Any] = {}
    bodies = []
    for name in files:
        body = {k: v for k, v in load_schema(name).items() if k not in ("$schema", "$id")}
        for key, value in body.pop("$defs", {}).items():
            if defs.setdefault(key, value) != value:
                raise CLIError(f"schemas {files} define $defs/{key} differently", BAD_INPUT)
        bodies.append(body)
    schema: dict[str, Any] = bodies[0] if len(bodies) == 1 else {"anyOf": bodies}
    return {**schema, "$defs": defs} if defs else schema


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
        files = json.loads(proc.stdout)["files"]
        # Coverage of the policies themselves: OPA's overall figure also counts the tests.
        policy_files = {n: f for n, f in files.items() if not n.endswith("_test.rego")}
        covered = sum(int(f.get("covered_lines", 0)) for f in policy_files.values())
        missed = sum(int(f.get("not_covered_lines", 0)) for f in policy_files.values())
    except (ValueError, KeyError, TypeError, AttributeError):
        _echo_output("", proc.stderr)
        raise CLIError("could not read opa's coverage report", TESTS_FAILED) from None
    coverage = 100.0 * covered / (covered + missed) if covered + missed else 0.0
    click.echo(f"coverage: {coverage:.1f}% (minimum {coverage_min:g}%)")
    if coverage < coverage_min:
        for name, f in sorted(policy_files.items()):
            rows = sorted({(r["start"]["row"], r["end"]["row"]) for r in f.get("not_covered", [])})
            if rows:
                spans = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in rows)
                click.echo(f"  {name}: not covered {spans}")
        raise CLIError(f"coverage {coverage:.1f}% is below {coverage_min:g}%", TESTS_FAILED)


@click.group()
def bundle() -> None:
    """Build, sign, verify, inspect and publish policy bundles."""


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
@click.option(
    "--signing-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Sign the bundle with this PEM private key (OPA's .signatures.json, by opa build).",
)
@click.option(
    "--signing-alg",
    type=click.Choice(SIGNING_ALGS),
    default="ES256",
    show_default=True,
    help="Algorithm of --signing-key.",
)
@click.option(
    "--key-id",
    default=None,
    help="Key id recorded in the signature (keyid claim) [pdp-bundle-signing: the default "
    "of `serve --bundle-key-id`].",
)
@pass_project
def build(
    project: Project,
    policies_dir: Path | None,
    output: Path,
    revision: str | None,
    signing_key: Path | None,
    signing_alg: str,
    key_id: str | None,
) -> None:
    """Build a bundle (tests excluded) with `opa build`; print its path and revision.

    With --signing-key the bundle is signed by `opa build --signing-key` (docs/bundles.md).
    """
    src = policies_dir or project.policies_dir
    if key_id is not None and signing_key is None:
        raise CLIError("--key-id needs --signing-key", BAD_INPUT)
    try:
        built = build_bundle(project.opa(), src, output, revision=revision)
    except DataSchemaError as exc:
        click.echo(str(exc), err=True)
        raise CLIError(
            "bundle build failed: data documents do not match their schemas (nothing written)",
            DOES_NOT_COMPILE,
        ) from None
    except BundleError as exc:
        click.echo(str(exc), err=True)
        if exc.missing_sources:
            raise CLIError(str(exc), BAD_INPUT) from None
        raise CLIError("bundle build failed: policies do not compile", DOES_NOT_COMPILE) from None
    if signing_key is not None:
        # The name `serve --bundle-key-id` gives the verification key by default, so a bundle
        # built and served with the defaults verifies (OPA's own default would be "default").
        key_id = key_id or DEFAULT_BUNDLE_KEY_ID
        try:
            sign_bundle(
                project.opa(),
                built.path,
                built.path,
                signing_key=signing_key,
                alg=signing_alg,
                key_id=key_id,
            )
        except BundleSigningError as exc:
            built.path.unlink(missing_ok=True)  # never leave an unsigned bundle behind
            raise CLIError(str(exc), BAD_INPUT) from None
        kid = f" key {key_id}" if key_id else ""
        click.echo(f"built {built.path} revision {built.revision} signed {signing_alg}{kid}")
        return
    click.echo(f"built {built.path} revision {built.revision}")
