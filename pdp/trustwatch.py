"""Trust bundles follow rotation: the bundle files are watched and reloaded on change.

A trust domain rotates its JWT-SVID keys by publishing a new bundle (SPIRE's bundle
endpoint, a mounted ConfigMap). Read once at start, a removed key would keep verifying,
and tokens signed with a new one would be refused, until a restart. So every
``PDP_TRUST_BUNDLE_REFRESH_S`` seconds (``--trust-bundle-refresh``) the files are checked
(size, mtime, inode, then content digest); when one changed, all bundles are parsed again
and swapped in at once, and the verified-token cache forgets every token of a changed
domain (and the decision cache and the delegation verifier follow, via ``on_change``).
A file that no longer parses keeps its domain on the last good bundle (logged, and
counted in ``pdp_trust_bundle_reload_failures_total``): a half-written file during a
rotation must not turn every decision into a deny, nor widen anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from aiohttp import web

from .identity import SVIDVerifier, TrustBundleError, TrustBundles
from .periodic import Periodic

__all__ = ["BUNDLE_WATCHER", "BundleWatcher"]

log = logging.getLogger("pdp.identity")

_Stat = tuple[int, int, int]


class BundleWatcher:
    """Reloads the verifier's trust bundles when their files change."""

    def __init__(
        self, verifier: SVIDVerifier, files: Mapping[str, Path], interval_s: float
    ) -> None:
        self.verifier = verifier
        self.files = dict(files)
        self.interval_s = interval_s
        self._stats: dict[str, _Stat | None] = {d: _stat(p) for d, p in self.files.items()}
        self._digests: dict[str, str | None] = {d: _digest(p) for d, p in self.files.items()}
        self._poller = Periodic(self._check, interval_s, name="pdp-trust-bundles", log=log)
        #: Reloads that took effect, and ones refused because a file did not parse.
        self.reloads = 0
        self.failures = 0
        #: Called with the new bundles and the changed domains after every reload: whatever
        #: else trusts the bundles (delegation assertions, the decision cache) follows.
        self.on_change: list[Callable[[TrustBundles, set[str]], None]] = []

    def check(self) -> set[str]:
        """Reload if a file changed; return the trust domains whose bundle changed."""
        stats = {d: _stat(p) for d, p in self.files.items()}
        touched = {d for d in self.files if stats[d] != self._stats.get(d)}
        if not touched:
            return set()
        digests = {d: _digest(self.files[d]) for d in touched}
        changed = {d for d in touched if digests[d] != self._digests.get(d)}
        if not changed:
            self._stats.update({d: stats[d] for d in touched})
            return set()
        try:
            bundles = TrustBundles.from_files(self.files)
        except TrustBundleError as exc:
            self.failures += 1
            log.error("trust bundle reload refused, keeping the last good bundles: %s", exc)
            return set()  # not recorded as seen: tried again on the next check
        dropped = self.verifier.replace_bundles(bundles, changed)
        for listener in self.on_change:
            listener(bundles, changed)
        self._stats.update(stats)
        self._digests.update(digests)
        self.reloads += 1
        log.warning(
            "trust bundle(s) reloaded for %s; %d cached token(s) forgotten",
            ", ".join(sorted(changed)),
            dropped,
        )
        return changed

    async def _check(self) -> None:
        self.check()

    async def start(self) -> None:
        if self.interval_s > 0 and self.files:
            self._poller.start()

    async def close(self) -> None:
        await self._poller.close()


def _stat(path: Path) -> _Stat | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


#: The app's watcher (set by the verifier's cleanup_ctx in pdp.app).
BUNDLE_WATCHER = web.AppKey("bundle_watcher", BundleWatcher)
