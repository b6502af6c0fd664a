"""Shared test fixtures: a clean environment (no real API keys, no Ray telemetry) and run helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
for _key in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_BASE_URL", "RAY_ADDRESS"):
    os.environ.pop(_key, None)


def uniedit_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "uniedit_synth.cli", *args]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path | None = None):
    """Run `uniedit ...` as a user would (a subprocess) and return the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        uniedit_cmd(*args), capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd or REPO
    )


@pytest.fixture
def cli():
    return run_cli
