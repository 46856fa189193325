"""The properties and the run: relaxed variants, batch answers, violations, the report.

Every evaluated input (generated or a variant) is checked against each ``never_allow``
precondition ``policies/invariants/invariants.rego`` reports for it; every variant of a
denied input is checked for monotonicity. A violation raises :class:`Violation` (a
subclass per property, so Hypothesis keeps one shrunk counterexample for each).
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from jsonschema import Draft202012Validator

from .engine import BatchOPA
from .strategies import opa_inputs

#: Name of the monotonicity property in reports.
MONOTONIC = "monotonic"

_MISSING = object()


class Violation(AssertionError):
    """A property does not hold for ``case`` (and, for monotonicity, its ``variant``)."""

    prop = "property"

    def __init__(
        self,
        case: dict[str, Any],
        answer: dict[str, Any],
        *,
        variant: dict[str, Any] | None = None,
        change: str | None = None,
        variant_answer: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{self.prop} violated" + (f" by {change}" if change else ""))
        self.case = case
        self.answer = answer
        self.variant = variant
        self.change = change
        self.variant_answer = variant_answer

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"property": self.prop, "input": self.case, "decision": self.answer}
        if self.change is not None:
            out.update(change=self.change, variant_decision=self.variant_answer)
        return out


_VIOLATIONS: dict[str, type[Violation]] = {}


def violation_type(prop: str) -> type[Violation]:
    """The Violation subclass of one property (one shrunk counterexample per property)."""
    if prop not in _VIOLATIONS:
        name = "".join(p.title() for p in prop.split("_")) + "Violation"
        _VIOLATIONS[prop] = type(name, (Violation,), {"prop": prop})
    return _VIOLATIONS[prop]


def optional_paths(schema: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of every property the schema does not require, at any depth of its objects."""
    out: list[tuple[str, ...]] = []
    required = set(schema.get("required", ()))
    for name, sub in schema.get("properties", {}).items():
        path = (*prefix, name)
        if name not in required:
            out.append(path)
        if isinstance(sub, dict) and "properties" in sub:
            out += optional_paths(sub, path)
    return out


def _get(doc: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return _MISSING
        doc = doc[key]
    return doc


def _with(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is _MISSING:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def variants(
    case: dict[str, Any],
    optional: Sequence[tuple[str, ...]],
    relaxations: dict[str, list[Any]],
    principal_objects: frozenset[tuple[str, ...]] | set[tuple[str, ...]] = frozenset(),
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(change, variant) for each relaxation of ``case`` the monotonicity property covers:
    each optional field removed (unless that empties one of ``principal_objects``), each
    field of ``relaxations`` replaced by each less restrictive value."""
    for path in optional:
        if _get(case, path) is _MISSING:
            continue
        variant = _with(case, path, _MISSING)
        if path[:-1] in principal_objects and _get(variant, path[:-1]) == {}:
            continue
        yield f"removing {'.'.join(path)}", variant
    for key, order in relaxations.items():
        path = tuple(key.split("/"))
        value = _get(case, path)
        if value is _MISSING or value not in order:
            continue
        for weaker in order[order.index(value) + 1 :]:
            yield f"{'.'.join(path)}: {value!r} -> {weaker!r}", _with(case, path, weaker)


@dataclass
class FuzzReport:
    """What a run checked and found."""

    cases: int = 0
    evaluations: int = 0
    allowed: int = 0
    denied: int = 0
    #: How often each never_allow precondition held (the property was exercised).
    preconditions: Counter[str] = field(default_factory=Counter)
    #: Relaxed variants of denied inputs checked for monotonicity.
    monotonic_checks: int = 0
    violations: list[Violation] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "evaluations": self.evaluations,
            "allowed": self.allowed,
            "denied": self.denied,
            "preconditions": dict(sorted(self.preconditions.items())),
            "monotonic_checks": self.monotonic_checks,
            "violations": [v.to_json() for v in self.violations],
        }


def check(
    opa: BatchOPA,
    case: dict[str, Any],
    relaxed: list[tuple[str, dict[str, Any]]],
    report: FuzzReport,
) -> None:
    """Evaluate ``case`` and its variants in one batch; raise the first Violation."""
    answers = opa.batch([case, *(v for _, v in relaxed)])
    report.cases += 1
    report.evaluations += len(answers)
    for doc, answer in zip([case, *(v for _, v in relaxed)], answers, strict=True):
        if answer["allow"] is True:
            report.allowed += 1
        else:
            report.denied += 1
        for prop in answer["never_allow"]:
            report.preconditions[prop] += 1
            if answer["allow"] is True:
                raise violation_type(prop)(doc, answer)
    base = answers[0]
    if base["allow"] is True:
        return
    for (change, variant), answer in zip(relaxed, answers[1:], strict=True):
        report.monotonic_checks += 1
        if answer["allow"] is True:
            raise violation_type(MONOTONIC)(
                case, base, variant=variant, change=change, variant_answer=answer
            )


def run_fuzz(opa: BatchOPA, schema: dict[str, Any], *, cases: int, seed_value: int) -> FuzzReport:
    """Generate ``cases`` inputs with Hypothesis (seeded), check every property, shrink
    each violated property to one counterexample."""
    inventory = opa.data("inventory") or {}
    relaxations = opa.data("invariants/relaxations") or {}
    principal = {tuple(p.split("/")) for p in opa.data("invariants/principal_objects") or []}
    optional = optional_paths(schema)
    validator = Draft202012Validator(schema)
    report = FuzzReport()
    shrinking = FuzzReport()  # counts while Hypothesis shrinks are not the run's

    @seed(seed_value)
    @settings(
        max_examples=cases,
        database=None,
        deadline=None,
        derandomize=False,
        report_multiple_bugs=True,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.generate, Phase.shrink),
        print_blob=False,
    )
    @given(opa_inputs(schema, inventory))
    def prove(case: dict[str, Any]) -> None:
        errors = sorted(validator.iter_errors(case), key=str)
        if errors:  # the generator drifted from the schema: a bug here, not in the policy
            raise ValueError(f"generated input does not match the schema: {errors[0].message}")
        relaxed = list(variants(case, optional, relaxations, principal))
        target = report if report.cases < cases else shrinking
        check(opa, case, relaxed, target)

    try:
        prove()
    except Violation as exc:
        report.violations.append(exc)
    except BaseExceptionGroup as group:
        _, rest = group.split(Violation)
        if rest is not None:
            raise rest from None
        report.violations += [e for e in _leaves(group) if isinstance(e, Violation)]
    return report


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def dumps(doc: Any) -> str:
    """A counterexample as readable JSON (non-ASCII characters escaped, so they show)."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True)
