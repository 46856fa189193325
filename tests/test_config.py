"""Settings: PDP_* parsing, overrides, and validation errors that name the setting and value."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from pdp import config
from pdp.config import DEFAULT_DEV_TRUST_DOMAINS, ConfigError, Settings, parse_trust_bundles
from tests.conftest import ROOT


@pytest.fixture
def bundle_files(tmp_path: Path) -> tuple[Path, Path]:
    """Two existing trust bundle files (Settings checks that they exist)."""
    f1, f2 = tmp_path / "acme.json", tmp_path / "beta.json"
    f1.write_text("{}")
    f2.write_text("{}")
    return f1, f2


def test_defaults_are_the_embedded_loopback_dev_setup() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert (s.host, s.port, s.state_dir, s.audience) == (
        "127.0.0.1",
        8700,
        Path(".pdp-state"),
        "agent-pdp",
    )
    assert s.opa_url is None and s.embedded
    assert s.dev_trust_domains == DEFAULT_DEV_TRUST_DOMAINS
    assert s.trust_bundles == {}
    assert s.prompt_to_policy is False


# (variable, raw value, field, parsed value): one row per PDP_* variable.
ENV_CASES: list[tuple[str, str, str, Any]] = [
    ("PDP_HOST", "127.0.0.2", "host", "127.0.0.2"),
    ("PDP_PORT", "9000", "port", 9000),
    ("PDP_STATE_DIR", "/var/lib/pdp", "state_dir", Path("/var/lib/pdp")),
    ("PDP_AUDIENCE", "my-pdp", "audience", "my-pdp"),
    (
        "PDP_DEV_TRUST_DOMAINS",
        "a.example, b.example,",
        "dev_trust_domains",
        ("a.example", "b.example"),
    ),
    ("PDP_DEV_TRUST_DOMAINS", "", "dev_trust_domains", ()),
    ("PDP_OPA_URL", "http://opa:8181", "opa_url", "http://opa:8181"),
    ("PDP_OPA_URL", "https://opa.internal:443", "opa_url", "https://opa.internal:443"),
    ("PDP_OPA_URL", "unix:///run/opa/opa.sock", "opa_url", "unix:///run/opa/opa.sock"),
    ("PDP_OPA_URL", "", "opa_url", None),
    ("PDP_OPA_BINARY", "/usr/local/bin/opa", "opa_binary", "/usr/local/bin/opa"),
    ("PDP_OPA_BINARY", "", "opa_binary", None),
    ("PDP_POLICIES_DIR", "/etc/pdp/policies", "policies_dir", Path("/etc/pdp/policies")),
    ("PDP_OPA_TIMEOUT_MS", "250", "opa_timeout_ms", 250),
    ("PDP_OPA_START_TIMEOUT_S", "2.5", "opa_start_timeout_s", 2.5),
    ("PDP_MAX_BODY_BYTES", "1024", "max_body_bytes", 1024),
    ("PDP_CLOCK_SKEW_SECONDS", "0", "clock_skew_seconds", 0),
    ("PDP_CLOCK_SKEW_SECONDS", "300", "clock_skew_seconds", 300),
    ("PDP_TOKEN_CACHE_SIZE", "0", "token_cache_size", 0),
    ("PDP_PROMPT_TO_POLICY", "true", "prompt_to_policy", True),
    ("PDP_PROMPT_TO_POLICY", "YES", "prompt_to_policy", True),
    ("PDP_PROMPT_TO_POLICY", "1", "prompt_to_policy", True),
    ("PDP_PROMPT_TO_POLICY", "false", "prompt_to_policy", False),
    ("PDP_PROMPT_TO_POLICY", "no", "prompt_to_policy", False),
    ("PDP_PROMPT_TO_POLICY", "0", "prompt_to_policy", False),
    ("PDP_PROMPT_TO_POLICY", "", "prompt_to_policy", False),
    # One boolean vocabulary for every switch: 1/0, true/false, yes/no, on/off.
    ("PDP_PROMPT_TO_POLICY", "on", "prompt_to_policy", True),
    ("PDP_PROMPT_TO_POLICY", "Off", "prompt_to_policy", False),
    ("PDP_LOG_LEVEL", "debug", "log_level", "debug"),
    ("PDP_LOG_LEVEL", "WARNING", "log_level", "WARNING"),
]
# The audit trail's settings (docs/audit.md).
ENV_CASES += [
    ("PDP_AUDIT_ENABLED", "false", "audit_enabled", False),
    ("PDP_AUDIT_ENABLED", "on", "audit_enabled", True),
    ("PDP_AUDIT_ENABLED", "no", "audit_enabled", False),
    ("PDP_AUDIT_ENABLED", "0", "audit_enabled", False),
    ("PDP_AUDIT_ENABLED", "", "audit_enabled", True),  # empty: the default (on)
    ("PDP_AUDIT_DIR", "/var/log/pdp-audit", "audit_dir", Path("/var/log/pdp-audit")),
    ("PDP_AUDIT_DIR", "", "audit_dir", None),
    ("PDP_AUDIT_FSYNC", "always", "audit_fsync", "always"),
    ("PDP_AUDIT_FSYNC", "off", "audit_fsync", "off"),
    ("PDP_AUDIT_COMMIT_DELAY_MS", "0", "audit_commit_delay_ms", 0.0),
    ("PDP_AUDIT_COMMIT_DELAY_MS", "2.5", "audit_commit_delay_ms", 2.5),
    ("PDP_AUDIT_PROMPT", "redacted", "audit_prompt", "redacted"),
    ("PDP_AUDIT_PROMPT", "full", "audit_prompt", "full"),
    ("PDP_AUDIT_SEGMENT_MAX_BYTES", "1048576", "audit_segment_max_bytes", 1048576),
    ("PDP_AUDIT_SEGMENT_MAX_AGE_S", "0", "audit_segment_max_age_s", 0.0),
    ("PDP_AUDIT_RETENTION_DAYS", "90", "audit_retention_days", 90.0),
    ("PDP_AUDIT_RETENTION_MAX_BYTES", "10000000", "audit_retention_max_bytes", 10_000_000),
    (
        "PDP_AUDIT_FORWARD_URL",
        "https://logs.example/logs",
        "audit_forward_url",
        "https://logs.example/logs",
    ),
    ("PDP_AUDIT_FORWARD_URL", "", "audit_forward_url", None),
    ("PDP_AUDIT_FORWARD_BATCH", "100", "audit_forward_batch", 100),
    ("PDP_AUDIT_FORWARD_MAX_BACKOFF_S", "2.5", "audit_forward_max_backoff_s", 2.5),
]


# Credentials, admin API and store settings (docs/credentials.md).
_A_FILE = str(Path(__file__))
ENV_CASES += [
    ("PDP_ISSUER", "https://pdp.acme.example", "issuer", "https://pdp.acme.example"),
    ("PDP_CREDENTIAL_ALG", "ES384", "credential_alg", "ES384"),
    ("PDP_CREDENTIAL_MAX_TTL_S", "600", "credential_max_ttl_s", 600),
    ("PDP_CREDENTIAL_DEFAULT_TTL_S", "30", "credential_default_ttl_s", 30),
    ("PDP_ADMIN_TOKEN", "a" * 16, "admin_token", "a" * 16),
    ("PDP_ADMIN_TOKEN", "", "admin_token", None),
    ("PDP_ADMIN_TOKEN_FILE", _A_FILE, "admin_token_file", Path(_A_FILE)),
    ("PDP_INTROSPECTION_TOKEN", "b" * 20, "introspection_token", "b" * 20),
    ("PDP_INTROSPECTION_TOKEN_FILE", _A_FILE, "introspection_token_file", Path(_A_FILE)),
    ("PDP_STORE_URL", "redis://127.0.0.1:6379/0", "store_url", "redis://127.0.0.1:6379/0"),
    ("PDP_STORE_URL", "sqlite:///var/lib/pdp.db", "store_url", "sqlite:///var/lib/pdp.db"),
    ("PDP_STORE_REFRESH_S", "0.25", "store_refresh_s", 0.25),
    ("PDP_SESSION_TTL_S", "3600", "session_ttl_s", 3600.0),
]
ENV_CASES += [
    ("PDP_DECISION_CACHE_SIZE", "0", "decision_cache_size", 0),
    ("PDP_DECISION_CACHE_SIZE", "500", "decision_cache_size", 500),
    ("PDP_DECISION_CACHE_MAX_TTL_S", "5", "decision_cache_max_ttl_s", 5),
    ("PDP_DECISION_CACHE_BUNDLE_CHECK_MS", "100", "decision_cache_bundle_check_ms", 100),
    ("PDP_EVENT_LOOP", "asyncio", "event_loop", "asyncio"),
    ("PDP_EVENT_LOOP", "uvloop", "event_loop", "uvloop"),
]

# Signed checkpoints, forwarding auth, keyed prompt hashes (docs/audit.md).
ENV_CASES += [
    ("PDP_AUDIT_SIGNING", "false", "audit_signing", False),
    (
        "PDP_AUDIT_KEYS_DIR",
        "/var/lib/pdp/audit-keys",
        "audit_keys_dir",
        Path("/var/lib/pdp/audit-keys"),
    ),
    ("PDP_AUDIT_CHECKPOINT_EVERY", "50", "audit_checkpoint_every", 50),
    ("PDP_AUDIT_CHECKPOINT_INTERVAL_S", "2.5", "audit_checkpoint_interval_s", 2.5),
    ("PDP_AUDIT_FORWARD_TOKEN", "c" * 20, "audit_forward_token", "c" * 20),
    ("PDP_AUDIT_FORWARD_TOKEN_FILE", _A_FILE, "audit_forward_token_file", Path(_A_FILE)),
    ("PDP_AUDIT_FORWARD_TLS_CERT", _A_FILE, "audit_forward_tls_cert", Path(_A_FILE)),
    ("PDP_AUDIT_FORWARD_TLS_KEY", _A_FILE, "audit_forward_tls_key", Path(_A_FILE)),
    ("PDP_AUDIT_FORWARD_TLS_CA", _A_FILE, "audit_forward_tls_ca", Path(_A_FILE)),
    ("PDP_PROMPT_HASH_KEY", "d" * 32, "prompt_hash_key", "d" * 32),
    ("PDP_PROMPT_HASH_KEY_FILE", _A_FILE, "prompt_hash_key_file", Path(_A_FILE)),
]

# Production mode and shadow evaluation (docs/bundles.md).
ENV_CASES += [
    ("PDP_OPA_CONFIG", _A_FILE, "opa_config", Path(_A_FILE)),
    ("PDP_BUNDLE_VERIFICATION_KEY", _A_FILE, "bundle_verification_key", Path(_A_FILE)),
    ("PDP_BUNDLE_KEY_ID", "team-key", "bundle_key_id", "team-key"),
    ("PDP_OPA_SET", "a.b=1, c.d=2", "opa_set", ("a.b=1", "c.d=2")),
    ("PDP_MAX_BUNDLE_AGE_S", "3600", "max_bundle_age_s", 3600.0),
    (
        "PDP_SHADOW_BUNDLE",
        "oci://127.0.0.1:5000/p/pdp:v2",
        "shadow_bundle",
        "oci://127.0.0.1:5000/p/pdp:v2",
    ),
    ("PDP_SHADOW_QUEUE_MAX", "10", "shadow_queue_max", 10),
]

# The Envoy ext_authz front doors (docs/gateways.md).
ENV_CASES += [
    ("PDP_EXT_AUTHZ_GRPC_PORT", "9191", "ext_authz_grpc_port", 9191),
    ("PDP_EXT_AUTHZ_GRPC_PORT", "0", "ext_authz_grpc_port", 0),
    ("PDP_EXT_AUTHZ_GRPC_PORT", "", "ext_authz_grpc_port", None),
    ("PDP_EXT_AUTHZ_ROUTES", _A_FILE, "ext_authz_routes", Path(_A_FILE)),
    ("PDP_EXT_AUTHZ_ROUTES", "", "ext_authz_routes", None),
]

# Approvals and user assertions (docs/approvals.md, docs/policy-authoring.md).
ENV_CASES += [
    ("PDP_APPROVAL_PENDING_TTL_S", "600", "approval_pending_ttl_s", 600),
    ("PDP_APPROVER_TOKEN", "c" * 16, "approver_token", "c" * 16),
    ("PDP_APPROVER_TOKEN_FILE", _A_FILE, "approver_token_file", Path(_A_FILE)),
    ("PDP_USER_ASSERTION_AUDIENCE", "pdp-users", "user_assertion_audience", "pdp-users"),
]


# The trust boundary (docs/security.md); TLS and client-CA settings need each other, so
# they are read together (PAIRED_CASES below).
ENV_CASES += [
    ("PDP_CALLER_KEYS", _A_FILE, "caller_keys", Path(_A_FILE)),
    ("PDP_INSECURE_NO_CALLER_AUTH", "true", "insecure_no_caller_auth", True),
    ("PDP_ADMIN_HOST", "127.0.0.9", "admin_host", "127.0.0.9"),
    ("PDP_ADMIN_PORT", "9001", "admin_port", 9001),
    ("PDP_MAX_IN_FLIGHT", "8", "max_in_flight", 8),
    ("PDP_MAX_CONNECTIONS", "100", "max_connections", 100),
    ("PDP_HEADER_TIMEOUT_S", "2.5", "header_timeout_s", 2.5),
    ("PDP_BODY_TIMEOUT_S", "3", "body_timeout_s", 3.0),
    ("PDP_TRUST_BUNDLE_REFRESH_S", "0", "trust_bundle_refresh_s", 0.0),
    ("PDP_SVID_MAX_LIFETIME_S", "3600", "svid_max_lifetime_s", 3600),
    ("PDP_AUDIT_MAX_VALUE_BYTES", "1024", "audit_max_value_bytes", 1024),
    ("PDP_STORE_PASSWORD_FILE", _A_FILE, "store_password_file", Path(_A_FILE)),
]
PAIRED_ENV = {
    "PDP_TLS_CERT": _A_FILE,
    "PDP_TLS_KEY": _A_FILE,
    "PDP_CLIENT_CA": _A_FILE,
    "PDP_CLIENT_TRUST_DOMAIN": "gateways.example",
    "PDP_CLIENT_ID_PREFIX": "spiffe://acme.example/gateways/",
}


def test_tls_and_client_ca_settings_are_read_together() -> None:
    s = Settings.from_env(PAIRED_ENV)
    assert (s.tls_cert, s.tls_key, s.client_ca, s.client_trust_domain) == (
        Path(_A_FILE),
        Path(_A_FILE),
        Path(_A_FILE),
        "gateways.example",
    )


@pytest.mark.parametrize(
    ("var", "raw", "name", "expected"), ENV_CASES, ids=[f"{c[0]}={c[1]!r}" for c in ENV_CASES]
)
def test_from_env_parses_each_variable(var: str, raw: str, name: str, expected: Any) -> None:
    s = Settings.from_env({var: raw})
    assert getattr(s, name) == expected
    # ...and leaves every other setting at its default
    others = {f.name for f in dataclasses.fields(Settings)} - {name}
    assert {n: getattr(s, n) for n in others} == {n: getattr(Settings(), n) for n in others}


def test_every_setting_has_an_env_case() -> None:
    assert {f.name for f in dataclasses.fields(Settings)} == {c[2] for c in ENV_CASES} | {
        "trust_bundles",  # needs files: tested below
        "user_assertion_issuer",  # a pair: tested below
        "user_assertion_jwks",
        *(k.removeprefix("PDP_").lower() for k in PAIRED_ENV),
    }


@pytest.mark.parametrize(
    "prefix",
    [
        "spiffe://acme.example/gateways",  # no trailing '/': would admit gateways-evil
        "spiffe://acme.example/",  # the whole trust domain, agents included
        "spiffe://acme.example",
        "spiffe://ACME.example/gateways/",
        "spiffe://acme.example/../gateways/",
        "spiffe://acme.example/a//gateways/",
        "https://acme.example/gateways/",
        "spiffe://acme.example/gate ways/",
    ],
)
def test_a_gateway_id_prefix_must_be_a_spiffe_path_prefix(prefix: str) -> None:
    env = {**PAIRED_ENV, "PDP_CLIENT_ID_PREFIX": prefix}
    with pytest.raises(ConfigError, match="PDP_CLIENT_ID_PREFIX"):
        Settings.from_env(env)


def test_a_gateway_id_prefix_needs_client_certificates() -> None:
    with pytest.raises(ConfigError, match="PDP_CLIENT_ID_PREFIX"):
        Settings.from_env({"PDP_CLIENT_ID_PREFIX": "spiffe://acme.example/gateways/"})


def test_user_assertions_need_both_issuer_and_jwks() -> None:
    s = Settings.from_env(
        {"PDP_USER_ASSERTION_ISSUER": "https://idp.example", "PDP_USER_ASSERTION_JWKS": _A_FILE}
    )
    assert (s.user_assertion_issuer, s.user_assertion_jwks) == (
        "https://idp.example",
        Path(_A_FILE),
    )
    with pytest.raises(ConfigError, match="PDP_USER_ASSERTION_ISSUER"):
        Settings.from_env({"PDP_USER_ASSERTION_ISSUER": "https://idp.example"})
    with pytest.raises(ConfigError, match="PDP_USER_ASSERTION_JWKS"):
        Settings.from_env(
            {"PDP_USER_ASSERTION_ISSUER": "https://idp.example", "PDP_USER_ASSERTION_JWKS": "/no"}
        )


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"PDP_APPROVAL_PENDING_TTL_S": "10"}, "PDP_APPROVAL_PENDING_TTL_S"),
        ({"PDP_APPROVER_TOKEN": "short"}, "PDP_APPROVER_TOKEN"),
        ({"PDP_APPROVER_TOKEN_FILE": "/no/such/file"}, "PDP_APPROVER_TOKEN_FILE"),
    ],
)
def test_bad_approval_settings_are_refused(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        Settings.from_env(env)


def test_trust_bundles_parse_domain_file_pairs(bundle_files: tuple[Path, Path]) -> None:
    f1, f2 = bundle_files
    s = Settings.from_env({"PDP_TRUST_BUNDLES": f"acme.example={f1}, beta.example = {f2}"})
    assert s.trust_bundles == {"acme.example": f1, "beta.example": f2}


def test_trust_bundles_empty_means_none() -> None:
    assert Settings.from_env({"PDP_TRUST_BUNDLES": ""}).trust_bundles == {}


def test_trust_bundles_later_item_replaces_earlier(bundle_files: tuple[Path, Path]) -> None:
    f1, f2 = bundle_files
    assert parse_trust_bundles([f"a={f1}", f"a={f2}"], "--trust-bundle") == {"a": f2}


@pytest.mark.parametrize("item", ["acme.example", "=f1", "acme.example=", "acme.example=  ", " = "])
def test_trust_bundles_malformed_item_is_named(item: str, bundle_files: tuple[Path, Path]) -> None:
    raw = f"ok.example={bundle_files[0]},{item}"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"PDP_TRUST_BUNDLES": raw})
    assert str(info.value) == f"PDP_TRUST_BUNDLES={item!r}: expected DOMAIN=FILE"


def test_trust_bundles_flag_errors_name_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--trust-bundle='acme': expected DOMAIN=FILE$"):
        parse_trust_bundles(["acme"], "--trust-bundle")


def test_overrides_win_over_env(tmp_path: Path) -> None:
    env = {"PDP_PORT": "9000", "PDP_HOST": "::1", "PDP_STATE_DIR": "/var/lib/pdp"}
    s = Settings.from_env(env, port=9100, state_dir=tmp_path)
    assert (s.port, s.host, s.state_dir) == (9100, "::1", tmp_path)


def test_none_overrides_are_ignored() -> None:
    env = {"PDP_PORT": "9000", "PDP_OPA_URL": "http://opa:8181"}
    s = Settings.from_env(env, port=None, opa_url=None, audience=None)
    assert (s.port, s.opa_url, s.audience) == (9000, "http://opa:8181", "agent-pdp")


def test_empty_tuple_override_disables_dev_trust() -> None:
    """`serve --no-dev-trust` passes () which is not None: it must win over the env."""
    s = Settings.from_env({"PDP_DEV_TRUST_DOMAINS": "a.example"}, dev_trust_domains=())
    assert s.dev_trust_domains == ()


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDP_PORT", "9001")
    assert Settings.from_env().port == 9001


def test_unknown_pdp_variables_are_ignored() -> None:
    assert Settings.from_env({"PDP_URL": "http://x", "PDP_REGAL_BINARY": "/r"}) == Settings()


# (variable, raw value, message): the error must read exactly "VAR=<value>: <message>".
INVALID_ENV: list[tuple[str, str, str]] = [
    ("PDP_PORT", "0", "PDP_PORT=0: must be 1..65535"),
    ("PDP_PORT", "70000", "PDP_PORT=70000: must be 1..65535"),
    ("PDP_PORT", "-1", "PDP_PORT=-1: must be 1..65535"),
    ("PDP_PORT", "http", "PDP_PORT='http': must be an integer"),
    ("PDP_PORT", "", "PDP_PORT='': must be an integer"),
    ("PDP_HOST", "", "PDP_HOST='': must not be empty"),
    ("PDP_AUDIENCE", " ", "PDP_AUDIENCE=' ': must not be empty"),
    ("PDP_OPA_TIMEOUT_MS", "0", "PDP_OPA_TIMEOUT_MS=0: must be > 0"),
    ("PDP_OPA_TIMEOUT_MS", "-5", "PDP_OPA_TIMEOUT_MS=-5: must be > 0"),
    ("PDP_OPA_TIMEOUT_MS", "abc", "PDP_OPA_TIMEOUT_MS='abc': must be an integer"),
    ("PDP_OPA_TIMEOUT_MS", "1.5", "PDP_OPA_TIMEOUT_MS='1.5': must be an integer"),
    ("PDP_OPA_START_TIMEOUT_S", "0", "PDP_OPA_START_TIMEOUT_S=0.0: must be > 0"),
    ("PDP_OPA_START_TIMEOUT_S", "soon", "PDP_OPA_START_TIMEOUT_S='soon': must be a number"),
    ("PDP_MAX_BODY_BYTES", "0", "PDP_MAX_BODY_BYTES=0: must be > 0"),
    ("PDP_MAX_BODY_BYTES", "1MB", "PDP_MAX_BODY_BYTES='1MB': must be an integer"),
    ("PDP_CLOCK_SKEW_SECONDS", "-1", "PDP_CLOCK_SKEW_SECONDS=-1: must be 0..300"),
    ("PDP_CLOCK_SKEW_SECONDS", "301", "PDP_CLOCK_SKEW_SECONDS=301: must be 0..300"),
    ("PDP_TOKEN_CACHE_SIZE", "-1", "PDP_TOKEN_CACHE_SIZE=-1: >= 0"),
    ("PDP_PROMPT_TO_POLICY", "maybe", "PDP_PROMPT_TO_POLICY='maybe': must be true or false"),
    ("PDP_PROMPT_TO_POLICY", "enabled", "PDP_PROMPT_TO_POLICY='enabled': must be true or false"),
    ("PDP_AUDIT_ENABLED", "2", "PDP_AUDIT_ENABLED='2': must be true or false"),
    ("PDP_LOG_LEVEL", "verbose", "PDP_LOG_LEVEL='verbose': must be DEBUG, INFO, WARNING or ERROR"),
    ("PDP_LOG_LEVEL", "", "PDP_LOG_LEVEL='': must be DEBUG, INFO, WARNING or ERROR"),
    ("PDP_OPA_URL", "ftp://opa:8181", "PDP_OPA_URL='ftp://opa:8181': " + "{url}"),
    ("PDP_OPA_URL", "opa:8181", "PDP_OPA_URL='opa:8181': {url}"),
    ("PDP_OPA_URL", "localhost", "PDP_OPA_URL='localhost': {url}"),
    ("PDP_OPA_URL", "http://", "PDP_OPA_URL='http://': {url}"),
    ("PDP_OPA_URL", "http:///v1", "PDP_OPA_URL='http:///v1': {url}"),
    ("PDP_OPA_URL", "unix://", "PDP_OPA_URL='unix://': {url}"),
    ("PDP_OPA_URL", "unix:", "PDP_OPA_URL='unix:': {url}"),
    ("PDP_OPA_URL", "unix://opa.sock", "PDP_OPA_URL='unix://opa.sock': {url}"),
    ("PDP_OPA_URL", "unix://run/opa.sock", "PDP_OPA_URL='unix://run/opa.sock': {url}"),
]
INVALID_ENV += [
    ("PDP_AUDIT_ENABLED", "maybe", "PDP_AUDIT_ENABLED='maybe': must be true or false"),
    ("PDP_AUDIT_FSYNC", "sometimes", "PDP_AUDIT_FSYNC='sometimes': must be batch, always, off"),
    ("PDP_AUDIT_PROMPT", "text", "PDP_AUDIT_PROMPT='text': must be hash, redacted, full"),
    ("PDP_AUDIT_COMMIT_DELAY_MS", "101", "PDP_AUDIT_COMMIT_DELAY_MS=101.0: must be 0..100"),
    ("PDP_AUDIT_COMMIT_DELAY_MS", "soon", "PDP_AUDIT_COMMIT_DELAY_MS='soon': must be a number"),
    ("PDP_AUDIT_SEGMENT_MAX_BYTES", "100", "PDP_AUDIT_SEGMENT_MAX_BYTES=100: must be >= 4096"),
    ("PDP_AUDIT_SEGMENT_MAX_BYTES", "1G", "PDP_AUDIT_SEGMENT_MAX_BYTES='1G': must be an integer"),
    (
        "PDP_AUDIT_SEGMENT_MAX_AGE_S",
        "-1",
        "PDP_AUDIT_SEGMENT_MAX_AGE_S=-1.0: must be >= 0 (0: off)",
    ),
    ("PDP_AUDIT_RETENTION_DAYS", "week", "PDP_AUDIT_RETENTION_DAYS='week': must be a number"),
    (
        "PDP_AUDIT_RETENTION_MAX_BYTES",
        "-1",
        "PDP_AUDIT_RETENTION_MAX_BYTES=-1: must be >= 0 (0: off)",
    ),
    (
        "PDP_AUDIT_FORWARD_URL",
        "collector",
        "PDP_AUDIT_FORWARD_URL='collector': must be an http(s):// URL",
    ),
    ("PDP_AUDIT_FORWARD_BATCH", "0", "PDP_AUDIT_FORWARD_BATCH=0: must be 1..10000"),
    ("PDP_AUDIT_FORWARD_MAX_BACKOFF_S", "0", "PDP_AUDIT_FORWARD_MAX_BACKOFF_S=0.0: must be > 0"),
]
INVALID_ENV += [
    ("PDP_ISSUER", " ", "PDP_ISSUER=' ': must not be empty"),
    ("PDP_CREDENTIAL_ALG", "HS256", "PDP_CREDENTIAL_ALG='HS256': must be ES256, ES384 or ES512"),
    ("PDP_CREDENTIAL_MAX_TTL_S", "0", "PDP_CREDENTIAL_MAX_TTL_S=0: must be 1..3600"),
    ("PDP_CREDENTIAL_MAX_TTL_S", "1h", "PDP_CREDENTIAL_MAX_TTL_S='1h': must be an integer"),
    (
        "PDP_CREDENTIAL_DEFAULT_TTL_S",
        "301",
        "PDP_CREDENTIAL_DEFAULT_TTL_S=301: must be 1..PDP_CREDENTIAL_MAX_TTL_S (300)",
    ),
    # A secret is never echoed, even when refused.
    ("PDP_ADMIN_TOKEN", "short-secret", "PDP_ADMIN_TOKEN='<hidden>': must be >= 16 chars"),
    ("PDP_ADMIN_TOKEN_FILE", "/no/such", "PDP_ADMIN_TOKEN_FILE='/no/such': file does not exist"),
    (
        "PDP_STORE_URL",
        "memcached://:pw@h",
        "PDP_STORE_URL='memcached://...': must be sqlite:///path, redis://host:port/db, "
        "rediss://... or unix:///sock",
    ),
    ("PDP_STORE_REFRESH_S", "0", "PDP_STORE_REFRESH_S=0.0: 0..60"),
    ("PDP_DECISION_CACHE_SIZE", "-1", "PDP_DECISION_CACHE_SIZE=-1: must be 0..10000000 (0: off)"),
    ("PDP_DECISION_CACHE_SIZE", "ten", "PDP_DECISION_CACHE_SIZE='ten': must be an integer"),
    ("PDP_DECISION_CACHE_MAX_TTL_S", "0", "PDP_DECISION_CACHE_MAX_TTL_S=0: must be 1..3600"),
    ("PDP_EVENT_LOOP", "trio", "PDP_EVENT_LOOP='trio': must be auto, uvloop or asyncio"),
    (
        "PDP_DECISION_CACHE_BUNDLE_CHECK_MS",
        "1",
        "PDP_DECISION_CACHE_BUNDLE_CHECK_MS=1: must be 10..60000",
    ),
]
INVALID_ENV += [
    (
        "PDP_AUDIT_CHECKPOINT_EVERY",
        "-1",
        "PDP_AUDIT_CHECKPOINT_EVERY=-1: must be >= 0 (0: only by time and at shutdown)",
    ),
    ("PDP_PROMPT_HASH_KEY", "short", "PDP_PROMPT_HASH_KEY='<hidden>': must be >= 16 chars"),
    ("PDP_OPA_SET", "novalue", "PDP_OPA_SET='novalue': expected KEY=VALUE"),
    ("PDP_MAX_BUNDLE_AGE_S", "-1", "PDP_MAX_BUNDLE_AGE_S=-1.0: must be >= 0 (0: no limit)"),
    ("PDP_SHADOW_QUEUE_MAX", "0", "PDP_SHADOW_QUEUE_MAX=0: must be 1..1000000"),
    (
        "PDP_AUDIT_FORWARD_TLS_CA",
        "/no/such",
        "PDP_AUDIT_FORWARD_TLS_CA='/no/such': file does not exist",
    ),
    ("PDP_EXT_AUTHZ_GRPC_PORT", "65536", "PDP_EXT_AUTHZ_GRPC_PORT=65536: 0..65535"),
    ("PDP_EXT_AUTHZ_GRPC_PORT", "grpc", "PDP_EXT_AUTHZ_GRPC_PORT='grpc': must be an integer"),
    ("PDP_EXT_AUTHZ_ROUTES", "/no/such", "PDP_EXT_AUTHZ_ROUTES='/no/such': file does not exist"),
]
_URL_MESSAGE = "must be http(s)://host:port or unix:///path"


@pytest.mark.parametrize(
    ("var", "raw", "message"), INVALID_ENV, ids=[f"{c[0]}={c[1]!r}" for c in INVALID_ENV]
)
def test_invalid_value_names_the_variable_and_value(var: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({var: raw})
    assert str(info.value) == message.format(url=_URL_MESSAGE)


def test_missing_trust_bundle_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"PDP_TRUST_BUNDLES": f"acme.example={missing}"})
    assert str(info.value) == f"PDP_TRUST_BUNDLES={str(missing)!r}: file does not exist"


def test_trust_bundle_that_is_a_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PDP_TRUST_BUNDLES=.*: file does not exist"):
        Settings(trust_bundles={"acme.example": tmp_path})


def test_invalid_override_is_rejected_like_env() -> None:
    """Flags go through the same validation (the CLI shows this message for --port 0)."""
    with pytest.raises(ConfigError, match=r"^PDP_PORT=0: must be 1\.\.65535$"):
        Settings.from_env({}, port=0)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


def test_the_event_loop_is_uvloop_when_installed_and_asyncio_on_request() -> None:
    import asyncio

    import uvloop

    from pdp.eventloop import loop_name, new_event_loop

    assert loop_name("auto") == "uvloop"  # installed with the dev extra
    for choice, kind in (("auto", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)):
        loop = new_event_loop(choice)
        try:
            assert isinstance(loop, kind)
        finally:
            loop.close()


def test_insisting_on_uvloop_without_it_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from pdp import eventloop

    monkeypatch.setattr(eventloop, "uvloop_available", lambda: False)
    assert eventloop.loop_name("auto") == "asyncio"
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        eventloop.loop_name("uvloop")


# --------------------------------------------------------------------------- one loader


def test_every_setting_is_read_from_its_variable_by_its_type() -> None:
    """The loader parses by the field's type: a new field needs no parser of its own."""
    for f in dataclasses.fields(Settings):
        assert f.name in config._field_types(), f.name
        kind = config._field_types()[f.name]
        if kind in (int, float):
            raw = "7"
        elif kind is bool:
            raw = "on"
        else:
            continue
        parsed = config._parse("PDP_" + f.name.upper(), kind, raw, f.default)
        assert parsed == (True if kind is bool else kind(raw)), f.name


def test_every_setting_is_documented_once_in_operations_md_with_its_default() -> None:
    table = (ROOT / "docs" / "operations.md").read_text().split("## Settings", 1)[1]
    rows = [line for line in table.split("\n## ", 1)[0].splitlines() if line.startswith("| `PDP_")]
    documented: dict[str, str] = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        names = re.findall(r"`(PDP_[A-Z0-9_]+)`", cells[0])
        defaults = [d.strip() for d in cells[2].split(",")] if len(names) > 1 else [cells[2]]
        for name, default in zip(names, defaults + [""] * len(names), strict=False):
            assert name not in documented, f"{name} is documented twice"
            documented[name] = default
    for f in dataclasses.fields(Settings):
        var = "PDP_" + f.name.upper()
        assert var in documented, f"{var} is not documented in docs/operations.md"
        default = documented[var]
        value = f.default if f.default is not dataclasses.MISSING else None
        literal = re.match(r"`([^`]*)`", default)
        if isinstance(value, bool):
            assert literal and literal.group(1) == str(value).lower(), var
        elif isinstance(value, int | float):
            assert literal and float(literal.group(1)) == float(value), var
        elif isinstance(value, str) and literal:
            assert literal.group(1) == value, var
