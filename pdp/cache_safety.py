"""Whether a policy may declare decision-cache TTLs: it must not read the clock.

The decision cache (:mod:`pdp.decision_cache`) keys a decision by its OPA input *without*
``input.now`` and ``input.request`` (the request id and arrival time), so a decision that
depends on them — or on anything else that changes between identical requests — would be
reused when it should not be. The rule (docs/policy-authoring.md, "Decision cache"):

    A policy that reads time (``input.now``, ``input.request``, ``time.now_ns()``) or calls a
    non-deterministic built-in (``rand.*``, ``uuid.*``, ``http.send``, ``net.lookup_ip_addr``,
    ``opa.runtime``) must not declare a TTL: every ``cache.ttl_seconds`` of data.pdp.decision
    must then be the literal 0.

The same goes for a bundle whose contents only its revision string names
(:func:`unidentified`): entries are keyed on the manifest, so it must carry a content digest
or come with an etag.

The check works on OPA's own AST (``opa parse --format json`` for `pdpctl policy check`,
``GET /v1/policies`` for the running PDP, which ignores the TTLs of a policy that fails it),
never on Rego text. It is conservative: a bare ``input`` passed anywhere except as
``object.get(input, <constant key>, ...)`` with a key other than now/request counts as
reading everything; a TTL that is not the literal 0 counts as declared.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

#: Input members that differ per request (left out of the cache key).
PER_REQUEST_INPUT: Final = frozenset({"now", "request"})
#: Built-ins whose answer differs between identical evaluations.
NON_DETERMINISTIC: Final = frozenset(
    {
        ("time", "now_ns"),
        ("rand", "intn"),
        ("uuid", "rfc4122"),
        ("uuid", "parse"),
        ("http", "send"),
        ("net", "lookup_ip_addr"),
        ("opa", "runtime"),
    }
)
#: Where a bundle's manifest carries its content digest (``metadata.<this>``,
#: ``sha256:<hex>``; written by pdp.bundle.build_bundle).
CONTENT_DIGEST_KEY: Final = "content_digest"
#: The entrypoint whose ``cache.ttl_seconds`` the PDP honours.
ENTRYPOINT_PACKAGE: Final = ("pdp",)
ENTRYPOINT_RULE: Final = "decision"

Term = dict[str, Any]


def problems(modules: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
    """What makes the TTLs of this policy unsafe: empty when they may be honoured.

    ``modules``: (name, AST) pairs, tests left out. A problem needs both halves: some module
    reads per-request input or calls a non-deterministic built-in, and the entrypoint
    declares a TTL.
    """
    mods = list(modules)
    reads = [f"{name}: {what}" for name, ast in mods for what in _reads_time(ast)]
    declares = [f"{name}: {what}" for name, ast in mods for what in _declared_ttls(ast)]
    if not reads or not declares:
        return []
    return [
        "the policy reads time or other per-request input and declares a decision-cache "
        "TTL; a policy that reads time must leave cache.ttl_seconds at 0",
        *(f"  reads {r}" for r in sorted(set(reads))),
        *(f"  declares {d}" for d in sorted(set(declares))),
    ]


def _walk(node: Any) -> Iterator[Term]:
    """Every term (a dict with "type" and "value") under ``node``, depth first."""
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            if "type" in cur and "value" in cur:
                yield cur
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)


def _ref_path(term: Term) -> list[Any] | None:
    """[head var, then constant string parts] of a ref term (None past a non-constant)."""
    if term.get("type") != "ref" or not isinstance(term.get("value"), list):
        return None
    parts = term["value"]
    if not parts or parts[0].get("type") != "var":
        return None
    out: list[Any] = [parts[0]["value"]]
    for part in parts[1:]:
        out.append(part.get("value") if part.get("type") == "string" else None)
    return out


def _calls(ast: dict[str, Any]) -> Iterator[tuple[list[Any] | None, list[Term]]]:
    """(operator path, argument terms) of every call: call terms and call expressions."""
    stack: list[Any] = [ast.get("rules", [])]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            if cur.get("type") == "call" and isinstance(cur.get("value"), list):
                op, *args = cur["value"]
                yield _ref_path(op), args
            terms = cur.get("terms")
            if "index" in cur and isinstance(terms, list) and terms:
                yield _ref_path(terms[0]), terms[1:]
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)


def _reads_time(ast: dict[str, Any]) -> list[str]:
    """What in one module reads per-request input or calls a non-deterministic built-in.

    Works on parsed and on compiled ASTs (``GET /v1/policies``), where the compiler rewrites
    ``object.get(input, "k", d)`` into ``__localN__ = input; object.get(__localN__, ...)``.
    A rule definition whose body also requires ``input.approval`` or ``input.session`` (a
    plain, non-negated reference) is left out: it is undefined unless they are present, and
    the PDP never caches a decision whose input carries them.
    """
    found: list[str] = []
    safe: set[int] = set()  # ids of input refs / alias vars used only as object.get(x, "k")
    alias_of: dict[str, int] = {}  # alias var -> id of its defining var term
    for op, args in _calls(ast):
        if op == ["object", "get"] and len(args) >= 2:
            head = _constant_head(args[1])
            if head is not None and head not in PER_REQUEST_INPUT:
                safe.add(id(args[0]))
        elif op in (["eq"], ["assign"]) and len(args) == 2:
            left, right = args
            if left.get("type") == "var" and _ref_path(right) == ["input"]:
                alias_of[str(left["value"])] = id(left)
                safe.add(id(right))  # judged by the uses of the alias instead

    def judge(term: Term) -> str | None:
        if term.get("type") == "var" and term.get("value") in alias_of:
            if id(term) != alias_of[term["value"]] and id(term) not in safe:
                return "the whole input (bare `input`)"
            return None
        path = _ref_path(term)
        if path is None:
            return None
        if path[0] == "input":
            if len(path) == 1:
                return None if id(term) in safe else "the whole input (bare `input`)"
            if path[1] is None or path[1] in PER_REQUEST_INPUT:
                return f"input.{path[1] if path[1] is not None else '[*]'}"
        elif len(path) >= 2 and (path[0], path[1]) in NON_DETERMINISTIC:
            return f"{path[0]}.{path[1]}"
        return None

    scopes: list[Any] = [ast.get("imports", [])]
    for rule in ast.get("rules", []):
        for definition in _definitions(rule):
            body = definition.get("body") or []
            if not any(_requires_never_cached(expr) for expr in body):
                scopes.append({"head": definition.get("head"), "body": body})
    for term in _walk(scopes):
        what = judge(term)
        if what is not None:
            found.append(what)
    return sorted(set(found))


#: Input paths whose members the PDP never caches (pdp.decision_cache.uncacheable): a
#: member of a presented approval, or of a task's or session's history. The PDP caches a
#: decision whose input has ``approval`` empty or ``session.task``/``session.session``
#: null or empty, so only a reference *into* them (one level below) makes a body
#: undefined on every cacheable input; ``input.session.available`` or
#: ``input.session.task == null`` does not.
NEVER_CACHED_INPUT: Final = (("approval",), ("session", "task"), ("session", "session"))
_NOT_REQUIRING: Final = frozenset(
    {"arraycomprehension", "setcomprehension", "objectcomprehension", "every"}
)


def _requires_never_cached(expr: dict[str, Any]) -> bool:
    """A non-negated body expression that is undefined on every cacheable input (it reads a
    member of input.approval or of input.session.task/session, NEVER_CACHED_INPUT)."""
    if not isinstance(expr, dict) or expr.get("negated"):
        return False
    stack: list[Any] = [expr.get("terms")]
    while stack:
        cur = stack.pop()
        if isinstance(cur, list):
            stack.extend(cur)
        elif isinstance(cur, dict):
            if cur.get("type") in _NOT_REQUIRING:
                continue  # defined (empty) or true over an undefined collection
            path = _ref_path(cur)
            if path is not None and path[0] == "input":
                for prefix in NEVER_CACHED_INPUT:
                    n = len(prefix)
                    if len(path) >= n + 2 and tuple(path[1 : n + 1]) == prefix:
                        return True
            value = cur.get("value")
            if isinstance(value, list | dict):
                stack.append(value)
    return False


def _constant_head(key: Term) -> str | None:
    """The first path element of an object.get key: "a" or ["a", ...]; None otherwise."""
    if key.get("type") == "string":
        return str(key["value"])
    if key.get("type") == "array" and key["value"]:
        first = key["value"][0]
        if first.get("type") == "string":
            return str(first["value"])
    return None


def _package(ast: dict[str, Any]) -> tuple[str, ...]:
    path = ast.get("package", {}).get("path", [])
    # [{"type": "var", "value": "data"}, {"type": "string", "value": "pdp"}, ...]
    return tuple(str(p.get("value")) for p in path[1:])


def _declared_ttls(ast: dict[str, Any]) -> list[str]:
    """Each definition of data.pdp.decision whose cache.ttl_seconds is not the literal 0."""
    if _package(ast) != ENTRYPOINT_PACKAGE:
        return []
    found = []
    for rule in ast.get("rules", []):
        for i, definition in enumerate(_definitions(rule)):
            head = definition.get("head", {})
            if head.get("name") != ENTRYPOINT_RULE:
                continue
            ttl = _ttl_term(head.get("value"))
            if not (ttl is not None and ttl.get("type") == "number" and ttl["value"] == 0):
                label = "default " if rule.get("default") else ""
                suffix = f" (else #{i})" if i else ""
                found.append(f"{label}{ENTRYPOINT_RULE}{suffix}: cache.ttl_seconds is not 0")
    return found


def _definitions(rule: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A rule and its else chain."""
    cur: dict[str, Any] | None = rule
    while cur is not None:
        yield cur
        nxt = cur.get("else")
        cur = nxt if isinstance(nxt, dict) else None


def _ttl_term(value: Term | None) -> Term | None:
    """The term at .cache.ttl_seconds of an object literal; None when it is not one."""
    obj = _member(value, "cache")
    return _member(obj, "ttl_seconds")


def _member(term: Term | None, key: str) -> Term | None:
    if term is None or term.get("type") != "object":
        return None
    for k, v in term["value"]:
        if k.get("type") == "string" and k["value"] == key:
            return v  # type: ignore[no-any-return]
    return None


def unidentified(bundles: dict[str, Any]) -> list[str]:
    """Why the active bundles' contents cannot be told apart from others' (empty: they can).

    Entries are keyed on the bundles' generation (their manifests and etags): a bundle
    rebuilt with other contents under the same revision string, loaded from a file (no
    etag), would otherwise keep its predecessor's entries. Each bundle needs the content
    digest `pdpctl bundle build` writes into its manifest (``metadata.content_digest``) or
    an etag from the server it came from (an OCI digest, an HTTP ETag).
    """
    missing = []
    for name, info in sorted(bundles.items()):
        info = info if isinstance(info, dict) else {}
        manifest = info.get("manifest")
        metadata = manifest.get("metadata") if isinstance(manifest, dict) else None
        digest = metadata.get(CONTENT_DIGEST_KEY) if isinstance(metadata, dict) else None
        if not (isinstance(digest, str) and digest) and not info.get("etag"):
            missing.append(name)
    if not missing:
        return []
    return [
        "a bundle carries neither a content digest (manifest metadata."
        f"{CONTENT_DIGEST_KEY}, written by `pdpctl bundle build`) nor an etag, so its "
        "revision alone would have to identify its contents: " + ", ".join(missing)
    ]
