"""Invariants proven on a compiled bundle: `pdpctl policy fuzz`.

Hypothesis generates OPA inputs from ``pdp/schemas/opa-input.schema.json`` and the bundle's
own inventory (:mod:`.strategies`); one real OPA serves the bundle under test beside
``policies/invariants/invariants.rego``, the one file that declares the properties, and
evaluates each generated input together with its relaxed variants in a single batch query
(:mod:`.engine`); :mod:`.properties` builds the variants and checks the answers. A
violation is shrunk by Hypothesis to a small counterexample.
"""

from .engine import BatchOPA
from .properties import FuzzReport, Violation, run_fuzz

__all__ = ["BatchOPA", "FuzzReport", "Violation", "run_fuzz"]
