"""Hypothesis strategies for OPA inputs: the schema's shape, the inventory's vocabulary.

The shape (which fields exist, which are optional or nullable, the enums) follows
``pdp/schemas/opa-input.schema.json``, and every generated input is validated against it.
The values come from the bundle's own inventory: an input starts as a call some agent is
entitled to make (so that many inputs are allowed and the properties have something to
bite on), then each fact is, with some probability, replaced by another value from the
inventory's vocabulary or by one the inventory does not know. Hypothesis shrinks towards
the coherent call, so a counterexample shows only the facts that matter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

#: The time every generated input is decided at (input.now), and its RFC 3339 form.
NOW_NS = 1_768_471_200_000_000_000
NOW_S = NOW_NS // 1_000_000_000

ACTION_TYPES = (
    "tool.call",
    "model.invoke",
    "data.read",
    "data.write",
    "data.export",
    "secret.read",
    "http.request",
)
DESTINATION_TYPES = ("tool", "model", "database", "service", "external")
OPERATIONS = ("read", "write", "delete", "execute")
ENVIRONMENTS = (None, "prod", "staging", "dev")
CATEGORIES = ("pii", "phi", "credentials", "financial", "customer-tickets", "payroll")
RISK_SIGNALS = ("prompt_injection_suspected", "pii_detected", "data_exfiltration_suspected")
SUBJECTS = (
    "user:alice@acme.example",
    "service:batch-reports",
    "user:mallory@globex.example",
    "root;admin=true",
    "alice",
)
BAD_NAMES = ("jira.search_issues:write", "jira.search\u200b_issues", "wiki.\u202esearch", "a b")
NAME_WORDS = ("search_issues", "create_issue", "run", "upload_report", "db_password", "search")
AUTHN_ERRORS = (
    None,
    {"code": "authn.token_missing", "message": "no token"},
    {"code": "authn.expired", "message": "token expired"},
)


def rfc3339(unix_ns: int) -> str:
    return datetime.fromtimestamp(unix_ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _bent(draw: st.DrawFn) -> bool:
    """Whether to bend the next fact away from the coherent call: about one time in six.
    Shrinks to False (the coherent value)."""
    return draw(st.integers(0, 5)) == 5


def _fact(draw: st.DrawFn, coherent: Any, pool: list[Any] | tuple[Any, ...]) -> Any:
    """The coherent value, or (bent) any value of ``pool``."""
    if _bent(draw) or coherent is None and None not in pool:
        return draw(st.sampled_from(list(pool)))
    return coherent


def _names(entitlement: dict[str, Any] | None, tools: list[str]) -> list[str]:
    """Action names an entitlement's globs admit (with a few words), plus the tools."""
    out = list(tools)
    for pattern in (entitlement or {}).get("names", []):
        out += [pattern.replace("*", w) for w in NAME_WORDS] if "*" in pattern else [pattern]
    return sorted(set(out))


def identity(spiffe_id: str | None, *, error: Any = None) -> dict[str, Any]:
    """input.identity: verified for a SPIFFE ID, else failed with ``error``."""
    if spiffe_id is None:
        return {
            "authenticated": False,
            "spiffe_id": None,
            "trust_domain": None,
            "path": None,
            "expires_at": None,
            "jti": None,
            "error": error,
        }
    parts = spiffe_id.split("/")
    return {
        "authenticated": True,
        "spiffe_id": spiffe_id,
        "trust_domain": parts[2],
        "path": parts[3:],
        "expires_at": NOW_S + 300,
        "jti": "jti-fuzz",
        "error": None,
    }


def opa_inputs(schema: dict[str, Any], inventory: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Inputs valid against ``schema`` (the OPA input schema), drawn from ``inventory``."""
    agents: dict[str, Any] = inventory.get("agents", {})
    destinations: dict[str, Any] = inventory.get("destinations", {})
    tenants = sorted(inventory.get("tenants", {})) + ["nobody"]
    purposes = sorted(inventory.get("purposes", {})) + ["world domination"]
    tools = sorted(inventory.get("tools", {})) + sorted(inventory.get("models", {}))
    hosts = sorted({h for d in destinations.values() for h in d.get("hosts", [])})
    domains = sorted(
        {d for t in inventory.get("tenants", {}).values() for d in t.get("trust_domains", [])}
    )
    props = schema["properties"]
    sensitivities = props["data"]["properties"]["sensitivity"]["enum"]
    statuses = props["agent"]["properties"]["status"]["enum"]
    # Free-form objects (action.arguments, context): small, of JSON scalars.
    scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
    free_form = st.dictionaries(st.text(max_size=8), scalars, max_size=2)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        # Who: a registered agent, else an unregistered, unauthenticated or half-filled one.
        kind = "registered"
        if _bent(draw):
            kind = draw(st.sampled_from(("unregistered", "unauthenticated", "half")))
        spiffe_id: str | None = None
        if kind == "registered" and agents:
            spiffe_id = draw(st.sampled_from(sorted(agents)))
        elif kind == "unregistered":
            domain = draw(st.sampled_from([*domains, "evil.example"]))
            spiffe_id = f"spiffe://{domain}/agents/{draw(st.sampled_from(('shadow-bot', 'x')))}"
        ident = identity(spiffe_id, error=draw(st.sampled_from(AUTHN_ERRORS)))
        if kind == "half":
            ident["authenticated"] = True
        entry = agents.get(spiffe_id or "", {})
        entitlements = entry.get("entitlements", [])
        ent = draw(st.sampled_from(entitlements)) if entitlements else None

        # What: an action the entitlement covers, bent fact by fact.
        action_type = _fact(draw, (ent or {}).get("action_types", ["tool.call"])[0], ACTION_TYPES)
        if ent and len(ent["action_types"]) > 1 and not _bent(draw):
            action_type = draw(st.sampled_from(ent["action_types"]))
        dest_name = _fact(
            draw,
            draw(st.sampled_from(ent["destinations"])) if ent else "jira",
            [*sorted(destinations), "confluence"],
        )
        dest = destinations.get(dest_name, {})
        names = _names(ent, tools) or [dest_name]
        coherent_name = draw(st.sampled_from(names)) if ent and ent.get("names") else dest_name
        if action_type != "model.invoke" and not (ent and ent.get("names")):
            coherent_name = draw(st.sampled_from(names))
        name = _fact(draw, coherent_name, [*names, *BAD_NAMES, None])
        ops = (ent or {}).get("operations", OPERATIONS)
        operation = _fact(draw, draw(st.sampled_from(list(ops))), [*OPERATIONS, None])
        host = _fact(draw, (dest.get("hosts") or [None])[0], [*hosts, "evil.example", None])
        tenant = _fact(draw, entry.get("tenant", "acme"), tenants)
        agent_purposes = entry.get("purposes")
        fitting = [
            p
            for p in (agent_purposes or purposes)
            if action_type in inventory.get("purposes", {}).get(p, {}).get("actions", [])
        ]
        sensitivity = _fact(draw, "internal", sensitivities)

        doc: dict[str, Any] = {
            "version": 1,
            "now": {"rfc3339": rfc3339(NOW_NS), "unix_ns": NOW_NS},
            "identity": ident,
            "agent": {
                "id": ident["path"][-1] if ident["path"] else None,
                "status": _fact(draw, "active" if spiffe_id else None, statuses),
                "on_behalf_of": (
                    draw(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "subject": st.sampled_from(SUBJECTS),
                                "tenant": st.sampled_from([tenant, *tenants]),
                                "verified": st.booleans(),
                            },
                        )
                    )
                    if _bent(draw)
                    else {"subject": SUBJECTS[0], "tenant": tenant}
                ),
            },
            "tenant": tenant,
            "task": (
                draw(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "id": st.just("T-1"),
                            "purpose": st.sampled_from(purposes),
                            "session": st.just("s-1"),
                        },
                    )
                )
                if _bent(draw)
                else {"id": "T-1", "purpose": (fitting or purposes)[0]}
            ),
            "action": {
                "type": action_type,
                "name": name,
                "operation": operation,
                "arguments": draw(free_form),
            },
            "destination": {
                "type": _fact(draw, dest.get("type", "tool"), DESTINATION_TYPES),
                "name": dest_name,
                "url": f"https://{host}/api" if host else None,
                "host": host,
                "scheme": "https" if host else None,
                "port": 443 if host else None,
                "environment": draw(st.sampled_from(ENVIRONMENTS)),
            },
            "data": {
                "sensitivity": sensitivity,
                "sensitivity_rank": sensitivities.index(sensitivity),
                "categories": sorted(draw(st.sets(st.sampled_from(CATEGORIES), max_size=3)))
                if _bent(draw)
                else [],
            },
            "prompt": {
                "present": False,
                "sha256": None,
                "length": 0,
                "risk_signals": sorted(draw(st.sets(st.sampled_from(RISK_SIGNALS), max_size=2)))
                if _bent(draw)
                else [],
            },
            "context": draw(free_form),
            "request": {"id": "fuzz", "received_at": rfc3339(NOW_NS)},
            # No history yet (or, bent, a store that could not be read), no delegation chain
            # (or, bent, one that did not verify).
            "session": {
                "available": not (unreadable := _bent(draw)),
                "origin": "sqlite",
                "error": "store unreachable" if unreadable else None,
                "read_at_ns": NOW_NS,
                "task": None,
                "session": None,
            },
            "chain": {
                "present": (bad_chain := _bent(draw)),
                "verified": False,
                "error": {"code": "delegation.invalid", "message": "bad"} if bad_chain else None,
                "subject": None,
                "subject_tenant": None,
                "issuer": None,
                "actors": [],
                "depth": 0,
            },
        }
        if not _bent(draw):
            doc["approval"] = {
                "id": "apr-fuzz",
                "status": "granted",
                "expires_at": NOW_S + (-60 if _bent(draw) else 600),
            }
        if draw(st.integers(0, 3)) == 3:
            doc["user"] = {"iss": "https://idp.example", "sub": "alice", "claims": {}}
        return doc

    return build()
