"""Small assertions shared by the HTTP-level tests."""

from __future__ import annotations

import uuid
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def is_uuid(value: Any) -> bool:
    """True if ``value`` is a UUID in its canonical string form."""
    try:
        return bool(str(uuid.UUID(value)) == value)
    except (TypeError, ValueError):
        return False


def metric(text: str, sample: str, **labels: str) -> float:
    """Sum of the samples called ``sample`` whose labels include ``labels`` (0 if none)."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )
