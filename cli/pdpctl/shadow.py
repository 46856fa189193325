"""`pdpctl shadow report`: what the shadow bundle would have answered differently, in the
same shape as `pdpctl replay` (docs/bundles.md#shadow-evaluation)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import orjson

from pdp.replay import Change, Outcome, ReplayReport
from pdp.shadow import SHADOW_FILE

from .audit import parse_since
from .errors import BAD_INPUT, CLIError
from .options import path_option, report_options
from .replay import FAIL_ON, raise_for_report, render

__all__ = ["shadow"]


def default_shadow_dir() -> Path:
    """Beside the default audit directory: PDP_AUDIT_DIR/../shadow, else STATE_DIR/shadow."""
    if os.environ.get("PDP_AUDIT_DIR"):
        return Path(os.environ["PDP_AUDIT_DIR"]).absolute().parent / "shadow"
    return Path(os.environ.get("PDP_STATE_DIR") or ".pdp-state") / "shadow"


def _outcome(doc: dict[str, Any]) -> Outcome:
    return Outcome(
        doc.get("allow") is True,
        tuple(str(r) for r in doc.get("reasons", [])),
        dict(doc.get("obligations") or {}),
    )


def read_report(path: Path, since: datetime | None) -> ReplayReport:
    """The shadow log at ``path`` as a replay report (lines since ``since``)."""
    if not path.is_file():
        raise CLIError(
            f"{path}: no shadow log (was the service run with --shadow-bundle?)", BAD_INPUT
        )
    report = ReplayReport(source=str(path), bundle="shadow bundle")
    revisions: set[str] = set()
    shadow_revisions: list[str] = []
    dropped: dict[str, int] = {}
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            if number == len(path.read_bytes().splitlines()):
                break  # a torn last line: being written
            raise CLIError(f"{path}:{number}: not JSON", BAD_INPUT) from None
        when = line.get("time")
        if since is not None and (
            not isinstance(when, str) or datetime.fromisoformat(when) < since
        ):
            continue
        if "tally" in line:
            tally = line["tally"]
            dropped[str(tally.get("run"))] = int(tally.get("dropped", 0))
            continue
        report.total += 1
        decision_id = str(line.get("decision_id"))
        if "error" in line:
            report.errors.append({"decision_id": decision_id, "error": str(line["error"])})
            continue
        report.decision_ids.append(decision_id)
        revisions.add(str(line.get("live_revision")))
        rev = line.get("shadow_revision")
        if rev and rev not in shadow_revisions:
            shadow_revisions.append(str(rev))
        if line.get("kind"):
            report.changes.append(
                Change(
                    kind=str(line["kind"]),
                    decision_id=decision_id,
                    time=when,
                    agent=line.get("agent"),
                    tenant=line.get("tenant"),
                    action=str(line.get("action") or ""),
                    destination=line.get("destination"),
                    before=_outcome(line.get("live") or {}),
                    after=_outcome(line.get("shadow") or {}),
                )
            )
    report.recorded_revisions = sorted(revisions)
    report.candidate_revision = ",".join(shadow_revisions) or None
    report.skipped = sum(dropped.values())  # dropped: never evaluated
    report.total += report.skipped
    return report


@click.group()
def shadow() -> None:
    """Shadow evaluation of a candidate bundle (`pdpctl serve --shadow-bundle`)."""


@shadow.command("report")
@path_option(
    "--dir",
    "directory",
    "Shadow log directory [beside the audit trail: PDP_AUDIT_DIR/../shadow, else "
    "STATE_DIR/shadow].",
    file_okay=False,
)
@report_options(
    FAIL_ON, "Exit 11 when the shadow bundle gains access (allow-gained) or changes anything."
)
def report_command(directory: Path | None, since: str | None, fmt: str, fail_on: str) -> None:
    """Summarise the shadow log: live vs shadow answers (deny → allow, allow → deny, reasons,
    obligations); `skipped` counts evaluations dropped because the queue was full."""
    path = (directory or default_shadow_dir()) / SHADOW_FILE
    report = read_report(path, parse_since(since))
    click.echo(render(report, fmt, fail_on))
    raise_for_report(report, fail_on)
