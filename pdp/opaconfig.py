"""Production mode: the sidecar OPA runs with an OPA configuration file (``--opa-config``)
instead of a bundle built from ``policies/``.

The configuration names the bundle service (an OCI registry), the signing key id, polling
and ``persist``; OPA substitutes ``${VAR}`` from its environment (which it inherits from
the PDP). The PDP adds, on OPA's command line:

- ``--set-file keys.<key id>.key=<PEM>`` for ``--bundle-verification-key`` (a PEM cannot
  sit in a YAML value through ``${VAR}``);
- ``--set persistence_directory=STATE_DIR/opa`` (``persist: true`` keeps the last good
  bundle there, so a restart with the registry down serves it);
- each ``--opa-set KEY=VALUE``.
"""

from __future__ import annotations

from pathlib import Path

from .config import Settings


def persistence_dir(settings: Settings) -> Path:
    """Where OPA persists the last activated bundles: STATE_DIR/opa."""
    return (settings.state_dir / "opa").absolute()


def source_args(settings: Settings) -> list[str]:
    """OPA's command-line arguments for the configuration in ``settings.opa_config``."""
    assert settings.opa_config is not None
    args = [
        "--config-file",
        str(settings.opa_config.absolute()),
        "--set",
        f"persistence_directory={persistence_dir(settings)}",
    ]
    if settings.bundle_verification_key is not None:
        key = settings.bundle_verification_key.absolute()
        args += ["--set-file", f"keys.{settings.bundle_key_id}.key={key}"]
    for item in settings.opa_set:
        args += ["--set", item]
    return args
