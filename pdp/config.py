"""Settings: one frozen dataclass, read once from the environment and flags, validated at start.

Every field has a ``PDP_*`` environment variable; `pdpctl serve` flags override them.
No secret has a default: the only key material the service uses by default is generated
into the state directory on first start (the dev trust domains).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting has a bad value; the message names the setting and the value."""


DEFAULT_DEV_TRUST_DOMAINS = ("acme.example", "globex.example")


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
                values[f.name] = _parse(f.name, var, env[var])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _check(ok: bool, key: str, value: object, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {message}")


_INT_FIELDS = {
    "port",
    "opa_timeout_ms",
    "max_body_bytes",
    "clock_skew_seconds",
    "token_cache_size",
}


def _parse(name: str, var: str, raw: str) -> Any:
    if name in _INT_FIELDS:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r}: must be an integer") from None
    if name == "opa_start_timeout_s":
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r}: must be a number") from None
    if name == "prompt_to_policy":
        if raw.lower() not in {"1", "true", "yes", "0", "false", "no", ""}:
            raise ConfigError(f"{var}={raw!r}: must be true or false")
        return raw.lower() in {"1", "true", "yes"}
    if name in {"state_dir", "policies_dir"}:
        return Path(raw)
    if name == "dev_trust_domains":
        return tuple(d.strip() for d in raw.split(",") if d.strip())
    if name == "trust_bundles":
        return parse_trust_bundles(raw.split(",") if raw else [], var)
    if name in {"opa_url", "opa_binary"}:
        return raw or None
    return raw


def parse_trust_bundles(items: list[str] | tuple[str, ...], key: str) -> dict[str, Path]:
    """Parse ``DOMAIN=FILE`` items into a mapping; later items replace earlier ones."""
    out: dict[str, Path] = {}
    for item in items:
        domain, sep, path = item.strip().partition("=")
        if not sep or not domain or not path:
            raise ConfigError(f"{key}={item!r}: expected DOMAIN=FILE")
        out[domain.strip()] = Path(path.strip())
    return out
