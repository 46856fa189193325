"""The ext_authz route file: which HTTP request is which agent call (docs/gateways.md).

A YAML document (``pdp/schemas/routes.schema.json``) maps host/path/method patterns to the
static part of a decision request: tenant, task, action, destination, data sensitivity and
categories. The agent's token comes from a configured header. Loaded and checked once at
start (:meth:`RouteTable.load` raises :class:`ConfigError` naming the route); the first
matching route wins and a request that matches none is denied by the caller.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import yaml

from .config import ConfigError
from .errors import RequestError
from .schema import validate_def, validate_request

__all__ = ["Route", "RouteTable", "clean_path"]

_AMBIGUOUS = re.compile(r"//|/\.\.?(/|$)|\\|%(2f|2e|5c|00)|[\x00-\x20\x7f]", re.IGNORECASE)
#: Characters a path may hold as they are (RFC 3986 pchar and "/"), without ";": servlet
#: containers cut "path parameters" (``/a/..;/b`` is ``/a/../b`` to Tomcat and Spring).
_PLAIN = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,=:@/%]*")
#: A percent escape: "%" and two upper-case hex digits (RFC 3986 §6.2.2.1, the canonical
#: form); anything else after a "%" is a malformed or non-canonical escape.
_ESCAPE = re.compile(r"%([0-9A-F]{2})?")
#: Bytes that must never be written as an escape: every character a path may hold plainly
#: (a target decodes ``%73ecret`` to ``secret``, the route pattern does not), "%" itself
#: (``%252e`` is ``%2e`` to one decoder, ``.`` to a second), ";", "\\", and controls.
_NEVER_ESCAPED = (
    frozenset(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@/%;\\"
    )
    | frozenset(range(0x20))
    | {0x7F}
)


def clean_path(path: str) -> bool:
    """True if ``path`` (no query) has one reading, so the route matcher and any target
    behind the gateway read the same path: absolute; no empty, ``.`` or ``..`` segment; no
    backslash, ``;`` (path parameters), ``#`` or control character; only ASCII, with
    escapes in upper-case hex for characters that cannot appear plainly (never for one
    that can, nor for ``%``, ``/``, ``\\``, ``;`` or a control); the escaped bytes valid
    UTF-8 that NFKC leaves as it is (no overlong ``%C0%AE``, no fullwidth ``%EF%BC%8E``).
    Gateways and targets may normalise the rest differently, so such paths are refused."""
    if not path.startswith("/") or _AMBIGUOUS.search(path) is not None:
        return False
    if not _PLAIN.fullmatch(path):
        return False
    escaped = False
    for match in _ESCAPE.finditer(path):
        if match.group(1) is None or int(match.group(1), 16) in _NEVER_ESCAPED:
            return False  # malformed, lower-case, or escaping what needs no escape
        escaped = True
    if escaped:
        try:
            text = unquote_to_bytes(path).decode("utf-8")
        except UnicodeDecodeError:
            return False
        if unicodedata.normalize("NFKC", text) != text:
            return False
    return True


def _path_regex(pattern: str) -> re.Pattern[str]:
    rest = pattern.endswith("/**")
    core = pattern[: -len("/**")] if rest else pattern
    segments = []
    for seg in core.split("/"):
        if seg == "*":
            segments.append("[^/]+")
        else:
            segments.append(re.escape(seg).replace(r"\*", "[^/]*"))
    return re.compile("^" + "/".join(segments) + ("(?:/.*)?" if rest else "") + "$")


@dataclass(frozen=True, slots=True)
class Route:
    """One route: its patterns and the static part of its decision request."""

    index: int
    name: str
    host: str | None
    path: re.Pattern[str]
    methods: frozenset[str] | None
    template: Mapping[str, Any]

    def matches(self, host: str, path: str, method: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.host is not None:
            if self.host.startswith("*."):
                if not host.endswith(self.host[1:]):
                    return False
            elif host != self.host:
                return False
        return self.path.match(path) is not None

    def decision_request(
        self, token: str | None, request_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        """The decision request of one matched HTTP request."""
        request: dict[str, Any] = {}
        if request_id is not None:
            request["request_id"] = request_id
        request["agent"] = {} if token is None else {"token": token}
        request.update(self.template)
        request["context"] = context
        return request


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with a repeated key (one reading of the file)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


@dataclass(frozen=True, slots=True)
class RouteTable:
    """The loaded route file."""

    routes: tuple[Route, ...] = ()
    #: Lower-case header the agent's token is read from, and its scheme ("" for none).
    token_header: str = "authorization"
    token_scheme: str = "Bearer"

    @classmethod
    def load(cls, path: Path) -> RouteTable:
        """Read and check a route file; any problem is a :class:`ConfigError`."""
        where = f"PDP_EXT_AUTHZ_ROUTES={str(path)!r}"
        try:
            doc = yaml.load(path.read_text("utf-8"), Loader=_UniqueKeyLoader)
        except (OSError, yaml.YAMLError, ConfigError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        try:
            validate_def("routes", None, doc)
        except RequestError as exc:
            detail = "; ".join(f"{f.path} {f.message}" for f in exc.fields)
            raise ConfigError(f"{where}: {detail}") from None
        return cls.from_document(doc, where)

    @classmethod
    def from_document(cls, doc: dict[str, Any], where: str = "routes") -> RouteTable:
        routes = []
        for i, spec in enumerate(doc["routes"]):
            template: dict[str, Any] = {"tenant": spec["tenant"]}
            for key in ("task", "action", "destination"):
                if key in spec:
                    template[key] = spec[key]
            data = {k: spec[k] for k in ("sensitivity", "categories") if k in spec}
            if data:
                template["data"] = data
            try:  # the static part must already be a valid decision request
                validate_request({"agent": {}, **template})
            except RequestError as exc:
                detail = "; ".join(f"{f.path} {f.message}" for f in exc.fields)
                raise ConfigError(f"{where}: route {i}: {detail}") from None
            match = spec["match"]
            methods = match.get("methods")
            routes.append(
                Route(
                    index=i,
                    name=spec.get("name", f"route-{i}"),
                    host=match["host"].lower() if "host" in match else None,
                    path=_path_regex(match["path"]),
                    methods=frozenset(methods) if methods else None,
                    template=template,
                )
            )
        token = doc.get("token") or {}
        return cls(
            routes=tuple(routes),
            token_header=token.get("header", "authorization").lower(),
            token_scheme=token.get("scheme", "Bearer"),
        )

    def match(self, host: str, path: str, method: str) -> Route | None:
        """The first route matching (host without port, lower-cased; path without query)."""
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        host = host.lower()
        method = method.upper()
        for route in self.routes:
            if route.matches(host, path, method):
                return route
        return None

    def token(self, value: str | None) -> str | None:
        """The agent token in the token header's ``value`` (None when absent or malformed)."""
        if value is None:
            return None
        if not self.token_scheme:
            return value.strip() or None
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != self.token_scheme.lower() or not token.strip():
            return None
        return token.strip()
