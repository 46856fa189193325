"""The aiohttp application: routes, the error middleware and the resources' lifecycle.

The composition root: the only module that knows every resource. Each resource has one
typed key (:mod:`pdp.state`) and one ``cleanup_ctx`` that opens it, sets its key once and
closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import admin, approvals_api, audit_api, opaconfig, outcomes, shadow
from .adapters import authzen, ext_authz_http
from .adapters.ext_authz_grpc import grpc_ctx
from .approvals import ApprovalService
from .audit.record import LogRecorder, Recorder
from .audit.trail import AuditRecorder, AuditTrail
from .bundle import build_bundle
from .bundlestatus import BundleStatus
from .callers import (
    CALLER,
    CallerAuthenticator,
    CallerKeys,
    authenticate_caller,
    request_caller,
)
from .config import Settings, is_loopback
from .credentials import CredentialService
from .dataguard import DataGuard
from .decision import DecisionService
from .decision_cache import DecisionCache, check_bundles, watch_bundles
from .delegation import DelegationVerifier
from .devtrust import ensure_dev_trust
from .errors import (
    BodyTooLargeError,
    EngineUnavailableError,
    OverloadedError,
    PDPError,
    RequestTimeoutError,
)
from .httpio import json_response, read_json_object
from .identity import Identity, SVIDVerifier, TrustBundles
from .metrics import Metrics
from .normalize import normalize
from .opa import OPAClient
from .prompthash import resolve_prompt_hasher
from .routes import RouteTable
from .schema import validate_request
from .server import LISTENERS, Listeners, check_surface
from .sessions import SessionHistory
from .sidecar import OPASidecar, socket_path
from .state import (
    APPROVALS,
    AUDIT,
    BUNDLE_STATUS,
    CREDENTIALS,
    DATA_GUARD,
    DECISION_CACHE,
    DECISIONS,
    METRICS,
    OPA,
    RECORDER,
    SETTINGS,
    SHADOW,
    SIDECAR,
    VERIFIER,
)
from .tools import find_opa
from .trustwatch import BUNDLE_WATCHER, BundleWatcher
from .users import UserAssertionVerifier

log = logging.getLogger("pdp")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The app's one middleware, on every route: which surface may serve the path
    (:func:`pdp.server.check_surface`), who asks (:func:`pdp.callers.authenticate_caller`;
    the admin surface has its own credential), then the handler. Maps every error to a JSON
    body with ``allow: false``; never leaks a traceback. (One layer, not three: each costs
    a coroutine per request; bench/README.md, lever 17.)"""
    try:
        app = request.app
        admin_path = admin.is_admin_path(request.path)
        check_surface(request, app[LISTENERS], admin_path)
        authenticate_caller(request, app[CALLER], exempt=admin_path)
        return await handler(request)
    except PDPError as exc:
        if exc.status < 500:
            request.app[METRICS].invalid_requests.labels(exc.code).inc()
        response = json_response(exc.body(), exc.status)
        if isinstance(exc, OverloadedError):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        if isinstance(exc, RequestTimeoutError | BodyTooLargeError):
            response.force_close()  # the rest of the body is still on the wire
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
    app = request.app
    settings = app[SETTINGS]
    body = await read_json_object(
        request, settings.max_body_bytes, timeout_s=settings.body_timeout_s
    )
    decision_request = validate_request(body)
    return json_response(
        await app[DECISIONS].decide(decision_request, caller=request_caller(request))
    )


async def get_healthz(request: web.Request) -> web.Response:
    """GET /healthz: the process is alive."""
    return json_response({"status": "ok"})


async def get_readyz(request: web.Request) -> web.Response:
    """GET /readyz: 200 only when OPA answers, its bundle is active and the entrypoint decides."""
    opa, audit = request.app[OPA], request.app[AUDIT]
    ready, revision = False, None
    if not await opa.health(bundles=True):
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
            result = await opa.evaluate(probe)
        except PDPError as exc:
            detail = exc.message
        else:
            ready = result.decision is not None
            detail = "ok" if ready else f"{result.error_code}: {result.error_message}"
            revision = result.revision
    if ready and audit is not None and not audit.available:
        ready, detail = False, f"audit trail unavailable: {audit.error}"
    refused = request.app[DATA_GUARD].problem()
    if ready and refused is not None:  # the active bundle's data is off-schema
        ready, detail = False, refused
    body = {"ready": ready, "detail": detail, "policy": {"revision": revision}}
    bundles = request.app[BUNDLE_STATUS]
    if bundles is not None:  # production mode: OPA's bundle status (pdp.bundlestatus)
        await bundles.refresh()
        problem, note = bundles.problem(), bundles.note()
        if ready and problem is not None:
            ready, body["ready"], body["detail"] = False, False, problem
        elif note is not None:
            body["detail"] = f"{body['detail']}; {note}"
        body["bundles"] = bundles.to_json()
    return json_response(body, 200 if ready else 503)


async def get_metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    metrics, sidecar = request.app[METRICS], request.app[SIDECAR]
    bundles = request.app[BUNDLE_STATUS]
    if bundles is not None:
        await bundles.refresh()  # the bundle metrics as OPA has them now
    if sidecar is not None:
        metrics.opa_restarts.set(sidecar.restarts)
    return web.Response(
        body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
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


def _audit_ctx(base: Recorder) -> Callable[[web.Application], AsyncIterator[None]]:
    """The audit trail opens first and closes last: every decision is made durable by it."""

    async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        if not settings.audit_enabled:
            log.warning("audit trail disabled (PDP_AUDIT_ENABLED=false): decisions are only logged")
            app[AUDIT], app[RECORDER] = None, base
            yield
            return
        trail = AuditTrail(settings, app[METRICS].registry)
        await trail.start()
        # Behind the durable trail the log line is written off the answer's path.
        then = LogRecorder(deferred=True) if type(base) is LogRecorder else base
        app[AUDIT], app[RECORDER] = trail, AuditRecorder(trail, then)
        try:
            yield
        finally:
            await trail.close()

    return audit_ctx


async def _credentials_ctx(app: web.Application) -> AsyncIterator[None]:
    """Store, signing keys, agent registry: open on startup, flushed and closed on cleanup."""
    service = await CredentialService.start(app[SETTINGS])
    app[CREDENTIALS] = service
    try:
        yield
    finally:
        await service.close()


async def _approvals_ctx(app: web.Application) -> AsyncIterator[None]:
    """Approvals in the same store as the credentials, audited by the same recorder."""
    service = await ApprovalService.start(
        app[SETTINGS], app[RECORDER], shared=app[CREDENTIALS].store
    )
    app[APPROVALS] = service
    try:
        yield
    finally:
        await service.close()


async def _verifier_ctx(app: web.Application) -> AsyncIterator[None]:
    """Trust bundles are read (and dev ones generated) before OPA is started, and
    reloaded when their files change (pdp.trustwatch)."""
    settings = app[SETTINGS]
    verifier, files = build_verifier(settings)
    app[VERIFIER] = verifier
    watcher = BundleWatcher(verifier, files, settings.trust_bundle_refresh_s)
    app[BUNDLE_WATCHER] = watcher
    await watcher.start()
    try:
        yield
    finally:
        await watcher.close()


async def _sidecar_ctx(app: web.Application) -> AsyncIterator[None]:
    """Embedded mode: build the bundle from policies_dir and run OPA as a child process;
    production mode (--opa-config): run OPA with that configuration (pdp.opaconfig), it
    pulls signed bundles itself."""
    s = app[SETTINGS]
    if s.opa_url is not None:
        app[SIDECAR] = None
        yield
        return
    opa_bin = find_opa(s.opa_binary)
    if s.opa_config is not None:
        sidecar = OPASidecar(
            opa_bin,
            None,
            socket_path(s.state_dir),
            start_timeout_s=s.opa_start_timeout_s,
            source_args=opaconfig.source_args(s),
            wait_for_bundles=False,  # readiness says when a bundle is active
        )
    else:
        built = await asyncio.to_thread(
            build_bundle, opa_bin, s.policies_dir, s.state_dir / "bundles" / "policies.tar.gz"
        )
        log.info("built bundle %s revision %s", built.path, built.revision)
        sidecar = OPASidecar(
            opa_bin, built.path, socket_path(s.state_dir), start_timeout_s=s.opa_start_timeout_s
        )
    await sidecar.start()
    app[SIDECAR] = sidecar
    try:
        yield
    finally:
        await sidecar.stop()


async def _bundle_status_ctx(app: web.Application) -> AsyncIterator[None]:
    """Production mode (or --max-bundle-age): follow OPA's bundle status (pdp.bundlestatus)."""
    s = app[SETTINGS]
    if s.opa_config is None and not s.max_bundle_age_s:
        app[BUNDLE_STATUS] = None
        yield
        return
    status = BundleStatus(
        app[OPA],
        persistence_dir=opaconfig.persistence_dir(s) if s.opa_config is not None else None,
        max_age_s=s.max_bundle_age_s,
    )
    await status.start()
    app[METRICS].registry.register(status)
    app[BUNDLE_STATUS] = status
    try:
        yield
    finally:
        await status.close()


async def _shadow_ctx(app: web.Application) -> AsyncIterator[None]:
    """--shadow-bundle: a second OPA on the candidate, fed every answered decision
    (pdp.shadow); stopped before the decision path's resources."""
    s = app[SETTINGS]
    if s.shadow_bundle is None:
        app[SHADOW] = None
        yield
        return
    sidecar, client, evaluator = await shadow.start_shadow(s, app[METRICS].registry)
    app[SHADOW] = evaluator
    app[DECISIONS].observer = evaluator.submit
    try:
        yield
    finally:
        app[DECISIONS].observer = None
        await evaluator.close()
        await client.close()
        await sidecar.stop()


async def _opa_ctx(app: web.Application) -> AsyncIterator[None]:
    """The one OPA client: the sidecar's socket, or PDP_OPA_URL."""
    s, sidecar = app[SETTINGS], app[SIDECAR]
    url = sidecar.url if sidecar is not None else s.opa_url
    assert url is not None  # Settings: no opa_url means embedded, so a sidecar
    client = OPAClient(url, timeout_s=s.opa_timeout_ms / 1000)
    await client.start()
    app[OPA] = client
    try:
        yield
    finally:
        await client.close()


async def _data_guard_ctx(app: web.Application) -> AsyncIterator[None]:
    """Whatever bundle OPA activates (registry, directory, built here), no decision is
    answered from one whose data does not match its schemas (pdp.dataguard)."""
    s = app[SETTINGS]
    embedded = s.opa_config is None and s.opa_url is None
    guard = DataGuard(app[OPA], policies_dir=s.policies_dir if embedded else None)
    await guard.start()
    app[METRICS].registry.register(guard)
    app[DATA_GUARD] = guard
    try:
        yield
    finally:
        await guard.close()


async def _cache_ctx(app: web.Application) -> AsyncIterator[None]:
    """The decision cache (PDP_DECISION_CACHE_SIZE > 0; None when off), its bundle watch,
    and its invalidations from the store's channel."""
    s = app[SETTINGS]
    if s.decision_cache_size <= 0:
        app[DECISION_CACHE] = None
        yield
        return
    cache = DecisionCache(
        max_entries=s.decision_cache_size,
        max_ttl_s=s.decision_cache_max_ttl_s,
        registry=app[METRICS].registry,
    )
    with contextlib.suppress(EngineUnavailableError):
        await check_bundles(cache, app[OPA])  # serve hits from the first request on
    watch = asyncio.create_task(
        watch_bundles(cache, app[OPA], s.decision_cache_bundle_check_ms / 1000),
        name="pdp-decision-cache-bundles",
    )
    app[CREDENTIALS].listeners.append(cache.on_event)
    sidecar = app[SIDECAR]
    if sidecar is not None:
        sidecar.on_exit.append(lambda: cache.bundle_unknown("the embedded OPA exited"))
    app[DECISION_CACHE] = cache
    try:
        yield
    finally:
        app[CREDENTIALS].listeners.remove(cache.on_event)
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch


async def _decisions_ctx(app: web.Application) -> AsyncIterator[None]:
    """The decision path, over the resources opened before it (nothing to close)."""
    s = app[SETTINGS]
    app[DECISIONS] = DecisionService(
        verifier=app[VERIFIER],
        opa=app[OPA],
        recorder=app[RECORDER],
        metrics=app[METRICS],
        prompt_to_policy=s.prompt_to_policy,
        credentials=app[CREDENTIALS],
        audit_prompt=s.audit_prompt,
        max_in_flight=s.max_in_flight,
        audit_value_limit=s.audit_max_value_bytes,
        prompt_hasher=await asyncio.to_thread(resolve_prompt_hasher, s),
        sessions=SessionHistory(app[CREDENTIALS].store, ttl_s=s.session_ttl_s),
        delegation=DelegationVerifier(
            app[VERIFIER].bundles,
            s.audience,
            leeway_seconds=s.clock_skew_seconds,
            max_lifetime_s=s.svid_max_lifetime_s,
        ),
        cache=app[DECISION_CACHE],
        approvals=app[APPROVALS],
        users=_user_verifier(s),
        data_guard=app[DATA_GUARD],
        gateway_id_prefix=s.client_id_prefix,
    )
    service = app[DECISIONS]

    def bundles_changed(bundles: TrustBundles, changed: set[str]) -> None:
        # What else trusts the bundles follows a rotation: delegation assertions are
        # verified against the new keys, and no decision made for an identity the old
        # bundles verified is served from the cache.
        if service.delegation is not None:
            service.delegation.bundles = bundles
        if service.cache is not None:
            service.cache.invalidate("trust_bundle")

    app[BUNDLE_WATCHER].on_change.append(bundles_changed)
    trail = app[AUDIT]
    if trail is not None:
        trail.writer.expecting = lambda: service.in_progress
    yield


def build_caller_authenticator(settings: Settings) -> CallerAuthenticator:
    """Caller (PEP) authentication as configured; raises ValueError for a bad keys file."""
    keys = CallerKeys.load(settings.caller_keys) if settings.caller_keys is not None else None
    authenticator = CallerAuthenticator(
        keys=keys, mtls=settings.client_ca is not None, trust_domain=settings.client_trust_domain
    )
    if not authenticator.enabled:
        log.info("caller authentication is off: any local process may ask for decisions")
    return authenticator


def _user_verifier(s: Settings) -> UserAssertionVerifier | None:
    """The user assertion verifier (PDP_USER_ASSERTION_ISSUER + _JWKS), or None."""
    if s.user_assertion_issuer is None or s.user_assertion_jwks is None:
        return None
    return UserAssertionVerifier.from_file(
        s.user_assertion_issuer,
        s.user_assertion_jwks,
        s.user_assertion_audience or s.audience,
        leeway_s=s.clock_skew_seconds,
    )


def create_app(settings: Settings, *, recorder: Recorder | None = None) -> web.Application:
    """Build the application; resources open on startup and close on cleanup.

    ``recorder`` receives every decision record after the audit trail (default: the
    ``pdp.decisions`` log line).
    """
    app = web.Application(
        # one layer: which surface, who asks, then the handler; every error mapped
        middlewares=[error_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[LISTENERS] = Listeners(
        admin_on_decision=settings.admin_port is None and is_loopback(settings.host)
    )
    app[CALLER] = build_caller_authenticator(settings)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    # Opened in this order, closed in reverse: each context uses only keys set before it.
    app.cleanup_ctx.extend(
        [
            _audit_ctx(recorder or LogRecorder()),
            _credentials_ctx,
            _approvals_ctx,
            _verifier_ctx,
            _sidecar_ctx,
            _opa_ctx,
            _data_guard_ctx,
            _bundle_status_ctx,
            _cache_ctx,
            _decisions_ctx,
            _shadow_ctx,
        ]
    )
    admin.add_routes(app)
    outcomes.add_routes(app)
    approvals_api.add_routes(app)
    audit_api.add_routes(app)
    app.router.add_post("/v1/decisions", post_decision)
    # Front doors over the same decision service (pdp/adapters/).
    authzen.add_routes(app)
    routes = (
        RouteTable.load(settings.ext_authz_routes) if settings.ext_authz_routes else RouteTable()
    )
    ext_authz_http.add_routes(app, routes)
    if settings.ext_authz_grpc_port is not None:  # opens after (closes before) the decisions
        app.cleanup_ctx.append(grpc_ctx(settings, routes))
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/readyz", get_readyz)
    app.router.add_get("/metrics", get_metrics)
    return app
