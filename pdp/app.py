"""The aiohttp application: routes, the error middleware and the resources' lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import admin
from .audit.trail import AuditRecorder, AuditTrail
from .bodies import read_json_object
from .bundle import build_bundle
from .callers import (
    CALLER,
    CallerAuthenticator,
    CallerKeys,
    caller_middleware,
    request_caller,
)
from .config import Settings, is_loopback
from .credentials import CredentialService
from .decision import DecisionService
from .devtrust import ensure_dev_trust
from .errors import OverloadedError, PDPError
from .identity import Identity, SVIDVerifier, TrustBundles
from .metrics import Metrics
from .normalize import normalize
from .opa import OPAClient
from .recorder import LogRecorder, Recorder
from .schema import validate_request
from .server import LISTENERS, Listeners, surface_middleware
from .sidecar import OPASidecar, socket_path
from .tools import find_opa
from .trustwatch import BundleWatcher

log = logging.getLogger("pdp")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Runtime:
    """What the running app holds; built in :func:`_lifecycle`, reached through RUNTIME."""

    settings: Settings
    metrics: Metrics
    recorder: Recorder
    opa: OPAClient | None = None
    sidecar: OPASidecar | None = None
    decisions: DecisionService | None = None
    trust_domains: list[str] = field(default_factory=list)
    #: The durable audit trail (None when PDP_AUDIT_ENABLED=false); see _audit_lifecycle.
    audit: AuditTrail | None = None
    #: Credentials, revocation, agent lifecycle, keys (built in _credentials_lifecycle).
    credentials: CredentialService | None = None

    @property
    def service(self) -> DecisionService:
        if self.decisions is None:
            raise RuntimeError("the app has not started")
        return self.decisions


RUNTIME = web.AppKey("runtime", Runtime)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every error to a JSON body with ``allow: false``; never leak a traceback."""
    try:
        return await handler(request)
    except PDPError as exc:
        if exc.status < 500:
            request.app[RUNTIME].metrics.invalid_requests.labels(exc.code).inc()
        response = json_response(exc.body(), exc.status)
        if isinstance(exc, OverloadedError):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        body = {"allow": False, "error": {"code": code, "message": exc.reason}}
        return json_response(body, exc.status)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        body = {"allow": False, "error": {"code": "internal", "message": "internal error"}}
        return json_response(body, 500)


async def post_decision(request: web.Request) -> web.Response:
    """POST /v1/decisions: may this agent do this now?"""
    rt = request.app[RUNTIME]
    body = await read_json_object(
        request, rt.settings.max_body_bytes, timeout_s=rt.settings.body_timeout_s
    )
    request_doc = validate_request(body)
    return json_response(await rt.service.decide(request_doc, caller=request_caller(request)))


async def get_healthz(request: web.Request) -> web.Response:
    """GET /healthz: the process is alive."""
    return json_response({"status": "ok"})


async def get_readyz(request: web.Request) -> web.Response:
    """GET /readyz: 200 only when OPA answers, its bundle is active and the entrypoint decides."""
    rt = request.app[RUNTIME]
    ready, detail, revision = False, "not started", None
    if rt.opa is not None:
        if not await rt.opa.health(bundles=True):
            detail = "policy engine unreachable or bundle not active"
        else:
            probe = normalize(
                {
                    "tenant": "readiness",
                    "action": {"type": "tool.call"},
                    "destination": {"type": "tool", "name": "readiness"},
                },
                Identity.failure("authn.token_missing", "readiness probe"),
                0,
            )
            try:
                result = await rt.opa.evaluate(probe)
            except PDPError as exc:
                detail = exc.message
            else:
                ready = result.decision is not None
                detail = "ok" if ready else f"{result.error_code}: {result.error_message}"
                revision = result.revision
    if ready and rt.audit is not None and not rt.audit.available:
        ready, detail = False, f"audit trail unavailable: {rt.audit.error}"
    body = {"ready": ready, "detail": detail, "policy": {"revision": revision}}
    return json_response(body, 200 if ready else 503)


async def get_metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    rt = request.app[RUNTIME]
    if rt.sidecar is not None:
        rt.metrics.opa_restarts.set(rt.sidecar.restarts)
    return web.Response(
        body=generate_latest(rt.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def build_verifier(settings: Settings) -> tuple[SVIDVerifier, dict[str, Path]]:
    """Trust bundles from settings, plus generated dev bundles for dev trust domains."""
    files: dict[str, Path] = {}
    dev = [d for d in settings.dev_trust_domains if d not in settings.trust_bundles]
    if dev:
        files.update(ensure_dev_trust(settings.state_dir, dev))
        log.warning(
            "dev trust domains enabled (keys in %s): %s; set PDP_DEV_TRUST_DOMAINS='' "
            "in production",
            settings.state_dir / "dev-trust",
            ", ".join(dev),
        )
    files.update(settings.trust_bundles)
    if not files:
        log.warning("no trust domain configured: every decision will deny (authn)")
    verifier = SVIDVerifier(
        TrustBundles.from_files(files),
        settings.audience,
        leeway_seconds=settings.clock_skew_seconds,
        cache_size=settings.token_cache_size,
        max_lifetime_s=settings.svid_max_lifetime_s,
    )
    return verifier, files


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    s = rt.settings
    verifier, bundle_files = build_verifier(s)
    rt.trust_domains = sorted(bundle_files)
    watcher = BundleWatcher(verifier, bundle_files, s.trust_bundle_refresh_s)
    await watcher.start()
    url = s.opa_url
    if url is None:
        opa_bin = find_opa(s.opa_binary)
        built = await asyncio.to_thread(
            build_bundle, opa_bin, s.policies_dir, s.state_dir / "bundles" / "policies.tar.gz"
        )
        log.info("built bundle %s revision %s", built.path, built.revision)
        rt.sidecar = OPASidecar(
            opa_bin, built.path, socket_path(s.state_dir), start_timeout_s=s.opa_start_timeout_s
        )
        await rt.sidecar.start()
        url = rt.sidecar.url
    rt.opa = OPAClient(url, timeout_s=s.opa_timeout_ms / 1000)
    await rt.opa.start()
    rt.decisions = DecisionService(
        verifier=verifier,
        opa=rt.opa,
        recorder=rt.recorder,
        metrics=rt.metrics,
        prompt_to_policy=s.prompt_to_policy,
        credentials=rt.credentials,
        audit_prompt=s.audit_prompt,
        max_in_flight=s.max_in_flight,
        audit_value_limit=s.audit_max_value_bytes,
    )
    try:
        yield
    finally:
        await watcher.close()
        await rt.opa.close()
        if rt.sidecar is not None:
            await rt.sidecar.stop()


async def _audit_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """The audit trail opens first and closes last: every decision is made durable by it."""
    rt = app[RUNTIME]
    if not rt.settings.audit_enabled:
        log.warning("audit trail disabled (PDP_AUDIT_ENABLED=false): decisions are only logged")
        yield
        return
    rt.audit = AuditTrail(rt.settings, rt.metrics.registry)
    await rt.audit.start()
    rt.recorder = AuditRecorder(rt.audit, rt.recorder)
    try:
        yield
    finally:
        await rt.audit.close()


async def _credentials_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Store, signing keys, agent registry: open on startup, flushed and closed on cleanup."""
    rt = app[RUNTIME]
    rt.credentials = await CredentialService.start(rt.settings)
    try:
        yield
    finally:
        await rt.credentials.close()


def build_caller_authenticator(settings: Settings) -> CallerAuthenticator:
    """Caller (PEP) authentication as configured; raises ValueError for a bad keys file."""
    keys = CallerKeys.load(settings.caller_keys) if settings.caller_keys is not None else None
    authenticator = CallerAuthenticator(
        keys=keys, mtls=settings.client_ca is not None, trust_domain=settings.client_trust_domain
    )
    if not authenticator.enabled:
        log.info("caller authentication is off: any local process may ask for decisions")
    return authenticator


def create_app(settings: Settings, *, recorder: Recorder | None = None) -> web.Application:
    """Build the application; resources open on startup and close on cleanup."""
    app = web.Application(
        middlewares=[error_middleware, surface_middleware, caller_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[LISTENERS] = Listeners(
        admin_on_decision=settings.admin_port is None and is_loopback(settings.host)
    )
    app[CALLER] = build_caller_authenticator(settings)
    app[RUNTIME] = Runtime(settings=settings, metrics=Metrics(), recorder=recorder or LogRecorder())
    app.cleanup_ctx.append(_audit_lifecycle)  # first to open, last to close
    app.cleanup_ctx.append(_credentials_lifecycle)  # before _lifecycle: it is passed in
    app.cleanup_ctx.append(_lifecycle)
    admin.add_routes(app, lambda a: a[RUNTIME].credentials)
    app.router.add_post("/v1/decisions", post_decision)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/readyz", get_readyz)
    app.router.add_get("/metrics", get_metrics)
    return app
