"""Small helpers shared by the HTTP-level tests: one decide(), metric and UUID checks."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

Client = TestClient[Any, Any]


async def decide(client: Client, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST /v1/decisions; the status and the JSON body (every answer is JSON)."""
    resp = await client.post("/v1/decisions", json=request)
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    return resp.status, body


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
