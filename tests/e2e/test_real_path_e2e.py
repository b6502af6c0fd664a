"""`benchmarks/real_path.py` as a user runs it: the realistic fakes, a model pipeline through the real SDKs, and a
table whose counts add up; its exit status is the check (non-zero exactly when it lists a failure)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def test_real_path_runs_and_its_exit_status_is_the_check(tmp_path) -> None:
    summary_path = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/real_path.py", "--records", "24", "--pipelines", "openai",
         "--keep", str(tmp_path / "work"), "--json", str(summary_path)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    (summary,) = json.loads(summary_path.read_text())
    table = summary["table"]
    assert sum(cell["played"] for cell in table.values()) == summary["rows"] == 24
    assert proc.returncode == (1 if summary["failures"] else 0)
    for cell in table.values():
        assert cell["accepted"] + sum(cell["gates"].values()) == cell["played"]
    # refusals never become pairs, whatever the gates: the provider's own errors reject them
    for kind in ("rewriter_refusal", "editor_refusal", "truncated_json"):
        if kind in table:
            assert table[kind]["accepted"] == 0
    assert "| kind | what the models did | played |" in proc.stdout
