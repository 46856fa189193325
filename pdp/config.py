"""Settings: one frozen dataclass, read once from the environment and flags, validated at start.

Every field has a ``PDP_*`` environment variable; `pdpctl serve` flags override them.
No secret has a default: the only key material the service uses by default is generated
into the state directory on first start (the dev trust domains).
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_type_hints
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = ["ConfigError", "Settings", "parse_trust_bundles"]


DEFAULT_DEV_TRUST_DOMAINS = ("acme.example", "globex.example")
#: The bundle-signing key's name: `serve --bundle-key-id` and `bundle build --key-id`.
DEFAULT_BUNDLE_KEY_ID = "pdp-bundle-signing"
#: PDP_AUDIT_FSYNC values: when a record counts as durable.
AUDIT_FSYNC_MODES = ("batch", "always", "off")
#: PDP_AUDIT_PROMPT values: how much of a prompt the audit record keeps.
AUDIT_PROMPT_MODES = ("hash", "redacted", "full")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service needs to start. Build with :meth:`from_env`."""

    #: Address the HTTP API listens on. Loopback by default.
    host: str = "127.0.0.1"
    #: TCP port of the HTTP API.
    port: int = 8700
    #: Where the service keeps its state: dev trust keys, the built bundle, OPA's socket.
    state_dir: Path = Path(".pdp-state")
    #: Audience JWT-SVIDs must be issued for (their `aud` must contain it).
    audience: str = "agent-pdp"
    #: Trust domain -> SPIFFE trust bundle file (JWKS). Replaces that domain's dev bundle.
    trust_bundles: Mapping[str, Path] = field(default_factory=dict)
    #: Trust domains for which a dev signing key is generated in the state dir, so that
    #: `pdpctl dev token` can mint test SVIDs. Empty disables dev trust (production).
    dev_trust_domains: tuple[str, ...] = DEFAULT_DEV_TRUST_DOMAINS
    #: URL of a remote OPA (http://host:port or unix:///path/to/socket). None: the embedded
    #: default, where the service builds the bundle and runs OPA as a child process.
    opa_url: str | None = None
    #: Path of the `opa` binary (embedded mode). None: look in .tools/bin and on PATH.
    opa_binary: str | None = None
    #: Policy source directory (Rego under pdp/, data documents under data/), embedded mode.
    policies_dir: Path = Path("policies")
    #: Deadline for one OPA evaluation, milliseconds. Past it the decision is a 503 deny.
    opa_timeout_ms: int = 100
    #: How long the embedded OPA may take to start and activate its bundle, seconds.
    opa_start_timeout_s: float = 30.0
    #: Largest accepted request body, bytes.
    max_body_bytes: int = 256 * 1024
    #: Clock skew tolerated when checking token exp/nbf, seconds.
    clock_skew_seconds: int = 30
    #: Verified tokens kept in memory (until their exp) so a repeat costs microseconds.
    token_cache_size: int = 10_000
    #: Pass raw prompt text to policy (input.prompt.text). Off: policies see only its hash.
    prompt_to_policy: bool = False
    #: Log level of the service's logger.
    log_level: str = "INFO"
    #: Keep the durable, hash-chained audit trail: one record per decision, durable before
    #: the answer is sent. Off: decisions are only logged (pdp.decisions), never made durable.
    audit_enabled: bool = True
    #: Directory of the audit trail. None: STATE_DIR/audit.
    audit_dir: Path | None = None
    #: When a record counts as durable: batch (group commit, one fdatasync per batch),
    #: always (one fdatasync per record), off (written to the page cache only).
    audit_fsync: str = "batch"
    #: batch mode: while decisions arrive faster than one per 2x this, a batch waits up to
    #: this long for more before it is synced (fewer syncs under load), milliseconds.
    audit_commit_delay_ms: float = 1.0
    #: How a prompt is recorded: hash (SHA-256 and length), redacted (plus the text with
    #: e-mail addresses, tokens, secrets, IPs and numbers masked), full (plus the raw text).
    audit_prompt: str = "hash"
    #: Rotate the active audit segment once it holds this many bytes.
    audit_segment_max_bytes: int = 64 * 1024 * 1024
    #: ...or once it is this old, seconds (0: no time-based rotation).
    audit_segment_max_age_s: float = 3600.0
    #: Delete closed segments older than this many days (0: keep them).
    audit_retention_days: float = 0.0
    #: Delete the oldest closed segments while the trail is larger than this (0: no limit).
    audit_retention_max_bytes: int = 0
    #: URL a collector receives records at, in OPA's decision-log upload format (gzip'd
    #: JSON array). None: no forwarding.
    audit_forward_url: str | None = None
    #: Records per upload to the collector.
    audit_forward_batch: int = 500
    #: Longest wait between delivery attempts while the collector is down, seconds.
    audit_forward_max_backoff_s: float = 30.0
    #: Issuer (`iss`) of the credentials the PDP mints on allow.
    issuer: str = "agent-pdp"
    #: JWS algorithm of minted credentials: ES256, ES384 or ES512.
    credential_alg: str = "ES256"
    #: Longest lifetime of a minted credential, seconds, whatever the policy asks.
    credential_max_ttl_s: int = 300
    #: Lifetime of a minted credential when the policy's obligations name none, seconds.
    credential_default_ttl_s: int = 60
    #: Bearer credential of the admin API. None: read admin_token_file, else
    #: STATE_DIR/admin-token (generated 0600 on first start). Never logged.
    admin_token: str | None = field(default=None, repr=False)
    #: File holding the admin credential (instead of PDP_ADMIN_TOKEN).
    admin_token_file: Path | None = None
    #: Extra Bearer credential accepted by introspection only (for target services).
    introspection_token: str | None = field(default=None, repr=False)
    #: File holding the introspection credential.
    introspection_token_file: Path | None = None
    #: Shared state: None = SQLite in the state dir; sqlite:///path or redis://host:port/db
    #: (several replicas). May carry a password, so it is never shown.
    store_url: str | None = field(default=None, repr=False)
    #: Seconds between store refreshes (keys, disabled agents, activity write-behind): the
    #: staleness bound when a pub/sub message is lost.
    store_refresh_s: float = 1.0
    # -- signed checkpoints, forwarding auth, keyed prompt hashes (docs/audit.md) --------
    #: Sign the trail at checkpoints with a dedicated ES256 audit-signing key.
    audit_signing: bool = True
    #: Audit-signing keys and their JWKS. None: STATE_DIR/audit-keys.
    audit_keys_dir: Path | None = None
    #: A signed checkpoint after this many records (0: only by time and at shutdown).
    audit_checkpoint_every: int = 1000
    #: ...or once records have waited this long unsealed, seconds (0: only by count).
    audit_checkpoint_interval_s: float = 60.0
    #: Bearer token sent to the collector. Never logged.
    audit_forward_token: str | None = field(default=None, repr=False)
    #: File holding the collector's bearer token (instead of PDP_AUDIT_FORWARD_TOKEN).
    audit_forward_token_file: Path | None = None
    #: Client certificate (PEM; may hold the key too) and its key for mTLS to the collector.
    audit_forward_tls_cert: Path | None = None
    audit_forward_tls_key: Path | None = None
    #: CA bundle (PEM) the collector's certificate must chain to (default: system CAs).
    audit_forward_tls_ca: Path | None = None
    #: Per-deployment secret prompt hashes are keyed with (HMAC-SHA256). Share it between
    #: replicas. None: read prompt_hash_key_file, else STATE_DIR/prompt-hash-key
    #: (generated 0600 on first start). Never logged.
    prompt_hash_key: str | None = field(default=None, repr=False)
    #: File holding the prompt-hash secret.
    prompt_hash_key_file: Path | None = None
    # -- production mode: OPA pulls signed bundles (docs/bundles.md) ----------------------
    #: OPA configuration file (bundle service, signing, polling, persist): the sidecar OPA
    #: runs with it instead of a bundle built from policies_dir. None: the embedded default.
    opa_config: Path | None = None
    #: PEM public key bundles must be signed with, given to OPA as
    #: ``--set-file keys.<bundle_key_id>.key=FILE``.
    bundle_verification_key: Path | None = None
    #: Name of that key in the OPA configuration's ``keys`` (what bundles' keyid names).
    bundle_key_id: str = DEFAULT_BUNDLE_KEY_ID
    #: Extra ``--set KEY=VALUE`` overrides for OPA's configuration (comma-separated).
    opa_set: tuple[str, ...] = ()
    #: Readiness fails when the active bundle was last confirmed current by the registry
    #: longer ago than this, seconds (0: no limit).
    max_bundle_age_s: float = 0.0
    #: Candidate bundle evaluated beside the live one, never enforced (pdp.shadow): a file
    #: or oci://HOST[:PORT]/REPO:TAG. None: no shadow evaluation.
    shadow_bundle: str | None = None
    #: Shadow evaluations that may wait; past it they are dropped and counted.
    shadow_queue_max: int = 1000
    #: TCP port of the Envoy ext_authz gRPC service (envoy.service.auth.v3.Authorization),
    #: on PDP_HOST. None: not served; 0: any free port (tests).
    ext_authz_grpc_port: int | None = None
    #: Route file of the ext_authz front doors (docs/gateways.md): host/path/method patterns
    #: -> the decision request. None: every ext_authz check is denied (no route matches).
    ext_authz_routes: Path | None = None
    #: How long a task's or session's call history (input.session) is kept after its last
    #: allowed call, seconds.
    session_ttl_s: float = 86_400.0
    #: Decisions the policy declares cacheable (cache.ttl_seconds > 0) kept in memory, at
    #: most; 0 turns the decision cache off (docs/operations.md, "Decision cache").
    decision_cache_size: int = 10_000
    #: Longest time a decision is reused, whatever TTL the policy declares, seconds.
    decision_cache_max_ttl_s: int = 60
    #: How often the PDP asks OPA which bundle is active, milliseconds: the longest a
    #: cached decision can outlive the activation of a new bundle.
    decision_cache_bundle_check_ms: int = 500
    #: Event loop of `pdpctl serve`: auto (uvloop when installed, agent-pdp[fast]), uvloop,
    #: or asyncio.
    event_loop: str = "auto"
    #: How long a pending approval waits for an approver, seconds (docs/approvals.md).
    approval_pending_ttl_s: int = 3600
    #: Bearer credential of approvers: lists, grants and denies approvals, nothing else.
    #: None: only the admin credential may (or approver_token_file). Never logged.
    approver_token: str | None = field(default=None, repr=False)
    #: File holding the approver credential.
    approver_token_file: Path | None = None
    #: Issuer (`iss`) of the user assertions gateways pass as agent.user_assertion; None:
    #: user assertions are not accepted (delegations stay unverified).
    user_assertion_issuer: str | None = None
    #: JWKS file with the issuer's public keys (like a trust bundle, read at start).
    user_assertion_jwks: Path | None = None
    #: Audience user assertions must name; None: PDP_AUDIENCE.
    user_assertion_audience: str | None = None

    # -- the trust boundary (docs/security.md) ---------------------------------------
    #: TLS certificate chain (PEM) of the decision listener (and of the admin listener).
    tls_cert: Path | None = None
    #: Private key (PEM) of tls_cert.
    tls_key: Path | None = None
    #: CA certificates (PEM), or a SPIFFE trust domain's X.509 bundle (JSON), that caller
    #: (gateway) client certificates must chain to. Needs tls_cert.
    client_ca: Path | None = None
    #: With client_ca: caller certificates must be X.509-SVIDs of this trust domain.
    client_trust_domain: str | None = None
    #: With client_ca: the SPIFFE ID prefix of gateways (``spiffe://<td>/<path>/``) that
    #: share a trust domain with agents. A caller certificate whose SPIFFE ID is in an
    #: agents' trust domain and outside this prefix is an agent, never a gateway
    #: (decisions for it are denied ``caller.is_agent``).
    client_id_prefix: str | None = None
    #: File of hashed caller keys (``<caller-id> sha256:<hex>`` lines; `pdpctl callers`).
    caller_keys: Path | None = None
    #: Allow a non-loopback listener without caller authentication (never in production).
    insecure_no_caller_auth: bool = False
    #: Address of the admin listener (admin API and /metrics), when admin_port is set.
    admin_host: str = "127.0.0.1"
    #: Port of the admin listener. None: the admin surface is served on the decision
    #: listener, and only when that listener is on loopback.
    admin_port: int | None = None
    #: Decisions evaluated at once; past it a decision is answered 503 + Retry-After.
    max_in_flight: int = 32
    #: Open connections per listener; past it a new connection gets 503 and is closed.
    max_connections: int = 1024
    #: Seconds a connection may take to send a complete request head (and stay idle).
    header_timeout_s: float = 10.0
    #: Seconds a client may take to send a body once its head has arrived.
    body_timeout_s: float = 10.0
    #: Seconds between checks of the trust bundle files for changes (0: never reload).
    trust_bundle_refresh_s: float = 2.0
    #: Longest JWT-SVID lifetime accepted (exp - iat, or exp - now without iat), seconds.
    svid_max_lifetime_s: int = 86400
    #: Free-form values (arguments, context) larger than this are recorded as digest and
    #: size (unauthenticated requests: 256 bytes), bytes.
    audit_max_value_bytes: int = 16 * 1024
    #: File holding the Redis password (instead of a password in PDP_STORE_URL).
    store_password_file: Path | None = None

    def store_password(self) -> str | None:
        """The Redis password from PDP_STORE_PASSWORD_FILE (read when the store opens, so
        a rotated file takes effect on restart), or None."""
        if self.store_password_file is None:
            return None
        return Path(self.store_password_file).read_text().strip() or None

    @property
    def caller_auth(self) -> bool:
        """Whether callers of the decision API must authenticate."""
        return self.client_ca is not None or self.caller_keys is not None

    def _check_boundary(self) -> None:
        tls = self.tls_cert is not None
        _check(
            tls == (self.tls_key is not None),
            "PDP_TLS_KEY" if tls else "PDP_TLS_CERT",
            str(self.tls_key if tls else self.tls_cert),
            "PDP_TLS_CERT and PDP_TLS_KEY go together",
        )
        for key, file in (
            ("PDP_TLS_CERT", self.tls_cert),
            ("PDP_TLS_KEY", self.tls_key),
            ("PDP_CLIENT_CA", self.client_ca),
            ("PDP_CALLER_KEYS", self.caller_keys),
            ("PDP_STORE_PASSWORD_FILE", self.store_password_file),
        ):
            _check(file is None or Path(file).is_file(), key, str(file), "file does not exist")
        _check(
            self.client_ca is None or tls,
            "PDP_CLIENT_CA",
            str(self.client_ca),
            "client certificates need TLS: set PDP_TLS_CERT and PDP_TLS_KEY",
        )
        _check(
            self.client_trust_domain is None or self.client_ca is not None,
            "PDP_CLIENT_TRUST_DOMAIN",
            self.client_trust_domain,
            "needs PDP_CLIENT_CA (that trust domain's X.509 bundle)",
        )
        prefix = self.client_id_prefix
        _check(
            prefix is None or self.client_ca is not None,
            "PDP_CLIENT_ID_PREFIX",
            prefix,
            "needs PDP_CLIENT_CA (gateways' certificates)",
        )
        _check(
            prefix is None or _is_gateway_prefix(prefix),
            "PDP_CLIENT_ID_PREFIX",
            prefix,
            "must be a SPIFFE ID prefix with a path ending in '/' (spiffe://td/gateways/)",
        )
        for key, port in (("PDP_ADMIN_PORT", self.admin_port),):
            _check(port is None or 0 <= port < 65536, key, port, "must be 0..65535")
        for key, count in (
            ("PDP_MAX_IN_FLIGHT", self.max_in_flight),
            ("PDP_MAX_CONNECTIONS", self.max_connections),
        ):
            _check(count >= 1, key, count, "must be >= 1")
        for key, seconds in (
            ("PDP_HEADER_TIMEOUT_S", self.header_timeout_s),
            ("PDP_BODY_TIMEOUT_S", self.body_timeout_s),
        ):
            _check(0 < seconds <= 300, key, seconds, "must be 0..300 (exclusive of 0)")
        _check(
            self.trust_bundle_refresh_s >= 0,
            "PDP_TRUST_BUNDLE_REFRESH_S",
            self.trust_bundle_refresh_s,
            "must be >= 0 (0: never reload)",
        )
        _check(
            60 <= self.svid_max_lifetime_s <= 30 * 86400,
            "PDP_SVID_MAX_LIFETIME_S",
            self.svid_max_lifetime_s,
            "must be 60..2592000 (30 days)",
        )
        _check(
            self.audit_max_value_bytes >= 256,
            "PDP_AUDIT_MAX_VALUE_BYTES",
            self.audit_max_value_bytes,
            "must be >= 256",
        )
        if not is_loopback(self.host) and not self.insecure_no_caller_auth:
            # Both listeners (HTTP, and ext_authz gRPC when enabled) authenticate callers
            # with these settings (pdp.callers, pdp.adapters.ext_authz_grpc).
            _check(
                self.caller_auth,
                "PDP_HOST",
                self.host,
                "a listener beyond loopback needs caller authentication (--client-ca or "
                "--caller-keys); --insecure-no-caller-auth overrides this (never in production)",
            )
            _check(
                tls,
                "PDP_HOST",
                self.host,
                "a listener beyond loopback needs TLS (--tls-cert, --tls-key) for its callers' "
                "credentials; --insecure-no-caller-auth overrides this",
            )

    def __post_init__(self) -> None:
        _check(self.host != "", "PDP_HOST", self.host, "must not be empty")
        _check(0 < self.port < 65536, "PDP_PORT", self.port, "must be 1..65535")
        _check(self.audience.strip() != "", "PDP_AUDIENCE", self.audience, "must not be empty")
        _check(self.opa_timeout_ms > 0, "PDP_OPA_TIMEOUT_MS", self.opa_timeout_ms, "must be > 0")
        _check(
            self.opa_start_timeout_s > 0,
            "PDP_OPA_START_TIMEOUT_S",
            self.opa_start_timeout_s,
            "must be > 0",
        )
        _check(self.max_body_bytes > 0, "PDP_MAX_BODY_BYTES", self.max_body_bytes, "must be > 0")
        _check(
            0 <= self.clock_skew_seconds <= 300,
            "PDP_CLOCK_SKEW_SECONDS",
            self.clock_skew_seconds,
            "must be 0..300",
        )
        _check(self.token_cache_size >= 0, "PDP_TOKEN_CACHE_SIZE", self.token_cache_size, ">= 0")
        _check(
            self.log_level.upper() in {"DEBUG", "INFO", "WARNING", "ERROR"},
            "PDP_LOG_LEVEL",
            self.log_level,
            "must be DEBUG, INFO, WARNING or ERROR",
        )
        _check(self.issuer.strip() != "", "PDP_ISSUER", self.issuer, "must not be empty")
        _check(
            self.credential_alg in {"ES256", "ES384", "ES512"},
            "PDP_CREDENTIAL_ALG",
            self.credential_alg,
            "must be ES256, ES384 or ES512",
        )
        _check(
            1 <= self.credential_max_ttl_s <= 3600,
            "PDP_CREDENTIAL_MAX_TTL_S",
            self.credential_max_ttl_s,
            "must be 1..3600",
        )
        _check(
            1 <= self.credential_default_ttl_s <= self.credential_max_ttl_s,
            "PDP_CREDENTIAL_DEFAULT_TTL_S",
            self.credential_default_ttl_s,
            f"must be 1..PDP_CREDENTIAL_MAX_TTL_S ({self.credential_max_ttl_s})",
        )
        for key, token in (
            ("PDP_ADMIN_TOKEN", self.admin_token),
            ("PDP_INTROSPECTION_TOKEN", self.introspection_token),
        ):
            # the value itself is never echoed
            _check(token is None or len(token) >= 16, key, "<hidden>", "must be >= 16 chars")
        for key, file in (
            ("PDP_ADMIN_TOKEN_FILE", self.admin_token_file),
            ("PDP_INTROSPECTION_TOKEN_FILE", self.introspection_token_file),
        ):
            _check(file is None or Path(file).is_file(), key, str(file), "file does not exist")
        if self.store_url is not None:
            scheme = self.store_url.partition("://")[0]
            _check(
                scheme in {"sqlite", "redis", "rediss", "unix"} and "://" in self.store_url,
                "PDP_STORE_URL",
                f"{scheme}://...",
                "must be sqlite:///path, redis://host:port/db, rediss://... or unix:///sock",
            )
        _check(0 < self.store_refresh_s <= 60, "PDP_STORE_REFRESH_S", self.store_refresh_s, "0..60")
        port = self.ext_authz_grpc_port
        _check(port is None or 0 <= port < 65536, "PDP_EXT_AUTHZ_GRPC_PORT", port, "0..65535")
        routes = self.ext_authz_routes
        _check(
            routes is None or Path(routes).is_file(),
            "PDP_EXT_AUTHZ_ROUTES",
            str(routes),
            "file does not exist",
        )
        _check(
            1 <= self.session_ttl_s <= 30 * 86_400,
            "PDP_SESSION_TTL_S",
            self.session_ttl_s,
            "must be 1..2592000 (30 days)",
        )
        self._check_approvals()
        self._check_audit()
        self._check_audit_signing()
        self._check_bundles()
        _check(
            0 <= self.decision_cache_size <= 10_000_000,
            "PDP_DECISION_CACHE_SIZE",
            self.decision_cache_size,
            "must be 0..10000000 (0: off)",
        )
        _check(
            1 <= self.decision_cache_max_ttl_s <= 3600,
            "PDP_DECISION_CACHE_MAX_TTL_S",
            self.decision_cache_max_ttl_s,
            "must be 1..3600",
        )
        _check(
            10 <= self.decision_cache_bundle_check_ms <= 60_000,
            "PDP_DECISION_CACHE_BUNDLE_CHECK_MS",
            self.decision_cache_bundle_check_ms,
            "must be 10..60000",
        )
        _check(
            self.event_loop in {"auto", "uvloop", "asyncio"},
            "PDP_EVENT_LOOP",
            self.event_loop,
            "must be auto, uvloop or asyncio",
        )
        self._check_boundary()
        if self.opa_url is not None:
            parts = urlsplit(self.opa_url)
            ok = (parts.scheme in {"http", "https"} and bool(parts.netloc)) or (
                # unix://run/opa.sock would parse as host "run", path "/opa.sock": refuse it
                parts.scheme == "unix" and not parts.netloc and bool(parts.path)
            )
            _check(ok, "PDP_OPA_URL", self.opa_url, "must be http(s)://host:port or unix:///path")
        for domain, path in self.trust_bundles.items():
            _check(domain != "", "PDP_TRUST_BUNDLES", domain, "trust domain must not be empty")
            _check(Path(path).is_file(), "PDP_TRUST_BUNDLES", str(path), "file does not exist")

    def _check_approvals(self) -> None:
        _check(
            60 <= self.approval_pending_ttl_s <= 7 * 24 * 3600,
            "PDP_APPROVAL_PENDING_TTL_S",
            self.approval_pending_ttl_s,
            "must be 60..604800 seconds",
        )
        _check(
            self.approver_token is None or len(self.approver_token) >= 16,
            "PDP_APPROVER_TOKEN",
            "<hidden>",
            "must be >= 16 chars",
        )
        _check(
            self.approver_token_file is None or Path(self.approver_token_file).is_file(),
            "PDP_APPROVER_TOKEN_FILE",
            str(self.approver_token_file),
            "file does not exist",
        )
        issuer, jwks = self.user_assertion_issuer, self.user_assertion_jwks
        _check(
            (issuer is None) == (jwks is None),
            "PDP_USER_ASSERTION_ISSUER",
            issuer,
            "needs PDP_USER_ASSERTION_JWKS (and the reverse)",
        )
        _check(
            jwks is None or Path(jwks).is_file(),
            "PDP_USER_ASSERTION_JWKS",
            str(jwks),
            "file does not exist",
        )

    def _check_audit(self) -> None:
        _check(
            self.audit_fsync in AUDIT_FSYNC_MODES,
            "PDP_AUDIT_FSYNC",
            self.audit_fsync,
            "must be " + ", ".join(AUDIT_FSYNC_MODES),
        )
        _check(
            self.audit_prompt in AUDIT_PROMPT_MODES,
            "PDP_AUDIT_PROMPT",
            self.audit_prompt,
            "must be " + ", ".join(AUDIT_PROMPT_MODES),
        )
        _check(
            self.audit_segment_max_bytes >= 4096,
            "PDP_AUDIT_SEGMENT_MAX_BYTES",
            self.audit_segment_max_bytes,
            "must be >= 4096",
        )
        _check(
            0 <= self.audit_commit_delay_ms <= 100,
            "PDP_AUDIT_COMMIT_DELAY_MS",
            self.audit_commit_delay_ms,
            "must be 0..100",
        )
        for key, value in (
            ("PDP_AUDIT_SEGMENT_MAX_AGE_S", self.audit_segment_max_age_s),
            ("PDP_AUDIT_RETENTION_DAYS", self.audit_retention_days),
            ("PDP_AUDIT_RETENTION_MAX_BYTES", self.audit_retention_max_bytes),
        ):
            _check(value >= 0, key, value, "must be >= 0 (0: off)")
        _check(
            1 <= self.audit_forward_batch <= 10_000,
            "PDP_AUDIT_FORWARD_BATCH",
            self.audit_forward_batch,
            "must be 1..10000",
        )
        _check(
            self.audit_forward_max_backoff_s > 0,
            "PDP_AUDIT_FORWARD_MAX_BACKOFF_S",
            self.audit_forward_max_backoff_s,
            "must be > 0",
        )
        if self.audit_forward_url is not None:
            parts = urlsplit(self.audit_forward_url)
            _check(
                parts.scheme in {"http", "https"} and bool(parts.netloc),
                "PDP_AUDIT_FORWARD_URL",
                self.audit_forward_url,
                "must be an http(s):// URL",
            )

    def _check_audit_signing(self) -> None:
        _check(
            self.audit_checkpoint_every >= 0,
            "PDP_AUDIT_CHECKPOINT_EVERY",
            self.audit_checkpoint_every,
            "must be >= 0 (0: only by time and at shutdown)",
        )
        _check(
            self.audit_checkpoint_interval_s >= 0,
            "PDP_AUDIT_CHECKPOINT_INTERVAL_S",
            self.audit_checkpoint_interval_s,
            "must be >= 0 (0: only by count and at shutdown)",
        )
        for key, file in (
            ("PDP_AUDIT_FORWARD_TOKEN_FILE", self.audit_forward_token_file),
            ("PDP_AUDIT_FORWARD_TLS_CERT", self.audit_forward_tls_cert),
            ("PDP_AUDIT_FORWARD_TLS_KEY", self.audit_forward_tls_key),
            ("PDP_AUDIT_FORWARD_TLS_CA", self.audit_forward_tls_ca),
            ("PDP_PROMPT_HASH_KEY_FILE", self.prompt_hash_key_file),
        ):
            _check(file is None or Path(file).is_file(), key, str(file), "file does not exist")
        _check(
            self.prompt_hash_key is None or len(self.prompt_hash_key) >= 16,
            "PDP_PROMPT_HASH_KEY",
            "<hidden>",
            "must be >= 16 chars",
        )

    def _check_bundles(self) -> None:
        for key, file in (
            ("PDP_OPA_CONFIG", self.opa_config),
            ("PDP_BUNDLE_VERIFICATION_KEY", self.bundle_verification_key),
        ):
            _check(file is None or Path(file).is_file(), key, str(file), "file does not exist")
        _check(
            self.opa_config is None or self.opa_url is None,
            "PDP_OPA_CONFIG",
            str(self.opa_config),
            "cannot be combined with PDP_OPA_URL (a remote OPA has its own configuration)",
        )
        _check(
            self.max_bundle_age_s >= 0,
            "PDP_MAX_BUNDLE_AGE_S",
            self.max_bundle_age_s,
            "must be >= 0 (0: no limit)",
        )
        _check(bool(self.bundle_key_id.strip()), "PDP_BUNDLE_KEY_ID", self.bundle_key_id, "empty")
        _check(
            1 <= self.shadow_queue_max <= 1_000_000,
            "PDP_SHADOW_QUEUE_MAX",
            self.shadow_queue_max,
            "must be 1..1000000",
        )
        for item in self.opa_set:
            _check("=" in item, "PDP_OPA_SET", item, "expected KEY=VALUE")

    @property
    def audit_keys_path(self) -> Path:
        """Where the audit-signing keys are: PDP_AUDIT_KEYS_DIR, else STATE_DIR/audit-keys."""
        return (
            self.audit_keys_dir
            if self.audit_keys_dir is not None
            else (self.state_dir / "audit-keys")
        )

    @property
    def audit_path(self) -> Path:
        """Where the audit trail is written: PDP_AUDIT_DIR, else STATE_DIR/audit."""
        return self.audit_dir if self.audit_dir is not None else self.state_dir / "audit"

    @property
    def embedded(self) -> bool:
        """True when the service runs its own OPA (no remote OPA configured)."""
        return self.opa_url is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``PDP_*`` variables from ``env`` (default: the process environment).

        Keyword ``overrides`` (e.g. from CLI flags) win over the environment; a ``None``
        override means "not given".
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            var = "PDP_" + f.name.upper()
            if var in env:
                values[f.name] = _parse(var, _field_types()[f.name], env[var], f.default)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check(ok: bool, key: str, value: object, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {message}")


#: The one boolean vocabulary of every PDP_* switch (case-insensitive).
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


@functools.cache
def _field_types() -> dict[str, Any]:
    """Settings field name -> its annotated type (resolved once, on first use)."""
    return get_type_hints(Settings)


def parse_bool(var: str, raw: str, default: bool) -> bool:
    """A switch: TRUE_WORDS or FALSE_WORDS; empty means the default."""
    word = raw.strip().lower()
    if word == "":
        return default
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{var}={raw!r}: must be true or false")


def _parse(var: str, kind: Any, raw: str, default: Any) -> Any:
    """Parse one PDP_* variable by the type of its Settings field.

    Numbers must parse; booleans use one vocabulary; an empty value is None for optional
    fields, an empty tuple or mapping for lists, the default for switches.
    """
    if kind is bool:
        return parse_bool(var, raw, bool(default))
    if kind is int or kind is float:
        try:
            return kind(raw)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise ConfigError(f"{var}={raw!r}: must be {noun}") from None
    optional = [a for a in get_args(kind) if a is not type(None)]
    if len(optional) == 1 and type(None) in get_args(kind):  # X | None: empty is None
        return _parse(var, optional[0], raw, None) if raw else None
    if kind is Path:
        return Path(raw)
    if kind == tuple[str, ...]:
        return tuple(d.strip() for d in raw.split(",") if d.strip())
    if kind == Mapping[str, Path]:
        return parse_trust_bundles(raw.split(",") if raw else [], var)
    if kind is str:
        return raw
    raise TypeError(f"Settings has a field of a type the loader cannot parse: {kind!r}")


def parse_trust_bundles(items: list[str] | tuple[str, ...], key: str) -> dict[str, Path]:
    """Parse ``DOMAIN=FILE`` items into a mapping; later items replace earlier ones."""
    out: dict[str, Path] = {}
    for item in items:
        domain, sep, path = item.strip().partition("=")
        if not sep or not domain or not path:
            raise ConfigError(f"{key}={item!r}: expected DOMAIN=FILE")
        out[domain.strip()] = Path(path.strip())
    return out


_GATEWAY_PREFIX = re.compile(r"spiffe://[a-z0-9._-]+(?:/[A-Za-z0-9._-]+)+/")


def _is_gateway_prefix(prefix: str) -> bool:
    """``spiffe://<trust domain>/<path>/`` (SPIFFE ID characters, no ``.`` or ``..``
    segment): a path prefix, so that ``.../gateways/`` does not also admit
    ``.../gateways-evil``."""
    if _GATEWAY_PREFIX.fullmatch(prefix) is None:
        return False
    return all(seg not in (".", "..") for seg in prefix[len("spiffe://") :].split("/")[1:-1])
