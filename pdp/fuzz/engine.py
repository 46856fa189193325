"""One OPA process serving the bundle under test and the invariants, asked in batches.

OPA's open-source server has no batch endpoint; ``data.invariants.results`` is one: it
evaluates ``data.pdp.decision`` for every input in ``input.cases`` (``with input as``), so
a whole batch costs one HTTP round trip on one keep-alive connection over a Unix socket.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import SidecarError

#: How long OPA may take to load the bundle and answer its health check.
START_TIMEOUT_S = 30.0


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 (keep-alive) over the Unix socket at ``path`` (blocking; ``timeout`` in
    seconds per socket operation)."""

    def __init__(self, path: str | Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()  # not yet self.sock, so close() would not: no leaked socket
            raise
        self.sock = sock


class BatchOPA:
    """``opa run --server`` with ``bundle`` (a .tar.gz, loaded as a bundle) and ``modules``."""

    def __init__(
        self, opa: str, bundle: Path, modules: list[Path], *, timeout_s: float = 60.0
    ) -> None:
        self.opa = opa
        self.bundle = bundle
        self.modules = modules
        self.timeout_s = timeout_s
        self._dir = tempfile.TemporaryDirectory(prefix="pdp-fuzz-")
        self.socket = Path(self._dir.name) / "opa.sock"
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: UnixHTTPConnection | None = None

    def __enter__(self) -> BatchOPA:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start OPA and wait until it answers (raises SidecarError with OPA's output)."""
        cmd = [
            self.opa,
            "run",
            "--server",
            "--addr",
            f"unix://{self.socket}",
            "--log-level",
            "error",
            "--skip-version-check",
            str(self.bundle),
            *(str(m) for m in self.modules),
        ]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise SidecarError(f"opa exited {self._proc.returncode}: {err.strip()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.socket.exists():
                    self._request("GET", "/health", None)
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise SidecarError(f"opa did not answer within {START_TIMEOUT_S:.0f}s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None
        self._dir.cleanup()

    def data(self, path: str, input_doc: Any = None) -> Any:
        """``data.<path>`` (dots or slashes), evaluated with ``input_doc`` when given;
        None when undefined."""
        url = "/v1/data/" + path.replace(".", "/")
        body = None if input_doc is None else {"input": input_doc}
        doc = self._request("POST" if body is not None else "GET", url, body)
        return doc.get("result")

    def batch(self, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``data.invariants.results`` for ``cases``: one answer per case, in order."""
        results = self.data("invariants/results", {"cases": cases})
        if not isinstance(results, list) or len(results) != len(cases):
            raise SidecarError(
                "data.invariants.results did not answer one result per case "
                "(is policies/invariants/invariants.rego loaded, and data.pdp.decision defined?)"
            )
        return results

    def _request(self, method: str, url: str, body: Any) -> dict[str, Any]:
        payload = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = UnixHTTPConnection(self.socket, self.timeout_s)
            try:
                headers = {"Content-Type": "application/json"} if payload is not None else {}
                self._conn.request(method, url, payload, headers)
                resp = self._conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
                continue
            if resp.status != 200:
                raise SidecarError(f"opa answered {resp.status} to {url}: {raw[:500]!r}")
            doc: dict[str, Any] = json.loads(raw) if raw else {}
            return doc
        raise AssertionError("unreachable")  # pragma: no cover
