"""Replay: re-evaluate recorded decisions on a candidate bundle, report what would change.

Each decision record carries the OPA input it was decided on (prompt text aside), with
its time in ``input.now``. Replay starts a throwaway OPA (:class:`~pdp.sidecar.OPASidecar`
on a temporary Unix socket) serving the candidate bundle, evaluates every input through
the one OPA client (:class:`~pdp.opa.OPAClient`), turns each result into the PDP's answer
with the decision path's own rules (:func:`pdp.answer.answer`: policy errors deny,
an unauthenticated agent is never allowed, a disabled agent is denied) and compares it
with the recorded answer: allow -> deny, deny -> allow, reason codes, obligations.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .answer import answer
from .errors import EngineUnavailableError
from .identity import Identity
from .opa import OPAClient
from .sidecar import OPASidecar

#: Kinds of change, in the order reports list them.
CHANGE_KINDS = ("deny_to_allow", "allow_to_deny", "reasons", "obligations")
KIND_TITLES = {
    "deny_to_allow": "deny → allow",
    "allow_to_deny": "allow → deny",
    "reasons": "reasons changed",
    "obligations": "obligations changed",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """An answer reduced to what replay compares."""

    allow: bool
    reasons: tuple[str, ...]
    obligations: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"allow": self.allow, "reasons": list(self.reasons), "obligations": self.obligations}

    def short(self) -> str:
        verdict = "allow" if self.allow else "deny"
        return f"{verdict} [{', '.join(self.reasons)}]" if self.reasons else verdict


def outcome_of(answer: dict[str, Any]) -> Outcome:
    """The comparable part of a decision (recorded or replayed)."""
    codes = sorted(str(r.get("code")) for r in answer.get("reasons", []))
    allow = answer.get("allow") is True
    return Outcome(allow, tuple(codes), dict(answer.get("obligations") or {}) if allow else {})


@dataclass(frozen=True, slots=True)
class Change:
    """One recorded decision the candidate would answer differently."""

    kind: str
    decision_id: str
    time: str | None
    agent: str | None
    tenant: str | None
    action: str
    destination: str | None
    before: Outcome
    after: Outcome

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "decision_id": self.decision_id,
            "time": self.time,
            "agent": self.agent,
            "tenant": self.tenant,
            "action": self.action,
            "destination": self.destination,
            "before": self.before.to_json(),
            "after": self.after.to_json(),
        }


@dataclass
class ReplayReport:
    """What a replay found."""

    source: str
    bundle: str
    candidate_revision: str | None = None
    recorded_revisions: list[str] = field(default_factory=list)
    total: int = 0
    skipped: int = 0
    prompt_text_withheld: int = 0
    changes: list[Change] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    #: The decisions replayed (without errors), in recorded order.
    decision_ids: list[str] = field(default_factory=list)

    @property
    def replayed(self) -> int:
        return self.total - self.skipped - len(self.errors)

    @property
    def changed(self) -> int:
        return len(self.changes)

    @property
    def unchanged(self) -> int:
        return self.replayed - self.changed

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)

    def failed(self, fail_on: str) -> bool:
        """True when the ``--fail-on`` condition holds (allow-gained, any-change, none)."""
        if fail_on == "allow-gained":
            return self.count("deny_to_allow") > 0
        if fail_on == "any-change":
            return self.changed > 0
        return False

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "bundle": self.bundle,
            "candidate_revision": self.candidate_revision,
            "recorded_revisions": self.recorded_revisions,
            "total": self.total,
            "replayed": self.replayed,
            "skipped": self.skipped,
            "unchanged": self.unchanged,
            "changed": self.changed,
            "deny_to_allow": self.count("deny_to_allow"),
            "allow_to_deny": self.count("allow_to_deny"),
            "reasons_changed": self.count("reasons"),
            "obligations_changed": self.count("obligations"),
            "errors": self.errors,
            "prompt_text_withheld": self.prompt_text_withheld,
            "changes": [c.to_json() for c in self.changes],
        }


def select(
    records: Iterable[dict[str, Any]],
    *,
    since: datetime | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The decision records to replay: since a time, then a seeded sample (order kept)."""
    chosen = []
    for rec in records:
        if rec.get("type") != "decision":
            continue
        if since is not None:
            when = rec.get("time")
            if not isinstance(when, str) or datetime.fromisoformat(when) < since:
                continue
        chosen.append(rec)
    if sample is not None and sample < len(chosen):
        keep = sorted(random.Random(seed).sample(range(len(chosen)), sample))
        chosen = [chosen[i] for i in keep]
    return chosen


def identity_of(doc: dict[str, Any]) -> Identity:
    """The verified identity as the recorded input describes it."""
    error = doc.get("error") or {}
    return Identity(
        authenticated=doc.get("authenticated") is True,
        spiffe_id=doc.get("spiffe_id"),
        trust_domain=doc.get("trust_domain"),
        path=tuple(doc.get("path") or ()),
        expires_at=doc.get("expires_at"),
        jti=doc.get("jti"),
        error_code=error.get("code"),
        error_message=error.get("message"),
    )


def _replay_input(rec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The input to evaluate; True when the policy had prompt text replay cannot give it."""
    input_doc: dict[str, Any] = rec["input"]
    prompt = rec.get("prompt") or {}
    if not prompt.get("to_policy"):
        return input_doc, False
    if "text" in prompt:  # PDP_AUDIT_PROMPT=full kept it: give it back to the policy
        return {**input_doc, "prompt": {**input_doc["prompt"], "text": prompt["text"]}}, False
    return input_doc, True


def _change(rec: dict[str, Any], before: Outcome, after: Outcome) -> Change | None:
    if before.allow != after.allow:
        kind = "deny_to_allow" if after.allow else "allow_to_deny"
    elif before.reasons != after.reasons:
        kind = "reasons"
    elif before.obligations != after.obligations:
        kind = "obligations"
    else:
        return None
    action = rec.get("action") or {}
    identity = rec.get("identity") or {}
    return Change(
        kind=kind,
        decision_id=str(rec.get("decision_id")),
        time=rec.get("time"),
        agent=identity.get("spiffe_id"),
        tenant=rec.get("tenant"),
        action=" ".join(str(action[k]) for k in ("type", "name", "operation") if action.get(k)),
        destination=(rec.get("destination") or {}).get("name"),
        before=before,
        after=after,
    )


async def replay(
    records: list[dict[str, Any]],
    bundle: Path,
    *,
    opa_binary: str,
    source: str = "",
    concurrency: int = 16,
    timeout_s: float = 5.0,
    start_timeout_s: float = 30.0,
) -> ReplayReport:
    """Replay decision ``records`` on a throwaway OPA serving ``bundle``."""
    report = ReplayReport(source=source, bundle=str(bundle))
    report.recorded_revisions = sorted(
        {str((r.get("policy") or {}).get("revision")) for r in records if r.get("policy")}
    )
    report.total = len(records)
    todo = []
    for rec in records:
        decision = rec.get("decision") or {}
        if not isinstance(rec.get("input"), dict) or decision.get("status") != 200:
            report.skipped += 1  # nothing was decided (503): nothing to compare
        else:
            todo.append(rec)
    with tempfile.TemporaryDirectory(prefix="pdp-replay-") as tmp:
        sidecar = OPASidecar(
            opa_binary, bundle.absolute(), Path(tmp) / "opa.sock", start_timeout_s=start_timeout_s
        )
        await sidecar.start()
        client = OPAClient(sidecar.url, timeout_s=timeout_s, pool_size=concurrency)
        await client.start()
        gate = asyncio.Semaphore(concurrency)

        async def one(rec: dict[str, Any]) -> None:
            input_doc, withheld = _replay_input(rec)
            report.prompt_text_withheld += withheld
            async with gate:
                try:
                    result = await client.evaluate(input_doc)
                except EngineUnavailableError as exc:
                    report.errors.append(
                        {"decision_id": str(rec.get("decision_id")), "error": exc.message}
                    )
                    return
            if result.revision and report.candidate_revision is None:
                report.candidate_revision = result.revision
            # The decision path's own answer rules; nothing here is recorded or minted.
            replayed = answer(
                str(rec.get("decision_id")),
                {},
                identity_of(input_doc.get("identity") or {}),
                result,
                agent_status=(input_doc.get("agent") or {}).get("status"),
                asserted=(input_doc.get("subject") or {}).get("asserted") is True,
                approval_refusal=(input_doc.get("approval") or {}).get("refusal"),
            )
            change = _change(rec, outcome_of(rec["decision"]), outcome_of(replayed))
            if change is not None:
                report.changes.append(change)

        try:
            await asyncio.gather(*(one(rec) for rec in todo))
        finally:
            await client.close()
            await sidecar.stop()
    failed = {e["decision_id"] for e in report.errors}
    report.decision_ids = [
        str(r.get("decision_id")) for r in todo if str(r.get("decision_id")) not in failed
    ]
    position = {d: i for i, d in enumerate(report.decision_ids)}
    report.changes.sort(key=lambda c: (CHANGE_KINDS.index(c.kind), position.get(c.decision_id, 0)))
    return report
