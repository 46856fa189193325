"""`pdpctl replay`: which recorded decisions would a candidate bundle answer differently?"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import click

from pdp.audit.segment import AuditReadError, iter_records
from pdp.replay import CHANGE_KINDS, KIND_TITLES, Change, ReplayReport, replay, select
from pdp.sidecar import SidecarError
from pdp.textsafe import safe

from .audit import default_audit_dir, parse_since
from .errors import BAD_INPUT, REPLAY_CHANGED, SERVICE_ERROR, CLIError
from .options import report_options
from .project import Project, pass_project

FAIL_ON = ("allow-gained", "any-change", "none")
#: Examples per kind of change in the text and Markdown reports.
EXAMPLES = 5


def load(source: Path, since: str | None, sample: int | None, seed: int) -> list[dict[str, Any]]:
    """Decision records from an audit directory or JSONL file, filtered and sampled."""
    try:
        return select(iter_records(source), since=parse_since(since), sample=sample, seed=seed)
    except AuditReadError as exc:
        raise CLIError(str(exc), BAD_INPUT) from None


def run_replay(
    project: Project, source: Path, bundle: Path, records: list[dict[str, Any]]
) -> ReplayReport:
    """Replay ``records`` on ``bundle`` with a throwaway OPA; CLI errors on failure."""
    if not bundle.is_file():
        raise CLIError(f"{bundle}: no such bundle file", BAD_INPUT)
    # The throwaway OPA's start-up warnings (e.g. running as root) are noise here.
    logging.getLogger("pdp.sidecar").setLevel(logging.ERROR)
    try:
        return asyncio.run(replay(records, bundle, opa_binary=project.opa(), source=str(source)))
    except SidecarError as exc:
        raise CLIError(f"cannot start OPA with {bundle}: {exc}", BAD_INPUT) from None


def _example(c: Change) -> str:
    return safe(
        f"{c.time}  {c.decision_id}  {c.agent or '(unauthenticated)'}  {c.tenant}  "
        f"{c.action} -> {c.destination}: {c.before.short()} → {c.after.short()}"
    )


def render_text(report: ReplayReport, fail_on: str) -> str:
    lines = [
        safe(
            f"replayed {report.replayed} of {report.total} recorded decision(s) from "
            f"{report.source} on {report.bundle} (revision {report.candidate_revision})"
        ),
        f"  unchanged            {report.unchanged}",
    ]
    for kind in CHANGE_KINDS:
        lines.append(f"  {KIND_TITLES[kind]:<20} {report.count(kind)}")
    lines.append(f"  skipped (no answer)  {report.skipped}")
    lines.append(f"  errors               {len(report.errors)}")
    if report.prompt_text_withheld:
        lines.append(
            f"  note: {report.prompt_text_withheld} decision(s) saw prompt text that the "
            "trail does not keep (PDP_AUDIT_PROMPT=full would)"
        )
    for kind in CHANGE_KINDS:
        changes = [c for c in report.changes if c.kind == kind]
        if changes:
            lines.append(f"{KIND_TITLES[kind]} ({len(changes)}):")
            lines.extend(f"  {_example(c)}" for c in changes[:EXAMPLES])
            if len(changes) > EXAMPLES:
                lines.append(f"  ... and {len(changes) - EXAMPLES} more")
    for err in report.errors[:EXAMPLES]:
        lines.append(safe(f"error: {err['decision_id']}: {err['error']}"))
    verdict = "FAIL" if report.failed(fail_on) else "PASS"
    lines.append(f"{verdict} (--fail-on {fail_on})")
    return "\n".join(lines)


def md_cell(text: object) -> str:
    """A Markdown table cell: no line breaks, pipes or HTML, controls escaped."""
    cell = safe(str(text).replace("\n", " "))
    cell = cell.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return cell.replace("|", "\\|")


def render_markdown(report: ReplayReport, fail_on: str, title: str = "Policy replay") -> str:
    verdict = "❌ fails" if report.failed(fail_on) else "✅ passes"
    out = [
        f"### {title}: {verdict} (`--fail-on {fail_on}`)",
        "",
        f"Replayed **{report.replayed}** of {report.total} recorded decisions from "
        f"`{safe(report.source)}` on `{safe(report.bundle)}` "
        f"(revision `{safe(report.candidate_revision)}`).",
        "",
        "| outcome | decisions |",
        "| --- | ---: |",
        f"| unchanged | {report.unchanged} |",
    ]
    out += [f"| {KIND_TITLES[k]} | {report.count(k)} |" for k in CHANGE_KINDS]
    out += [f"| skipped (no answer) | {report.skipped} |", f"| errors | {len(report.errors)} |"]
    for kind in CHANGE_KINDS:
        changes = [c for c in report.changes if c.kind == kind]
        if not changes:
            continue
        out += [
            "",
            f"<details><summary>{KIND_TITLES[kind]}: {len(changes)}</summary>",
            "",
            "| time | decision | agent | tenant | action | destination | before | after |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        out += [
            "| "
            + " | ".join(
                md_cell(v)
                for v in (
                    c.time,
                    f"`{safe(c.decision_id)}`",
                    c.agent or "(unauthenticated)",
                    c.tenant,
                    c.action,
                    c.destination,
                    c.before.short(),
                    c.after.short(),
                )
            )
            + " |"
            for c in changes[: EXAMPLES * 2]
        ]
        if len(changes) > EXAMPLES * 2:
            out.append(f"\n… and {len(changes) - EXAMPLES * 2} more")
        out += ["", "</details>"]
    return "\n".join(out)


def render_junit(report: ReplayReport, fail_on: str) -> str:
    """One testcase per replayed decision; a refused change is a failure, OPA errors errors."""
    refused = {
        "allow-gained": {"deny_to_allow"},
        "any-change": set(CHANGE_KINDS),
        "none": set(),
    }[fail_on]
    by_id = {c.decision_id: c for c in report.changes}
    failures = sum(1 for c in report.changes if c.kind in refused)
    cases = []
    for decision_id in report.decision_ids:
        change = by_id.get(decision_id)
        name = quoteattr(decision_id)
        if change is None:
            cases.append(f'    <testcase classname="replay" name={name}/>')
            continue
        message = quoteattr(f"{KIND_TITLES[change.kind]}: {change.before.short()} → "
                            f"{change.after.short()}")  # fmt: skip
        body = escape(_example(change))
        if change.kind in refused:
            inner = f"<failure type={quoteattr(change.kind)} message={message}>{body}</failure>"
        else:
            inner = f"<system-out>{body}</system-out>"
        cases.append(f'    <testcase classname="replay" name={name}>{inner}</testcase>')
    for err in report.errors:
        name = quoteattr(err["decision_id"])
        cases.append(
            f'    <testcase classname="replay" name={name}><error message='
            f"{quoteattr(err['error'])}/></testcase>"
        )
    tests = len(report.decision_ids) + len(report.errors)
    return "\n".join(
        [
            '<?xml version="1.0" encoding="UTF-8"?>',
            "<testsuites>",
            f'  <testsuite name="pdpctl replay" tests="{tests}" failures="{failures}" '
            f'errors="{len(report.errors)}" skipped="0">',
            *cases,
            "  </testsuite>",
            "</testsuites>",
        ]
    )


def render(report: ReplayReport, fmt: str, fail_on: str) -> str:
    if fmt == "json":
        doc = report.to_json()
        doc.update(fail_on=fail_on, failed=report.failed(fail_on))
        return json.dumps(doc, indent=2)
    if fmt == "markdown":
        return render_markdown(report, fail_on)
    if fmt == "junit":
        return render_junit(report, fail_on)
    return render_text(report, fail_on)


@click.command("replay")
@click.option(
    "--audit",
    "source",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Audit directory or JSONL file of records [the default audit directory].",
)
@click.option(
    "--bundle",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Candidate bundle (.tar.gz, e.g. from `pdpctl bundle build`).",
)
@click.option("--sample", type=click.IntRange(1), help="Replay a random sample of N decisions.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --sample.")
@report_options(
    FAIL_ON,
    "Exit 11 when a decision gains access (allow-gained) or changes at all (any-change).",
)
@pass_project
def replay_command(
    project: Project,
    source: Path | None,
    bundle: Path,
    since: str | None,
    sample: int | None,
    seed: int,
    fmt: str,
    fail_on: str,
) -> None:
    """Re-evaluate recorded decisions on a candidate bundle with a real OPA; report changes.

    Each recorded OPA input is evaluated as it was recorded (its time is input.now) by a
    throwaway OPA serving --bundle. Exit 11 on the --fail-on condition, 8 when OPA failed
    to answer for some decisions.
    """
    src = source or default_audit_dir()
    records = load(src, since, sample, seed)
    report = run_replay(project, src, bundle, records)
    click.echo(render(report, fmt, fail_on))
    raise_for_report(report, fail_on)


def raise_for_report(report: ReplayReport, fail_on: str) -> None:
    """Fail (one line, exit code) when OPA did not answer or ``fail_on`` holds."""
    if report.errors:
        raise CLIError(f"OPA did not answer for {len(report.errors)} decision(s)", SERVICE_ERROR)
    if report.failed(fail_on):
        raise CLIError(
            f"{report.count('deny_to_allow')} decision(s) gain access, {report.changed} change(s) "
            f"in all (--fail-on {fail_on})",
            REPLAY_CHANGED,
        )
