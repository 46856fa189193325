"""Policy layout the linters cannot see: the one Regal exception (.regal/config.yaml,
directory-package-mismatch for pdp/rules/*.rego) only allows file-named packages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import POLICIES

RULES = sorted((POLICIES / "pdp" / "rules").glob("*.rego"))


def package_of(path: Path) -> str:
    match = re.search(r"^package\s+([\w.]+)\s*$", path.read_text(), re.MULTILINE)
    assert match, f"{path} has no package"
    return match.group(1)


@pytest.mark.parametrize("path", RULES, ids=[p.name for p in RULES])
def test_every_rules_file_is_package_pdp_rules_named_for_the_file(path: Path) -> None:
    name = path.stem.removesuffix("_test")
    want = f"pdp.rules.{name}" + ("_test" if path.stem.endswith("_test") else "")

    assert package_of(path) == want


def test_the_rules_folder_holds_the_rule_modules() -> None:
    assert len([p for p in RULES if not p.stem.endswith("_test")]) >= 8
