"""CI cannot pass without the checks the README claims: a machine without chromium fails `make test`.

Both halves are run with chromium hidden (PATH points at an empty folder): the Makefile's `browser` step, which
`make test` depends on, exits non-zero; and the browser test, under `make test`'s UNIEDIT_REQUIRE_BROWSER=1,
fails instead of skipping (outside `make test` it still skips).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def hidden_browser_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "UNIEDIT_REQUIRE_BROWSER"}
    return {**env, "PATH": str(empty), **extra}


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_browser_fails_when_chromium_cannot_be_installed(tmp_path: Path):
    proc = subprocess.run([shutil.which("make"), "-s", "browser"], cwd=REPO, capture_output=True, text=True,
                          env=hidden_browser_env(tmp_path), timeout=60)
    assert proc.returncode != 0
    assert "chromium could not be installed" in proc.stderr


def run_browser_tests(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/e2e/test_report_browser.py",
               "-k", "first_page"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=hidden_browser_env(tmp_path, **extra))


def test_browser_test_fails_without_chromium_under_make_test(tmp_path: Path):
    required = run_browser_tests(tmp_path, UNIEDIT_REQUIRE_BROWSER="1")
    assert required.returncode == 1, required.stdout
    assert "chromium is not on PATH" in required.stdout and "skipped" not in required.stdout
    optional = run_browser_tests(tmp_path)
    assert optional.returncode == 0, optional.stdout
    assert "1 skipped" in optional.stdout


def test_make_test_requires_the_browser():
    makefile = (REPO / "Makefile").read_text()
    test_rule = makefile[makefile.index("\ntest:"):].split("\n\n", 1)[0]
    assert "browser" in test_rule.splitlines()[1] and "UNIEDIT_REQUIRE_BROWSER=1" in test_rule
