"""What the sidecar OPA's bundle plugin is doing, read from OPA's own metrics.

With ``status.prometheus: true`` (opa-config.yaml) OPA's ``/metrics`` carries, per bundle,
``last_success_bundle_activation{active_revision}`` (ns), ``last_success_bundle_request``
(ns: the registry last confirmed or served the bundle), ``bundle_failed_load_counter{code,
message}`` (every download or activation OPA refused: unreachable registry, unsigned,
tampered, unknown key, digest mismatch). :class:`BundleStatus` polls it every
``interval_s`` and

- logs one line when a revision is activated and when a new refusal appears
  (``bundle pdp refused: …``);
- exports ``pdp_policy_bundle_info{bundle,revision}``,
  ``pdp_policy_bundle_last_activation_timestamp_seconds{bundle}``,
  ``pdp_policy_bundle_age_seconds{bundle}`` and
  ``pdp_policy_bundle_failures_total{bundle,kind}`` (kind: download | activation);
- tells ``/readyz`` the active revision, the last refusal (until a later activation
  succeeds: then it is cleared), and whether the bundle is older than ``max_age_s``.

*Age* is the time since the registry last confirmed the active bundle (OPA's last
successful request); after a restart with the registry down, since the persisted bundle
was written (its file's mtime); a bundle no registry has confirmed for ``max_age_s``
makes the PDP not ready.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .errors import EngineUnavailableError
from .opa import OPAClient
from .periodic import Periodic

log = logging.getLogger("pdp.bundles")

#: Words in OPA's refusal messages that mean the bundle never arrived (vs. arrived but was
#: refused: signature, digest, parse, activation).
_DOWNLOAD_WORDS = ("failed to pull", "connection refused", "no such host", "timeout", "dial tcp")


@dataclass
class BundleState:
    """One bundle's state as last read from OPA."""

    name: str
    revision: str | None = None
    #: Unix seconds of the last activation, and of the last confirmation by the registry.
    activated_at: float | None = None
    confirmed_at: float | None = None
    #: Unix seconds of OPA's latest bundle request, successful or not.
    requested_at: float | None = None
    #: (kind, message) -> OPA's count of refusals with that message.
    failures: dict[tuple[str, str], float] = field(default_factory=dict)
    last_error: str | None = None
    last_error_at: float | None = None

    def failures_by_kind(self) -> dict[str, float]:
        out = {"download": 0.0, "activation": 0.0}
        for (kind, _), count in self.failures.items():
            out[kind] += count
        return out


def _kind(message: str) -> str:
    lowered = message.lower()
    return "download" if any(w in lowered for w in _DOWNLOAD_WORDS) else "activation"


def _seconds(ns: float) -> float | None:
    """OPA's ns timestamps; its zero time (never) comes out negative."""
    return ns / 1e9 if ns > 0 else None


class BundleStatus(Collector):
    """Polls the sidecar OPA's bundle metrics (see the module docstring)."""

    def __init__(
        self,
        opa: OPAClient,
        *,
        persistence_dir: Path | None = None,
        max_age_s: float = 0.0,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.opa = opa
        self.persistence_dir = persistence_dir
        self.max_age_s = max_age_s
        self.interval_s = interval_s
        self.clock = clock
        self.bundles: dict[str, BundleState] = {}
        #: Why OPA's metrics could not be read (None once they were).
        self.error: str | None = "not read yet"
        self._poller = Periodic(self.refresh, interval_s, name="bundle-status", log=log)

    # -- polling --------------------------------------------------------------------------
    async def start(self) -> None:
        await self.refresh()
        self._poller.start()

    async def close(self) -> None:
        await self._poller.close()

    async def refresh(self) -> None:
        """Read OPA's metrics once; never raises (a failure is kept in ``error``)."""
        try:
            text = await self.opa.metrics_text()
        except EngineUnavailableError as exc:
            self.error = exc.message
            return
        try:
            self._update(text)
        except ValueError as exc:  # not Prometheus text: say so, keep the last state
            self.error = f"OPA's /metrics could not be read: {exc}"
            return
        self.error = None

    def _state(self, name: str) -> BundleState:
        state = self.bundles.get(name)
        if state is None:
            state = self.bundles[name] = BundleState(name)
        return state

    def _update(self, text: str) -> None:
        activated_before = {n: st.activated_at for n, st in self.bundles.items()}
        refused: set[str] = set()
        self._read(text, refused)
        for name, state in self.bundles.items():
            newly_activated = state.activated_at is not None and state.activated_at != (
                activated_before.get(name)
            )
            # When both show up in one poll, OPA's own times order them: the activation
            # came from OPA's latest request only if it is not older than that request.
            activated_last = (
                state.activated_at is not None
                and state.requested_at is not None
                and state.activated_at >= state.requested_at
            )
            newly_refused = name in refused and not activated_last
            # A later activation succeeded: the refusal is past.
            if newly_activated and not newly_refused and state.last_error is not None:
                log.warning(
                    "bundle %s: revision %s active; the earlier refusal is cleared",
                    state.name,
                    state.revision,
                )
                state.last_error = state.last_error_at = None

    def _read(self, text: str, refused: set[str]) -> None:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name = sample.labels.get("name")
                if name is None:
                    continue
                if sample.name == "last_success_bundle_activation":
                    self._activated(self._state(name), sample.labels, sample.value)
                elif sample.name == "last_success_bundle_request":
                    self._state(name).confirmed_at = _seconds(sample.value)
                elif sample.name == "last_bundle_request":
                    self._state(name).requested_at = _seconds(sample.value)
                elif family.name == "bundle_failed_load_counter":
                    if self._failed(self._state(name), sample.labels, sample.value):
                        refused.add(name)

    def _activated(self, state: BundleState, labels: dict[str, str], value: float) -> None:
        revision = labels.get("active_revision")
        activated = _seconds(value)
        if revision != state.revision and activated is not None:
            log.warning(
                "bundle %s: revision %s active (was %s)", state.name, revision, state.revision
            )
        state.revision, state.activated_at = revision, activated

    def _failed(self, state: BundleState, labels: dict[str, str], count: float) -> bool:
        """Record OPA's refusal count for one message; True when it grew (a new refusal)."""
        message = labels.get("message") or labels.get("code") or "unknown error"
        key = (_kind(message), message)
        if count > state.failures.get(key, 0.0):
            if state.last_error != message:
                log.error(
                    "bundle %s refused (%s): %s; revision %s stays active",
                    state.name,
                    key[0],
                    message[:500],
                    state.revision,
                )
            state.last_error, state.last_error_at = message, self.clock()
            state.failures[key] = count
            return True
        state.failures[key] = count
        return False

    # -- reading --------------------------------------------------------------------------
    def age_s(self, state: BundleState) -> float | None:
        """Seconds since the registry last confirmed the active bundle (see module doc)."""
        confirmed = state.confirmed_at
        if confirmed is None and self.persistence_dir is not None:
            persisted = self.persistence_dir / "bundles" / state.name / "bundle.tar.gz"
            with contextlib.suppress(OSError):
                confirmed = persisted.stat().st_mtime
        if confirmed is None:
            confirmed = state.activated_at
        return None if confirmed is None else max(0.0, self.clock() - confirmed)

    def problem(self) -> str | None:
        """Why the PDP must not be ready, as far as bundles go (None: no objection)."""
        if self.error is not None:
            return f"bundle status unknown: {self.error}"
        if self.max_age_s <= 0:
            return None
        for state in self.bundles.values():
            age = self.age_s(state)
            if state.revision is not None and age is not None and age > self.max_age_s:
                return (
                    f"bundle {state.name} revision {state.revision} is {age:.0f} s old "
                    f"(last confirmed by the registry), more than --max-bundle-age "
                    f"{self.max_age_s:g} s"
                )
        return None

    def note(self) -> str | None:
        """The latest refusal, for /readyz detail while the PDP stays ready."""
        errors = [s for s in self.bundles.values() if s.last_error is not None]
        if not errors:
            return None
        s = max(errors, key=lambda e: e.last_error_at or 0.0)
        return (
            f"bundle {s.name}: last update refused ({s.last_error}); revision {s.revision} active"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            s.name: {
                "revision": s.revision,
                "activated_at": s.activated_at,
                "age_seconds": None if (age := self.age_s(s)) is None else round(age, 3),
                "last_error": s.last_error,
                "failures": s.failures_by_kind(),
            }
            for s in self.bundles.values()
        }

    # -- Prometheus -----------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "pdp_policy_bundle_info",
            "The bundle revision OPA has active (value 1).",
            labels=["bundle", "revision"],
        )
        activated = GaugeMetricFamily(
            "pdp_policy_bundle_last_activation_timestamp_seconds",
            "When OPA last activated a bundle (unix seconds).",
            labels=["bundle"],
        )
        age = GaugeMetricFamily(
            "pdp_policy_bundle_age_seconds",
            "Seconds since the registry last confirmed the active bundle.",
            labels=["bundle"],
        )
        failures = CounterMetricFamily(
            "pdp_policy_bundle_failures",
            "Bundle downloads and activations OPA refused, by kind (download, activation).",
            labels=["bundle", "kind"],
        )
        for s in self.bundles.values():
            if s.revision is not None:
                info.add_metric([s.name, s.revision], 1)
            if s.activated_at is not None:
                activated.add_metric([s.name], s.activated_at)
            a = self.age_s(s)
            if a is not None:
                age.add_metric([s.name], a)
            for kind, count in s.failures_by_kind().items():
                failures.add_metric([s.name, kind], count)
        yield from (info, activated, age, failures)
