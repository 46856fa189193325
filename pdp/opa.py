"""The one OPA client: every evaluation the service makes goes through :class:`OPAClient`.

It talks to OPA's REST API over a Unix socket (default) or TCP through one pool of
keep-alive connections for the life of the app (:mod:`pdp.opahttp`), with a per-decision
deadline and no hidden retries (the one exception: a request on a pooled connection OPA had
already closed, which OPA never read, is sent once more on a fresh one).

Failure mapping (fail closed, never "no decision"):

- connection refused / reset, socket missing, deadline passed -> :class:`EngineUnavailableError`
  (the caller answers 503 with ``allow: false``);
- non-200 status, body that is not JSON, undefined ``result``, or a result that does not
  match ``pdp/schemas/decision.schema.json`` -> an :class:`OPAResult` carrying a ``policy.*``
  error, which the caller turns into a deny decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from .errors import EngineUnavailableError
from .opahttp import HTTPPool
from .schema import decision_validator

#: The entrypoint every decision is asked of (data.pdp.decision).
DECISION_PATH = "pdp/decision"


@dataclass(frozen=True, slots=True)
class OPAResult:
    """What one evaluation produced: a valid decision document, or a policy error."""

    decision: dict[str, Any] | None
    revision: str | None
    duration_s: float
    error_code: str | None = None
    error_message: str | None = None
    #: OPA's own decision id (only when OPA's decision logging is on).
    decision_id: str | None = None


class OPAClient:
    """Evaluates the decision entrypoint on one OPA (embedded sidecar or remote)."""

    def __init__(self, url: str, *, timeout_s: float, pool_size: int = 64) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._pool_size = pool_size
        self._pool: HTTPPool | None = None
        self._decision_target = f"/v1/data/{DECISION_PATH}?provenance=true"
        self._decision_head = b""
        self._validate = decision_validator().is_valid

    async def start(self) -> None:
        """Open the connection pool (one for the client's life)."""
        self._pool = HTTPPool(self.url, limit=self._pool_size)
        # The request line and headers of every decision, built once.
        self._decision_head = self._pool.head("POST", self._decision_target, "application/json")

    async def close(self) -> None:
        """Close the pool and its connections."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> HTTPPool:
        if self._pool is None:
            raise RuntimeError("OPAClient.start() was not called")
        return self._pool

    async def _get(self, target: str, timeout_s: float) -> tuple[int, bytes]:
        """GET ``target`` within ``timeout_s``; transport failures are 503s."""
        pool = self.pool
        with _unavailable(timeout_s):
            async with asyncio.timeout(timeout_s):
                return await pool.request(pool.head("GET", target))

    async def evaluate(self, input_doc: dict[str, Any]) -> OPAResult:
        """Evaluate data.pdp.decision for ``input_doc``.

        Raises :class:`EngineUnavailableError` when OPA cannot be reached in time;
        every other failure is an :class:`OPAResult` with a ``policy.*`` error code.
        """
        pool = self.pool
        body = orjson.dumps({"input": input_doc})
        started = time.perf_counter()
        with _unavailable(self.timeout_s):
            async with asyncio.timeout(self.timeout_s):
                status, raw = await pool.request(self._decision_head, body)
        duration = time.perf_counter() - started
        return self._interpret(status, raw, duration)

    def _interpret(self, status: int, raw: bytes, duration: float) -> OPAResult:
        def fail(code: str, message: str, revision: str | None = None) -> OPAResult:
            return OPAResult(None, revision, duration, code, message)

        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return fail("policy.malformed_response", f"OPA answered {status} with a non-JSON body")
        if not isinstance(doc, dict):
            return fail("policy.malformed_response", f"OPA answered {status} with a non-object")
        if status != 200:
            detail = doc.get("message") or doc.get("code") or "no detail"
            return fail("policy.evaluation_error", f"OPA answered {status}: {str(detail)[:300]}")
        revision = _revision(doc.get("provenance"))
        if "result" not in doc:
            return fail(
                "policy.undefined",
                f"data.{DECISION_PATH.replace('/', '.')} is undefined: is the bundle loaded?",
                revision,
            )
        result = doc["result"]
        if not self._validate(result):
            return fail(
                "policy.invalid_decision",
                "the policy's decision does not match the decision schema",
                revision,
            )
        opa_id = doc.get("decision_id")
        return OPAResult(
            result, revision, duration, decision_id=opa_id if isinstance(opa_id, str) else None
        )

    async def data(self, path: str, *, timeout_s: float | None = None) -> Any:
        """The data document at ``data.<path>`` (slash-separated), or None when undefined.

        Read-only and bounded by the same deadline as a decision (or ``timeout_s``); used for
        policy-supplied facts such as the AuthZEN search candidates. Raises
        :class:`EngineUnavailableError` when OPA cannot be reached in time or does not
        answer 200 with JSON.
        """
        deadline = self.timeout_s if timeout_s is None else timeout_s
        status, raw = await self._get(f"/v1/data/{quote(path, safe='/')}", deadline)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        if status != 200 or not isinstance(doc, dict):
            raise EngineUnavailableError(f"policy engine answered {status} reading data.{path}")
        return doc.get("result")

    async def query(self, query: str, *, timeout_s: float) -> dict[str, Any] | None:
        """The first set of bindings of an ad-hoc Rego query (``POST /v1/query``: one
        evaluation, so one snapshot of the data), or None when it has none. Raises
        :class:`EngineUnavailableError` when OPA cannot be reached in time or does not
        answer 200 with JSON."""
        pool = self.pool
        with _unavailable(timeout_s):
            async with asyncio.timeout(timeout_s):
                status, raw = await pool.request(
                    pool.head("POST", "/v1/query", "application/json"),
                    orjson.dumps({"query": query}),
                )
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        if status != 200 or not isinstance(doc, dict):
            raise EngineUnavailableError(f"policy engine answered {status} to a query")
        result = doc.get("result")
        if isinstance(result, list) and result and isinstance(result[0], dict):
            return result[0]
        return None

    async def policies(self) -> list[dict[str, Any]]:
        """The loaded policy modules (``GET /v1/policies``: id, raw text and AST each), for
        the decision cache's safety check of a newly activated bundle. Raises
        :class:`EngineUnavailableError` when OPA cannot be reached or answers an error."""
        status, raw = await self._get("/v1/policies", max(self.timeout_s, 1.0))
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("result"), list):
            raise EngineUnavailableError(f"policy engine answered {status} listing its policies")
        return [m for m in doc["result"] if isinstance(m, dict)]

    async def health(self, *, bundles: bool = True) -> bool:
        """OPA's own health check; with ``bundles`` it is true only once bundles are active."""
        target = "/health" + ("?bundles" if bundles else "")
        try:
            status, _ = await self._get(target, max(self.timeout_s, 1.0))
        except EngineUnavailableError:
            return False
        return status == 200

    async def metrics_text(self) -> str:
        """OPA's own ``/metrics`` (Prometheus text): bundle status with
        ``status.prometheus: true`` (read by :mod:`pdp.bundlestatus`)."""
        status, raw = await self._get("/metrics", max(self.timeout_s, 2.0))
        if status != 200:
            raise EngineUnavailableError(f"policy engine answered {status} on /metrics")
        return raw.decode("utf-8", "replace")


def _revision(provenance: Any) -> str | None:
    """The bundle revision from OPA's provenance block ("name=rev,..." for several)."""
    if not isinstance(provenance, dict):
        return None
    bundles = provenance.get("bundles")
    if not isinstance(bundles, dict) or not bundles:
        return None
    revs = {name: b.get("revision", "") for name, b in bundles.items() if isinstance(b, dict)}
    if len(revs) == 1:
        return str(next(iter(revs.values()))) or None
    return ",".join(f"{n}={r}" for n, r in sorted(revs.items()))


#: The bundle revision of a provenance block (also used on data.system.bundles manifests).
provenance_revision = _revision


@contextlib.contextmanager
def _unavailable(timeout_s: float) -> Iterator[None]:
    """Translate transport failures into :class:`EngineUnavailableError` (fail closed)."""
    try:
        yield
    except TimeoutError as exc:
        raise EngineUnavailableError(
            f"policy engine did not answer within {timeout_s * 1000:.0f} ms", kind="timeout"
        ) from exc
    except OSError as exc:  # refused, reset, socket missing, not HTTP (pdp.opahttp)
        raise EngineUnavailableError(
            f"policy engine unreachable: {type(exc).__name__}: {exc}"[:300]
        ) from exc
