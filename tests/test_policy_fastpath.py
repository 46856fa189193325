"""The fast path (policies/pdp/fast) decides exactly what the full composition decides.

``data.pdp.decision`` answers a call that ``data.pdp.fast.cleared`` clears with the constant
``data.pdp.fast.decision`` instead of evaluating every deny rule. That is only safe if the
composition (``data.pdp.composed``) would have decided the same for every such call: a fast
path that allowed what a deny rule refuses would be a bypass. Hypothesis generates inputs
from the OPA input schema and the shipped inventory (the fuzzer's strategy, pdp/fuzz), bent
further towards the fast path's edges (histories, delegation chains, schemes, ports,
principals, categories), and one real OPA serving the built bundle evaluates both sides.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from pdp.bundle import BuiltBundle, build_bundle, fast_review
from pdp.fuzz import BatchOPA
from pdp.fuzz.strategies import NOW_NS, identity, opa_inputs, rfc3339
from pdp.schema import load_schema

from .conftest import POLICIES

pytestmark = pytest.mark.opa

#: Evaluates, per input, whether the fast path clears it and what the composition decides.
CHECK_MODULE = """\
package fastpath_check

results := [check(case) | some case in input.cases]

check(case) := {"cleared": cleared(case), "composed": composed(case), "decision": decision(case)}

cleared(case) if {
\tdata.pdp.fast.cleared with input as case
} else := false

composed(case) := value if {
\tvalue := data.pdp.composed with input as case
} else := null

decision(case) := value if {
\tvalue := data.pdp.decision with input as case
}
"""

SCHEMA = load_schema("opa-input")
VALIDATOR = Draft202012Validator(SCHEMA)


def history(rank: int, *, truncated: bool = False) -> dict[str, Any]:
    """A task or session history with one earlier call of data at ``rank``."""
    step = {
        "type": "tool.call",
        "name": "jira.search_issues",
        "operation": "read",
        "destination": "jira",
        "destination_type": "tool",
        "sensitivity_rank": rank,
    }
    return {
        "id": "T-1",
        "calls": 1,
        "state_changing": 0,
        "first_at_ns": NOW_NS,
        "last_at_ns": NOW_NS,
        "age_s": 1.0,
        "max_sensitivity": ["public", "internal", "confidential", "restricted"][rank],
        "max_sensitivity_rank": rank,
        "action_types": {"tool.call": 1},
        "tools": ["jira.search_issues"],
        "destinations": ["jira"],
        "steps": [step],
        "recent": [step],
        "truncated": truncated,
    }


#: Changes that push an input to the fast path's edges: (path, value).
EDGES: list[tuple[tuple[str, ...], Any]] = [
    (("action", "operation"), "read"),
    (("action", "operation"), "write"),
    (("action", "operation"), None),
    (("action", "type"), "model.invoke"),
    (("action", "type"), "http.request"),
    (("action", "type"), "secret.read"),
    (("action", "type"), "data.export"),
    (("action", "type"), "data.write"),
    (("action", "name"), "jira.search_issues:write"),
    (("action", "name"), None),
    (("agent", "status"), "disabled"),
    (("session", "available"), False),
    (("tenant",), "globex"),
    (("destination", "type"), "service"),
    (("destination", "host"), "evil.example"),
    (("destination", "name"), "globex-wiki"),
    (("data", "sensitivity"), "confidential"),
    (("task",), {"id": "T-1"}),
    (("action", "type"), "tool.call"),
    (("action", "type"), "data.read"),
    (("destination", "scheme"), "http"),
    (("destination", "port"), 8443),
    (("destination", "port"), 80),
    (("agent", "on_behalf_of"), {}),
    (
        ("agent", "on_behalf_of"),
        {"subject": "user:alice@acme.example", "tenant": "acme", "verified": True},
    ),
    (("agent", "on_behalf_of"), {"tenant": "acme"}),
    (("agent", "on_behalf_of"), {"subject": "user:alice@acme.example"}),
    (("data", "categories"), ["customer-tickets"]),
    (("data", "categories"), ["pii"]),
    (("data", "sensitivity"), "public"),
    (("data", "sensitivity_rank"), 0),
    (("data", "sensitivity_rank"), 2),
    (("prompt", "risk_signals"), ["pii_detected"]),
    (("session", "task"), history(1)),
    (("session", "task"), history(3)),
    (("session", "session"), history(0, truncated=True)),
    (("chain", "present"), True),
    (
        ("chain",),
        {
            "present": True,
            "verified": False,
            "error": {"code": "delegation.invalid", "message": "bad"},
            "subject": None,
            "subject_tenant": None,
            "issuer": None,
            "actors": [],
            "depth": 0,
        },
    ),
    (("chain", "verified"), True),
    (
        ("chain",),
        {
            "present": True,
            "verified": True,
            "error": None,
            "subject": "user:alice@acme.example",
            "subject_tenant": "acme",
            "issuer": "spiffe://globex.example",
            "actors": [
                {"sub": "spiffe://globex.example/agents/x", "trust_domain": "globex.example"}
            ],
            "depth": 1,
        },
    ),
    (
        ("chain",),
        {
            "present": False,
            "verified": True,
            "error": None,
            "subject": "user:alice@acme.example",
            "subject_tenant": "acme",
            "issuer": "spiffe://globex.example",
            "actors": [
                {"sub": "spiffe://globex.example/agents/x", "trust_domain": "globex.example"}
            ],
            "depth": 1,
        },
    ),
    (("identity", "trust_domain"), "globex.example"),
    (("task", "purpose"), "answer hr questions"),
]


def fast_bases(inventory: dict[str, Any]) -> list[dict[str, Any]]:
    """Coherent low-risk reads, one per registered agent, entitlement and destination that
    allow one: the region the fast path is for, before EDGES bend it."""
    purposes = inventory.get("purposes", {})
    bases = []
    for spiffe_id, agent in sorted(inventory["agents"].items()):
        for ent in agent.get("entitlements", []):
            if "read" not in ent.get("operations", ["read"]):
                continue
            for action_type in sorted(set(ent["action_types"]) & {"tool.call", "data.read"}):
                for dest_name in ent["destinations"]:
                    dest = inventory["destinations"].get(dest_name, {})
                    host = (dest.get("hosts") or [f"{dest_name}.example"])[0]
                    scheme = (dest.get("schemes") or ["https"])[0]
                    port = (dest.get("ports") or [443])[0]
                    pattern = (ent.get("names") or [f"{dest_name}.search"])[0]
                    fitting = [
                        p
                        for p in agent.get("purposes", [])
                        if action_type in purposes.get(p, {}).get("actions", [])
                    ]
                    task = {"id": "T-1", "purpose": fitting[0]} if fitting else {"id": "T-1"}
                    bases.append(
                        {
                            "version": 1,
                            "now": {"rfc3339": rfc3339(NOW_NS), "unix_ns": NOW_NS},
                            "identity": identity(spiffe_id),
                            "agent": {
                                "id": spiffe_id.rsplit("/", 1)[-1],
                                "status": "active",
                                "on_behalf_of": {
                                    "subject": "user:alice@acme.example",
                                    "tenant": agent["tenant"],
                                },
                            },
                            "tenant": agent["tenant"],
                            "task": task,
                            "action": {
                                "type": action_type,
                                "name": pattern.replace("*", "search"),
                                "operation": "read",
                                "arguments": {},
                            },
                            "destination": {
                                "type": dest.get("type", "tool"),
                                "name": dest_name,
                                "url": f"{scheme}://{host}:{port}/api",
                                "host": host,
                                "scheme": scheme,
                                "port": port,
                                "environment": None,
                            },
                            "data": {
                                "sensitivity": "internal",
                                "sensitivity_rank": 1,
                                "categories": [],
                            },
                            "prompt": {"present": False, "length": 0, "risk_signals": []},
                            "context": {},
                            "request": {"id": "fastpath", "received_at": rfc3339(NOW_NS)},
                            "session": {
                                "available": True,
                                "origin": "sqlite",
                                "error": None,
                                "read_at_ns": NOW_NS,
                                "task": None,
                                "session": None,
                            },
                            "chain": {
                                "present": False,
                                "verified": False,
                                "error": None,
                                "subject": None,
                                "subject_tenant": None,
                                "issuer": None,
                                "actors": [],
                                "depth": 0,
                            },
                        }
                    )
    return bases


def with_edges(inventory: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A coherent low-risk read (fast_bases) or any generated input (the fuzzer's
    strategy), with up to three EDGES applied."""
    starts = st.sampled_from(fast_bases(inventory)) | opa_inputs(SCHEMA, inventory)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        case: dict[str, Any] = copy.deepcopy(draw(starts))
        for path, value in draw(st.lists(st.sampled_from(EDGES), max_size=3)):
            target = case
            for key in path[:-1]:
                target = target.setdefault(key, {})
            target[path[-1]] = copy.deepcopy(value)
        return case

    return build()


@pytest.fixture(scope="module")
def checker(
    opa_bin: str, policy_bundle: BuiltBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BatchOPA]:
    module = tmp_path_factory.mktemp("fastpath") / "check.rego"
    module.write_text(CHECK_MODULE)
    with BatchOPA(opa_bin, Path(policy_bundle.path), [module]) as opa:
        yield opa


def evaluate(opa: BatchOPA, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answers = opa.data("fastpath_check/results", {"cases": cases})
    assert isinstance(answers, list) and len(answers) == len(cases)
    return answers


def test_the_allow_example_takes_the_fast_path_and_the_composition_agrees(
    checker: BatchOPA,
) -> None:
    inventory = checker.data("inventory")
    fast = checker.data("pdp/fast/decision")
    assert fast["allow"] is True and fast["reasons"] == []
    bot = "spiffe://acme.example/agents/support-bot"
    assert inventory["agents"][bot]["status"] == "active"


def test_whenever_the_fast_path_clears_the_composition_decides_the_same(checker: BatchOPA) -> None:
    inventory = checker.data("inventory")
    fast_decision = checker.data("pdp/fast/decision")
    seen = {"cases": 0, "cleared": 0, "composed_allows": 0}

    @seed(13)
    @settings(
        max_examples=40,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(st.lists(with_edges(inventory), min_size=25, max_size=25))
    def prove(cases: list[dict[str, Any]]) -> None:
        for case in cases:
            errors = sorted(VALIDATOR.iter_errors(case), key=str)
            assert not errors, f"generated input does not match the schema: {errors[0].message}"
        for case, answer in zip(cases, evaluate(checker, cases), strict=True):
            seen["cases"] += 1
            composed = answer["composed"]
            if composed is not None and composed["allow"]:
                seen["composed_allows"] += 1
            if answer["cleared"]:
                seen["cleared"] += 1
                assert composed == fast_decision, (case, composed)
                assert answer["decision"] == fast_decision
            else:
                # Off the fast path, the decision is the composition's (or its default).
                if composed is not None:
                    assert answer["decision"] == composed

    prove()
    # The property must have bitten: a good share of the inputs took the fast path, and
    # the composition allowed others that it did not clear (the fast path is narrower).
    assert seen["cleared"] >= seen["cases"] // 20, seen
    assert seen["composed_allows"] > seen["cleared"], seen


def test_every_edge_on_every_coherent_read_is_decided_the_same_both_ways(
    checker: BatchOPA,
) -> None:
    """Exhaustive where it is cheap: each of EDGES alone on each coherent read."""
    inventory = checker.data("inventory")
    fast_decision = checker.data("pdp/fast/decision")
    cases = [copy.deepcopy(base) for base in fast_bases(inventory)]
    for base in fast_bases(inventory):
        for path, value in EDGES:
            case = copy.deepcopy(base)
            target = case
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = copy.deepcopy(value)
            cases.append(case)
    cleared = 0
    for case, answer in zip(cases, evaluate(checker, cases), strict=True):
        assert not list(VALIDATOR.iter_errors(case))
        if answer["cleared"]:
            cleared += 1
            assert answer["composed"] == fast_decision, case
        assert answer["decision"] == (answer["composed"] or answer["decision"])
    assert cleared >= len(cases) // 10, (cleared, len(cases))


# --------------------------------------------------------------------------- the review gate

#: A deny module added after the fast path's review: it refuses every call of support-bot.
BLOCKLIST_MODULE = """\
# METADATA
# title: Blocklist
# description: Agents an operator blocked.
# custom:
#   controls: []
package pdp.rules.blocklist

import data.pdp.lib

# METADATA
# title: Blocked agent
# description: The agent is on the blocklist.
# custom:
#   code: agent_blocked
deny contains lib.reason(rego.metadata.chain(), "the agent is on the blocklist") if {
\tinput.identity.spiffe_id == "spiffe://acme.example/agents/support-bot"
}
"""

#: A rule appended to a reviewed module after the review (the same refusal, another code).
APPENDED_RULE = """
# METADATA
# title: Another gateway
# description: The call came through a gateway the tenant does not use.
# custom:
#   code: gateway_not_allowed
deny contains lib.reason(rego.metadata.chain(), "another gateway") if {
\tinput.identity.spiffe_id == "spiffe://acme.example/agents/support-bot"
}
"""


def test_the_shipped_policy_is_the_reviewed_one_and_its_bundle_says_so(
    checker: BatchOPA,
) -> None:
    holds, now, reviewed = fast_review(POLICIES)
    assert (holds, reviewed) == (True, now), "run `pdpctl policy review-fast` after a review"
    assert checker.data("pdp_index/fast_reviewed") is True


@pytest.mark.parametrize("change", ["new deny module", "rule added to a reviewed module"])
def test_a_deny_rule_added_after_the_review_is_never_skipped(
    opa_bin: str, checker: BatchOPA, tmp_path: Path, change: str
) -> None:
    inventory = checker.data("inventory")
    [case] = [
        b for b in fast_bases(inventory)
        if b["identity"]["spiffe_id"] == "spiffe://acme.example/agents/support-bot"
    ][:1]  # fmt: skip
    [before] = evaluate(checker, [case])
    assert before["cleared"] and before["decision"]["allow"]  # the fast path's own call

    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    if change == "new deny module":
        (policies / "pdp" / "rules" / "blocklist.rego").write_text(BLOCKLIST_MODULE)
        code = "agent_blocked"
    else:
        egress = policies / "pdp" / "rules" / "egress.rego"
        egress.write_text(egress.read_text() + APPENDED_RULE)
        code = "gateway_not_allowed"
    assert fast_review(policies)[0] is False
    built = build_bundle(opa_bin, policies, tmp_path / "changed.tar.gz")
    module = tmp_path / "check.rego"
    module.write_text(CHECK_MODULE)
    with BatchOPA(opa_bin, built.path, [module]) as opa:
        assert opa.data("pdp_index/fast_reviewed") is False
        assert opa.data("pdp_index/fast") is None  # no entries: nothing can be cleared
        [after] = evaluate(opa, [case])

    assert after["cleared"] is False
    assert after["decision"]["allow"] is False
    assert code in [r["code"] for r in after["decision"]["reasons"]]


def test_a_bundle_built_from_a_changed_inventory_carries_a_fresh_index(
    opa_bin: str, checker: BatchOPA, tmp_path: Path
) -> None:
    """The fast path reads entitlements only from the bundle's index (data.pdp_index): an
    entitlement withdrawn from the inventory is gone from the index of the next build, so
    no stale index can clear (and allow) a call the inventory no longer grants."""
    inventory = checker.data("inventory")
    bot = "spiffe://acme.example/agents/support-bot"
    [case] = [b for b in fast_bases(inventory) if b["identity"]["spiffe_id"] == bot][:1]
    [before] = evaluate(checker, [case])
    assert before["cleared"] and before["decision"]["allow"]

    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    inventory_file = policies / "data" / "inventory" / "data.json"
    changed = json.loads(inventory_file.read_text())
    destination, kind = case["destination"]["name"], case["action"]["type"]
    changed["agents"][bot]["entitlements"] = [
        e for e in changed["agents"][bot]["entitlements"]
        if not (destination in e["destinations"] and kind in e["action_types"])
    ]  # fmt: skip
    inventory_file.write_text(json.dumps(changed))
    # Data is not reviewed: the same modules, so the fast path stays on for the new build.
    assert fast_review(policies)[0] is True
    built = build_bundle(opa_bin, policies, tmp_path / "changed.tar.gz")
    module = tmp_path / "check.rego"
    module.write_text(CHECK_MODULE)
    with BatchOPA(opa_bin, built.path, [module]) as opa:
        assert opa.data("pdp_index/fast_reviewed") is True
        index = opa.data("pdp_index/entitlements")
        assert kind not in index.get(bot, {}).get(destination, {})
        entries = opa.data("pdp_index/fast")
        assert kind not in entries.get(bot, {}).get(destination, {})
        [after] = evaluate(opa, [case])

    assert after["cleared"] is False
    assert after["decision"]["allow"] is False
    assert "action_not_entitled" in [r["code"] for r in after["decision"]["reasons"]]


# ------------------------------------------------------------ inventory entries off the schema

#: Agent entries the bundle build ships although the inventory schema refuses them (it does
#: not validate data): each member set, on every agent, to a value the composition may read
#: otherwise than a missing member. Red team: "purposes": false was taken for "lists no
#: purposes" by the fast path, which cleared (allowed) a task purpose the composition
#: refuses (purpose_not_allowed).
ODD_AGENT_ENTRIES: list[tuple[str, Any]] = [
    ("purposes", False),
    ("purposes", None),
    ("purposes", []),
    ("purposes", {}),
    ("purposes", "triage support tickets"),
    ("requires_verified_delegation", "true"),
    ("requires_verified_delegation", 1),
    ("requires_verified_delegation", None),
    ("status", None),
    ("tenant", None),
    ("entitlements", None),
]


#: The fast path and the composition under another inventory (and the index and fast-path
#: entries the bundle build would derive from it): one OPA for every odd inventory instead
#: of a bundle build each. data.pdp_index is replaced whole, so no read of it sees the
#: bundle's own derived data.
ODD_CHECK_MODULE = """\
package fastpath_odd

results := [check(case, inventory, index) |
\tinventory := input.inventory
\tentitlements := data.pdp.index.entitlements with data.inventory as inventory
\tentries := data.pdp.index.fast with data.inventory as inventory
\treviewed := data.pdp_index.fast_reviewed
\tindex := {"fast_reviewed": reviewed, "entitlements": entitlements, "fast": entries}
\tsome case in input.cases
]

check(case, inventory, index) := {
\t"cleared": cleared(case, inventory, index),
\t"composed": composed(case, inventory, index),
}

cleared(case, inventory, index) if {
\tdata.pdp.fast.cleared with input as case
\t\twith data.inventory as inventory
\t\twith data.pdp_index as index
} else := false

composed(case, inventory, index) := value if {
\tvalue := data.pdp.composed with input as case
\t\twith data.inventory as inventory
\t\twith data.pdp_index as index
} else := null
"""


@pytest.mark.parametrize(
    ("member", "value"), ODD_AGENT_ENTRIES, ids=[f"{m}={v!r}" for m, v in ODD_AGENT_ENTRIES]
)
def test_an_odd_agent_entry_is_cleared_only_where_the_composition_allows(
    opa_bin: str, policy_bundle: BuiltBundle, tmp_path: Path, member: str, value: Any
) -> None:
    inventory = json.loads((POLICIES / "data" / "inventory" / "data.json").read_text())
    odd = copy.deepcopy(inventory)
    for agent in odd["agents"].values():
        agent[member] = value
    # The calls the shipped inventory would clear, each alone and with each edge.
    cases = [copy.deepcopy(base) for base in fast_bases(inventory)]
    for base in fast_bases(inventory):
        for path, edge in EDGES:
            case = copy.deepcopy(base)
            target = case
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = copy.deepcopy(edge)
            cases.append(case)
    module = tmp_path / "odd.rego"
    module.write_text(ODD_CHECK_MODULE)
    with BatchOPA(opa_bin, Path(policy_bundle.path), [module]) as opa:
        fast_decision = opa.data("pdp/fast/decision")
        answers = opa.data("fastpath_odd/results", {"cases": cases, "inventory": odd})
        assert opa.data("pdp_index/fast_reviewed") is True
        # The harness itself clears under the shipped inventory (it derives the entries).
        shipped = opa.data("fastpath_odd/results", {"cases": cases, "inventory": inventory})
        assert any(answer["cleared"] for answer in shipped)

    assert len(answers) == len(cases)
    for case, answer in zip(cases, answers, strict=True):
        if answer["cleared"]:
            assert answer["composed"] == fast_decision, (case, answer["composed"])
