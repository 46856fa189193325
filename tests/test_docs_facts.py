"""Facts the docs state about the repository, checked against the repository, so a change
of one shows the other is stale."""

from __future__ import annotations

import json
import re

from .conftest import ROOT


def test_audit_md_counts_the_corpus_decisions() -> None:
    corpus = ROOT / "tests" / "corpus" / "audit"
    decisions = sum(
        1
        for path in corpus.glob("*.jsonl")
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("type") == "decision"
    )
    text = (ROOT / "docs" / "audit.md").read_text()
    stated = re.search(r"— (\d+) decisions, allows and denies", text)
    assert stated is not None
    assert int(stated.group(1)) == decisions


def test_readme_names_the_go_version_the_tools_need() -> None:
    readme = (ROOT / "README.md").read_text()
    for mod in (ROOT / "tools").glob("*/go.mod"):
        version = re.search(r"^go (\S+)$", mod.read_text(), re.M)
        assert version is not None
        assert f"Go >= {version.group(1)}" in readme, mod


def test_readme_names_the_system_packages_ci_installs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for package in re.findall(r"apt-get install -y -qq (\S+)", ci):
        assert package in readme, package


def test_the_shipped_opa_config_has_no_decision_log_plugin() -> None:
    """Present at all, OPA's decision-log plugin uploads decisions to the registry
    (tests/test_opa_config_no_decision_log.py shows it with a real OPA)."""
    for path in [ROOT / "opa-config.yaml", *ROOT.glob("examples/**/*.yaml")]:
        lines = path.read_text().splitlines()
        assert not [n for n in lines if n.startswith("decision_logs:")], path
