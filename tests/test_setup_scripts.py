"""Reliable set-up (issue 8, item 9): no `cmd | grep -q` under `set -o pipefail` anywhere
(grep exits at the first match, the writer dies of SIGPIPE, the pipeline fails with 141)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [
    *ROOT.glob("scripts/*.sh"),
    ROOT / ".ci" / "run",
    ROOT / "Makefile",
    *ROOT.glob(".github/workflows/*.yml"),
]
PIPE_INTO_QUIET_GREP = re.compile(r"\|\s*grep\s+(-[A-Za-z]*q|--quiet)")


@pytest.mark.parametrize("path", [p for p in SCRIPTS if p.exists()], ids=lambda p: p.name)
def test_no_pipe_into_grep_q(path: Path) -> None:
    offending = [
        f"{path.name}:{n}: {line.strip()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if PIPE_INTO_QUIET_GREP.search(line) and not line.lstrip().startswith("#")
    ]
    assert offending == []


def test_have_version_survives_a_tool_that_prints_a_lot(tmp_path: Path) -> None:
    """The install script's version check, against a fake tool whose output is far larger
    than a pipe buffer (the case that died with 141)."""
    tool = tmp_path / "opa"
    tool.write_text("#!/bin/sh\necho 'Version: 1.2.3'\nyes filler | head -c 2000000\n")
    tool.chmod(0o755)
    script = (ROOT / "scripts" / "install-tools.sh").read_text()
    function = script[
        script.index("have_version()") : script.index("\n}\n", script.index("have_version()")) + 3
    ]
    probe = f"set -euo pipefail\n{function}\nhave_version opa {tool} 1.2.3 && echo yes\n"

    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60)

    assert (done.returncode, done.stdout) == (0, "yes\n"), done.stderr
