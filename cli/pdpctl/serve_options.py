"""`pdpctl serve` options of production mode and shadow evaluation (docs/bundles.md).

:func:`supply_options` adds them to ``serve`` and hands the command one ``supply`` dict of
:class:`~pdp.config.Settings` overrides (None: not given, the environment decides).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | None, flag: str) -> float | None:
    """``90`` or ``90s``, ``30m``, ``24h``, ``7d`` -> seconds."""
    if value is None:
        return None
    m = _DURATION.match(value.strip())
    if m is None:
        raise click.BadParameter(
            f"{value!r}: expected seconds or 90s, 30m, 24h, 7d", param_hint=flag
        )
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def supply_options(f: F) -> F:
    """Add the production-mode options to ``serve``; pass ``supply`` (Settings overrides)."""

    @click.option(
        "--opa-config",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        envvar="PDP_OPA_CONFIG",
        show_envvar=True,
        help="Run the sidecar OPA with this configuration (bundle service, signing, polling, "
        "persist: opa-config.yaml) instead of building policies/ (production mode).",
    )
    @click.option(
        "--bundle-verification-key",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        envvar="PDP_BUNDLE_VERIFICATION_KEY",
        show_envvar=True,
        help="PEM public key bundles must be signed with (OPA --set-file keys.KEYID.key).",
    )
    @click.option(
        "--bundle-key-id",
        envvar="PDP_BUNDLE_KEY_ID",
        show_envvar=True,
        help="Name of that key in the configuration's keys [pdp-bundle-signing].",
    )
    @click.option(
        "--max-bundle-age",
        help="Not ready when the active bundle was last confirmed by the registry longer ago "
        "than this (90s, 30m, 24h). Env: PDP_MAX_BUNDLE_AGE_S (seconds).",
    )
    @click.option(
        "--opa-set",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a value of the OPA configuration (OPA's --set; repeatable), e.g. "
        "bundles.pdp.polling.min_delay_seconds=1.",
    )
    @click.option(
        "--shadow-bundle",
        envvar="PDP_SHADOW_BUNDLE",
        show_envvar=True,
        metavar="FILE|oci://HOST/REPO:TAG",
        help="Also evaluate every live decision, off the answer path, on this candidate "
        "bundle; differences go to the shadow log (`pdpctl shadow report`), never enforced.",
    )
    @functools.wraps(f)
    def wrapper(
        *args: Any,
        opa_config: Path | None,
        bundle_verification_key: Path | None,
        bundle_key_id: str | None,
        max_bundle_age: str | None,
        opa_set: tuple[str, ...],
        shadow_bundle: str | None,
        **kwargs: Any,
    ) -> Any:
        supply: dict[str, Any] = {
            "opa_config": opa_config,
            "bundle_verification_key": bundle_verification_key,
            "bundle_key_id": bundle_key_id,
            "max_bundle_age_s": parse_duration(max_bundle_age, "--max-bundle-age"),
            "opa_set": opa_set or None,
            "shadow_bundle": shadow_bundle,
        }
        return f(*args, supply=supply, **kwargs)

    return wrapper  # type: ignore[return-value]
