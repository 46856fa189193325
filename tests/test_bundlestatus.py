"""BundleStatus's reading of OPA's bundle metrics (our own logic; OPA's text is given).

The end-to-end path with a real OPA and registry is tests/test_production_mode.py.
"""

from __future__ import annotations

import asyncio
from typing import cast

from pdp.bundlestatus import BundleStatus
from pdp.opa import OPAClient

REFUSAL = "bundle pdp: verification: missing .signatures.json"


class _Metrics:
    """Stands in for OPAClient.metrics_text: returns the text it is given."""

    def __init__(self) -> None:
        self.text = ""

    async def metrics_text(self) -> str:
        return self.text


def _text(
    *,
    revision: str,
    activated_s: float,
    refusals: dict[str, int],
    requested_s: float | None = None,
) -> str:
    lines = [
        "# TYPE last_bundle_request gauge",
        f'last_bundle_request{{name="pdp"}} {(requested_s or activated_s) * 1e9:.0f}',
        "# TYPE last_success_bundle_activation gauge",
        f'last_success_bundle_activation{{active_revision="{revision}",name="pdp"}} '
        f"{activated_s * 1e9:.0f}",
        "# TYPE bundle_failed_load_counter counter",
    ]
    lines += [
        f'bundle_failed_load_counter{{code="bundle_error",message="{m}",name="pdp"}} {n}'
        for m, n in refusals.items()
    ]
    return "\n".join(lines) + "\n"


def _status() -> tuple[BundleStatus, _Metrics]:
    metrics = _Metrics()
    return BundleStatus(cast(OPAClient, metrics), clock=lambda: 1_000.0), metrics


def _poll(status: BundleStatus, metrics: _Metrics, text: str) -> None:
    metrics.text = text
    asyncio.run(status.refresh())
    assert status.error is None


def test_a_refusal_shows_until_a_later_activation_succeeds() -> None:
    status, metrics = _status()
    _poll(status, metrics, _text(revision="v1", activated_s=100, refusals={}))
    assert status.note() is None

    _poll(status, metrics, _text(revision="v1", activated_s=100, refusals={REFUSAL: 1}))
    note = status.note()
    assert note is not None and "last update refused" in note and "v1 active" in note
    assert status.to_json()["pdp"]["last_error"] == REFUSAL

    # the same refusal again (OPA retries): still shown
    _poll(status, metrics, _text(revision="v1", activated_s=100, refusals={REFUSAL: 2}))
    assert status.note() is not None

    # v2 activates: the refusal is past
    _poll(status, metrics, _text(revision="v2", activated_s=200, refusals={REFUSAL: 2}))
    assert status.note() is None
    assert status.to_json()["pdp"]["last_error"] is None
    assert status.to_json()["pdp"]["revision"] == "v2"
    # ...while the failure counts (metrics) keep their history
    assert status.to_json()["pdp"]["failures"]["activation"] == 2

    # a new refusal after that shows again
    _poll(status, metrics, _text(revision="v2", activated_s=200, refusals={REFUSAL: 3}))
    assert status.to_json()["pdp"]["last_error"] == REFUSAL


def test_a_reactivation_of_the_same_revision_clears_the_refusal_too() -> None:
    status, metrics = _status()
    first = _text(revision="v1", activated_s=100, refusals={REFUSAL: 1}, requested_s=120)
    _poll(status, metrics, first)
    assert status.note() is not None  # first read: refused after the activation
    _poll(status, metrics, _text(revision="v1", activated_s=150, refusals={REFUSAL: 1}))
    assert status.note() is None


def test_an_activation_and_a_refusal_in_one_poll_are_ordered_by_opas_request_time() -> None:
    status, metrics = _status()
    _poll(status, metrics, _text(revision="v1", activated_s=100, refusals={}))
    _poll(status, metrics, _text(revision="v1", activated_s=100, refusals={REFUSAL: 1}))
    # refused, then v2 activated by OPA's latest request: the refusal is past
    _poll(status, metrics, _text(revision="v2", activated_s=200, refusals={REFUSAL: 2}))
    assert status.to_json()["pdp"]["last_error"] is None
    # v3 activated, then a later request refused: the refusal shows
    later = _text(revision="v3", activated_s=300, refusals={REFUSAL: 3}, requested_s=310)
    _poll(status, metrics, later)
    assert status.to_json()["pdp"]["last_error"] == REFUSAL
