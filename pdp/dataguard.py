"""No decision from a bundle whose data does not match its schemas.

Every bundle build validates the data documents (:mod:`pdp.bundledata`), but OPA activates
whatever bundle its configuration points at: one built by another tool, pulled from a
registry or read from a directory. OPA has no hook to refuse a bundle for its data, and
once OPA has activated a bundle the PDP cannot put the previous one back. So the PDP
**fails closed** on it instead:

- :meth:`DataGuard.check` reads, in one OPA query (one snapshot), the active bundles'
  manifests and the data documents whose schemas ship with the PDP
  (:data:`pdp.bundledata.BUILTIN`), validates them, and remembers the verdict per bundle
  revision. It runs at start, every ``interval_s``, and at once when a decision comes back
  from a revision it has not checked.
- :meth:`DataGuard.vet` turns a decision evaluated under a revision whose data is off-schema
  into a ``policy.data_invalid`` policy error (a deny, recorded in the decision's audit
  record with the problem); under a revision it could not check, ``policy.data_unverified``.
- :meth:`DataGuard.problem` makes ``/readyz`` answer 503 while such a bundle is active, and
  the refusal is logged once per revision and exported as
  ``pdp_policy_bundle_data_valid{revision}`` (0: refused).

A later activation of a bundle whose data matches lifts it: decisions under that revision
are answered again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .bundledata import BUILTIN, document_problems
from .errors import EngineUnavailableError
from .opa import OPAClient, OPAResult, provenance_revision
from .periodic import Periodic

log = logging.getLogger("pdp.bundles")

#: What is active: the bundles' status (manifests, etags), cheap to read every second.
STATUS_QUERY: Final = "bundles := [b | b := data.system.bundles]"
#: One query, one snapshot: the bundles' status and the documents with a shipped schema
#: (read only when the status changed).
QUERY: Final = (
    STATUS_QUERY
    + "; documents := {name: value | some name in "
    + orjson.dumps(sorted(BUILTIN)).decode()
    + "; value := data[name]}"
)
#: Most characters of the problems kept in a decision's reason and the log.
MAX_PROBLEM_CHARS: Final = 2000
#: Revisions whose verdict is kept (the oldest forgotten first: checked again if seen).
MAX_REVISIONS: Final = 64
#: The deadline of one check (not the decision deadline: the documents can be large).
CHECK_TIMEOUT_S: Final = 5.0


class DataGuard(Collector):
    """Checks the data of each activated bundle against its schemas (module docstring)."""

    def __init__(
        self, opa: OPAClient, *, interval_s: float = 1.0, policies_dir: Path | None = None
    ) -> None:
        self.opa = opa
        self.interval_s = interval_s
        #: Where schemas of a policy directory's own documents are (embedded mode); the
        #: documents checked are the shipped library's either way.
        self.policies_dir = policies_dir
        #: revision -> the problems of its data ("" when it matches its schemas).
        self.verdicts: dict[str | None, str] = {}
        #: The revision and bundle-status digest of the last check.
        self.revision: str | None = None
        self.generation: str | None = None
        #: Why the last check could not be made (None once it was).
        self.error: str | None = "not checked yet"
        self._lock = asyncio.Lock()
        self._poller = Periodic(self.refresh, interval_s, name="bundle-data", log=log)

    async def start(self) -> None:
        await self.refresh()
        self._poller.start()

    async def close(self) -> None:
        await self._poller.close()

    async def refresh(self) -> None:
        """One check; never raises (a failure is kept in ``error``)."""
        try:
            await self.check()
        except EngineUnavailableError as exc:
            self.error = exc.message

    async def check(self) -> None:
        """Read and validate the active bundle's data unless its status is unchanged.
        Raises :class:`EngineUnavailableError` when OPA cannot answer."""
        async with self._lock:
            status, _ = await self._read(STATUS_QUERY)
            if _generation(status) == self.generation:
                self.error = None
                return
            status, documents = await self._read(QUERY)
            generation = _generation(status)
            self.error = None
            manifests = {
                n: (b or {}).get("manifest") or {} for n, b in status.items() if isinstance(b, dict)
            }
            revision = provenance_revision({"bundles": manifests})
            # off the event loop: a large inventory takes a while to validate
            problems = await asyncio.to_thread(document_problems, documents, self.policies_dir)
            verdict = "; ".join(problems)[:MAX_PROBLEM_CHARS]
            if verdict:
                log.error(
                    "bundle revision %s refused: its data does not match the schemas; every "
                    "decision under it is denied (policy.data_invalid) until a bundle whose data "
                    "does is active: %s",
                    revision,
                    verdict,
                )
            elif self.verdicts.get(revision):
                log.warning("bundle revision %s: data matches the schemas now", revision)
            self.verdicts.pop(revision, None)
            self.verdicts[revision] = verdict  # the newest last
            while len(self.verdicts) > MAX_REVISIONS:
                del self.verdicts[next(iter(self.verdicts))]
            self.revision, self.generation = revision, generation

    async def _read(self, query: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the active bundles' status, the documents) of one query."""
        bindings = await self.opa.query(query, timeout_s=CHECK_TIMEOUT_S)
        bundles = bindings.get("bundles") if bindings is not None else None
        documents = bindings.get("documents", {}) if bindings is not None else None
        if not isinstance(bundles, list) or not isinstance(documents, dict):
            raise EngineUnavailableError("policy engine gave no answer to the data check")
        status = bundles[0] if bundles and isinstance(bundles[0], dict) else {}
        return status, documents

    def vouches(self, revision: str | None) -> bool:
        """Whether the data of ``revision`` was checked and matches (the hot path: a dict
        lookup; :meth:`vet` for everything else)."""
        return self.verdicts.get(revision) == ""

    async def vet(self, result: OPAResult) -> OPAResult:
        """``result`` when its bundle's data matches the schemas; else a policy error."""
        verdict = self.verdicts.get(result.revision)
        if verdict is None:  # a revision not checked yet: check now, once
            try:
                await self.check()
            except EngineUnavailableError as exc:
                return self._refuse(
                    result,
                    "policy.data_unverified",
                    f"the data of bundle revision {result.revision} could not be checked: "
                    f"{exc.message}",
                )
            verdict = self.verdicts.get(result.revision)
        if verdict is None:
            return self._refuse(
                result,
                "policy.data_unverified",
                f"decided under bundle revision {result.revision}, which is no longer active "
                "and whose data was not checked",
            )
        if verdict:
            return self._refuse(
                result,
                "policy.data_invalid",
                f"bundle revision {result.revision} has data that does not match its schemas: "
                f"{verdict}",
            )
        return result

    @staticmethod
    def _refuse(result: OPAResult, code: str, message: str) -> OPAResult:
        return OPAResult(None, result.revision, result.duration_s, code, message)

    def problem(self) -> str | None:
        """Why the PDP must not be ready (the active bundle's data is refused), or None."""
        verdict = self.verdicts.get(self.revision) if self.generation is not None else None
        if verdict:
            return (
                f"bundle revision {self.revision} refused: its data does not match the "
                f"schemas: {verdict}"
            )
        return None

    def collect(self) -> Iterator[Metric]:
        valid = GaugeMetricFamily(
            "pdp_policy_bundle_data_valid",
            "1 when the data of a bundle revision matches its schemas; 0: its decisions are "
            "denied (policy.data_invalid).",
            labels=["revision"],
        )
        for revision, verdict in self.verdicts.items():
            valid.add_metric([revision or ""], 0 if verdict else 1)
        yield valid


def _generation(status: dict[str, Any]) -> str:
    """A digest of the bundles' status: it changes with every activation."""
    return hashlib.blake2b(
        orjson.dumps(status, option=orjson.OPT_SORT_KEYS), digest_size=16
    ).hexdigest()
