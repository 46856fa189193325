"""Publishing bundles to an OCI registry, in the layout OPA's OCI downloader reads.

OPA's bundle plugin, given a service of ``type: oci``, resolves ``resource`` (a
``HOST/REPO:TAG`` reference) to a manifest and loads the first layer whose media type is
``application/vnd.oci.image.layer.v1.tar+gzip`` as the bundle; the layer's digest is its
ETag (an unchanged digest is not downloaded again). :func:`publish` pushes exactly that:
one layer (the bundle file, unchanged, signature included) and an empty OCI image config,
with the bundle revision as the manifest annotation ``org.opencontainers.image.revision``.

The registry protocol is the ORAS project's Python client's (``oras`` on PyPI), not ours.
HTTPS by default; plain HTTP only when asked (``plain_http``, e.g. a loopback test
registry). Basic credentials come from the caller (``PDP_REGISTRY_USERNAME`` /
``PDP_REGISTRY_PASSWORD`` in the CLI), never from argv.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import oras.client
import requests

from .errors import UnavailableError

#: The media types OPA's OCI downloader looks for.
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
REVISION_ANNOTATION = "org.opencontainers.image.revision"

# oci://HOST[:PORT]/REPO[/...]:TAG — lower-case repository path components, a tag.
_REF = re.compile(
    r"^oci://(?P<host>[A-Za-z0-9.-]+(?::\d{1,5})?)/"
    r"(?P<repo>[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r":(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127})$"
)


class OCIError(UnavailableError):
    """The reference is malformed, or the registry refused or could not be reached."""

    code = "registry_unavailable"


@dataclass(frozen=True, slots=True)
class Reference:
    """``oci://HOST[:PORT]/REPO:TAG`` taken apart."""

    host: str
    repository: str
    tag: str

    @classmethod
    def parse(cls, ref: str) -> Reference:
        m = _REF.match(ref)
        if m is None:
            raise OCIError(
                f"{ref!r}: expected oci://HOST[:PORT]/REPOSITORY:TAG (lower-case repository, a tag)"
            )
        return cls(m.group("host"), m.group("repo"), m.group("tag"))

    @property
    def loopback(self) -> bool:
        """True for a registry on this machine (127.0.0.0/8, ::1, localhost)."""
        host = self.host.rsplit(":", 1)[0] if self.host.count(":") == 1 else self.host
        return host in {"localhost", "[::1]"} or host.startswith("127.")

    @property
    def target(self) -> str:
        """HOST/REPO:TAG, as OPA's ``resource`` and ORAS name it."""
        return f"{self.host}/{self.repository}:{self.tag}"

    def __str__(self) -> str:
        return f"oci://{self.target}"


@dataclass(frozen=True, slots=True)
class Published:
    """What a push made: the manifest's digest and the bundle layer's (OPA's ETag)."""

    reference: Reference
    manifest_digest: str | None
    layer_digest: str


def _client(
    ref: Reference, plain_http: bool, username: str | None, password: str | None
) -> oras.client.OrasClient:
    client = oras.client.OrasClient(hostname=ref.host, insecure=plain_http)
    if username is not None:
        client.login(username=username, password=password or "", hostname=ref.host)
    return client


def _reachable(ref: Reference, plain_http: bool) -> None:
    """Fail fast when nothing answers at the registry (the client retries for minutes)."""
    scheme = "http" if plain_http else "https"
    try:
        resp = requests.get(f"{scheme}://{ref.host}/v2/", timeout=5)
    except requests.RequestException as exc:
        raise OCIError(f"push to {ref} failed: registry unreachable: {exc}") from None
    if resp.status_code not in (200, 401):  # 401: it asks for credentials, it is there
        raise OCIError(f"push to {ref} failed: {ref.host} answered {resp.status_code} on /v2/")


def publish(
    bundle: Path,
    ref: Reference,
    *,
    revision: str | None = None,
    plain_http: bool = False,
    username: str | None = None,
    password: str | None = None,
) -> Published:
    """Push ``bundle`` to ``ref`` as a one-layer OCI artifact OPA can pull."""
    if not bundle.is_file():
        raise OCIError(f"{bundle}: no such bundle file")
    logging.getLogger("oras").setLevel(logging.WARNING)  # no "Successfully pushed" chatter
    with tempfile.TemporaryDirectory(prefix="pdp-oci-") as tmp:
        config = Path(tmp) / "config.json"
        config.write_text("{}")
        _reachable(ref, plain_http)
        try:
            client = _client(ref, plain_http, username, password)
            resp = client.push(
                target=ref.target,
                files=[f"{bundle.absolute()}:{LAYER_MEDIA_TYPE}"],
                manifest_config=f"{config}:{CONFIG_MEDIA_TYPE}",
                manifest_annotations={REVISION_ANNOTATION: revision} if revision else None,
                disable_path_validation=True,
                quiet=True,
            )
        except (requests.RequestException, ValueError, OSError) as exc:
            raise OCIError(f"push to {ref} failed: {type(exc).__name__}: {exc}") from None
    digest = resp.headers.get("Docker-Content-Digest")
    layer = "sha256:" + hashlib.sha256(bundle.read_bytes()).hexdigest()
    return Published(ref, digest, layer)


def pull(
    ref: Reference,
    into: Path,
    *,
    plain_http: bool = False,
    username: str | None = None,
    password: str | None = None,
) -> Path:
    """Download the bundle layer ``ref`` names into ``into``; its bytes must hash to the
    digest the manifest promised (the client library does not check that itself)."""
    logging.getLogger("oras").setLevel(logging.WARNING)
    _reachable(ref, plain_http)
    out = into / "candidate.tar.gz"
    try:
        client = _client(ref, plain_http, username, password)
        manifest = client.get_manifest(ref.target)
        layers = [
            ly for ly in manifest.get("layers", []) if ly.get("mediaType") == LAYER_MEDIA_TYPE
        ]
        if len(layers) != 1:
            raise OCIError(f"{ref}: expected one {LAYER_MEDIA_TYPE} layer, found {len(layers)}")
        digest = str(layers[0].get("digest"))
        client.download_blob(ref.target, digest, str(out))
    except (requests.RequestException, ValueError, OSError, KeyError) as exc:
        raise OCIError(f"pull of {ref} failed: {type(exc).__name__}: {exc}") from None
    got = "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest()
    if got != digest:
        out.unlink(missing_ok=True)
        raise OCIError(
            f"pull of {ref}: the layer's bytes hash to {got}, the manifest says {digest}"
        )
    return out
