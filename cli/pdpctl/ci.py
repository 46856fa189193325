"""`pdpctl ci`: the whole policy gate in one command, with a Markdown summary for a PR."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

from pdp.audit.verify import verify as verify_trail
from pdp.replay import ReplayReport
from pdp.textsafe import safe

from .errors import AUDIT_INVALID, BAD_INPUT, OK, CLIError
from .fuzz import fuzz
from .policy import build, check, fmt, lint, test
from .project import Project, pass_project
from .replay import (
    FAIL_ON,
    load,
    md_cell,
    raise_for_report,
    render_markdown,
    render_text,
    run_replay,
)

DEFAULT_CORPUS = Path("tests/corpus/audit")


@dataclass
class Step:
    """One gate step and how it went."""

    name: str
    code: int = OK
    detail: str = ""
    output: str = ""
    skipped: bool = False
    replay: ReplayReport | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        return self.code == OK and not self.skipped


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _run(step: Step, body: Callable[[], str | None]) -> Step:
    """Run ``body`` with its output captured (and echoed); record its exit code."""
    click.echo(f"== {step.name}")
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            detail = body()
    except CLIError as exc:
        step.code = exc.exit_code
        step.detail = exc.format_message()
    else:
        step.detail = detail or _last_line(buf.getvalue())
    step.output = buf.getvalue()
    if step.output.strip():
        click.echo(step.output.rstrip())
    click.echo(f"-- {step.name}: {'ok' if step.code == OK else f'FAILED (exit {step.code})'}")
    if step.code != OK:
        click.echo(f"   {step.detail}")
    return step


def summary(steps: list[Step], fail_on: str) -> str:
    """The Markdown summary: a table of steps, then each replay's report."""
    failed = [s for s in steps if s.code != OK]
    code = failed[0].code if failed else OK
    head = "✅ passed" if not failed else f"❌ failed (exit {code}: {failed[0].name})"
    out = [
        f"## agent-pdp policy gate: {head}",
        "",
        "| step | result | detail |",
        "| --- | --- | --- |",
    ]
    for s in steps:
        mark = "⏭️ skipped" if s.skipped else ("✅" if s.code == OK else f"❌ exit {s.code}")
        detail = md_cell(s.detail)
        out.append(f"| {s.name} | {mark} | {detail} |")
    for s in steps:
        if s.code != OK and s.output.strip() and s.replay is None:
            out += [
                "",
                f"<details><summary>{s.name} output</summary>",
                "",
                "```",
                *(
                    safe(line).replace("```", "`\u200b``")
                    for line in s.output.strip().splitlines()[-40:]
                ),
                "```",
                "",
                "</details>",
            ]
    for s in steps:
        if s.replay is not None:
            out += ["", render_markdown(s.replay, fail_on, title=s.name)]
    return "\n".join(out) + "\n"


@click.command("ci")
@click.option(
    "--audit",
    "audits",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Also verify this audit directory and replay it on the new bundle (repeatable).",
)
@click.option(
    "--corpus",
    type=click.Path(path_type=Path),
    default=DEFAULT_CORPUS,
    show_default=True,
    help="Committed corpus of recorded decisions (audit dir or JSONL) to replay.",
)
@click.option("--coverage-min", type=click.FloatRange(0, 100), default=90, show_default=True)
@click.option(
    "--fail-on",
    type=click.Choice(FAIL_ON),
    default="allow-gained",
    show_default=True,
    help="Which replay changes fail the gate.",
)
@click.option(
    "--bundle-output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("bundles/ci.tar.gz"),
    show_default=True,
)
@click.option(
    "--summary",
    "summary_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append the Markdown summary to this file (e.g. $GITHUB_STEP_SUMMARY).",
)
@click.option(
    "--fuzz-cases",
    type=click.IntRange(0),
    default=300,
    show_default=True,
    help="Inputs `policy fuzz` generates against the new bundle (0 skips the step).",
)
@pass_project
@click.pass_context
def ci(
    ctx: click.Context,
    project: Project,
    audits: tuple[Path, ...],
    corpus: Path,
    coverage_min: float,
    fail_on: str,
    bundle_output: Path,
    summary_file: Path | None,
    fuzz_cases: int,
) -> None:
    """Run the whole policy gate: fmt, check --strict, Regal, tests with coverage, bundle
    build, invariants proven on the new bundle (`policy fuzz`, bounded by --fuzz-cases),
    replay of the recorded corpus (and of --audit trails) on the new bundle.

    Every step runs (replays need the bundle); the exit code is the first failing step's:
    7 not formatted, 4 does not compile, 6 lint, 5 tests or coverage, 10 an audit trail
    is not intact, 11 replay found refused changes, 13 an invariant is violated (a shrunk
    counterexample is printed), 8 OPA failed during replay or fuzzing, 9 bad
    input (e.g. no corpus), 3 a tool is missing. The Markdown summary goes to stdout last.
    """
    steps = [
        _run(Step("fmt"), lambda: ctx.invoke(fmt, check=True)),
        _run(Step("check"), lambda: ctx.invoke(check)),
        _run(Step("lint"), lambda: ctx.invoke(lint)),
        _run(
            Step("test"),
            lambda: ctx.invoke(test, coverage_min=coverage_min, verbose=False),
        ),
        _run(
            Step("bundle"),
            lambda: ctx.invoke(build, policies_dir=None, output=bundle_output, revision=None),
        ),
    ]
    built = steps[-1].passed
    fuzz_step = Step("fuzz")
    if not built:
        fuzz_step.skipped, fuzz_step.detail = True, "no bundle (the bundle step failed)"
    elif fuzz_cases == 0:
        fuzz_step.skipped, fuzz_step.detail = True, "--fuzz-cases 0"
    else:
        fuzz_step = _run(
            fuzz_step,
            lambda: ctx.invoke(
                fuzz,
                cases=fuzz_cases,
                seed=0,
                bundle_path=bundle_output,
                invariants=None,
                fmt="text",
            ),
        )
    steps.append(fuzz_step)

    def replay_step(name: str, source: Path) -> Step:
        step = Step(name)
        if not built:
            step.skipped, step.detail = True, "no bundle (the bundle step failed)"
            return step

        def body() -> str:
            if not source.exists():
                raise CLIError(f"{source}: no such corpus or audit directory", BAD_INPUT)
            report = run_replay(project, source, bundle_output, load(source, None, None, 0))
            step.replay = report
            click.echo(render_text(report, fail_on))
            raise_for_report(report, fail_on)
            return f"{report.changed} changed of {report.replayed} replayed"

        return _run(step, body)

    steps.append(replay_step("replay corpus", corpus))
    for trail in audits:

        def verify_body(trail: Path = trail) -> str:
            if not trail.is_dir():
                raise CLIError(f"{trail}: no such audit directory", BAD_INPUT)
            result = verify_trail(trail)
            if result.problem is not None:
                raise CLIError(f"not intact: {result.problem}", AUDIT_INVALID)
            return f"intact: {result.records} records, seq {result.first_seq}..{result.last_seq}"

        steps.append(_run(Step(f"verify {trail}"), verify_body))
        steps.append(replay_step(f"replay {trail}", trail))

    text = summary(steps, fail_on)
    click.echo("")
    click.echo(text)
    if summary_file is not None:
        with summary_file.open("a", encoding="utf-8") as f:
            f.write(text)
    elif os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as f:
            f.write(text)
    failed = [s for s in steps if s.code != OK]
    if failed:
        raise CLIError(f"policy gate failed at {failed[0].name}", failed[0].code)
