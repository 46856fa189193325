"""Which asyncio event loop `pdpctl serve` runs on (``PDP_EVENT_LOOP``).

``auto`` (the default) uses uvloop when it is installed (``pip install 'agent-pdp[fast]'``)
and the standard loop otherwise; ``uvloop`` insists on it (start-up fails without it);
``asyncio`` is the standard loop. uvloop's libuv loop spends less CPU per request on the
aiohttp server and client (bench/README.md has the figure), which on a machine shared with
OPA is CPU given back to OPA.
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Final

from .errors import ConfigError

#: PDP_EVENT_LOOP values.
EVENT_LOOPS: Final = ("auto", "uvloop", "asyncio")


def uvloop_available() -> bool:
    """True when the uvloop package can be imported."""
    return importlib.util.find_spec("uvloop") is not None


def loop_name(choice: str) -> str:
    """The loop ``choice`` resolves to: "uvloop" or "asyncio"."""
    if choice == "auto":
        return "uvloop" if uvloop_available() else "asyncio"
    if choice == "uvloop" and not uvloop_available():
        raise ConfigError("PDP_EVENT_LOOP='uvloop': uvloop is not installed (agent-pdp[fast])")
    return choice


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the kind ``choice`` resolves to."""
    if loop_name(choice) == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()
