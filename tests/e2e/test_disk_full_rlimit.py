"""A full disk without root: RLIMIT_FSIZE makes the OS refuse writes past a size with a real EFBIG.

The tmpfs test in test_faults.py needs root to mount; this one runs as any user. The run's process gets a file
size limit (and ignores SIGXFSZ, so a write past it fails with EFBIG instead of killing the process): the first
shard file that outgrows it is refused by the kernel, exactly as a full disk refuses a write. The run must stop
with one line, leave no corrupt shard and no lock, and finish with the same rows once the limit is gone.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest

from benchmarks.chaos import rows, unreadable_shards
from tests.conftest import REPO, uniedit_cmd

pytestmark = pytest.mark.e2e

ARGS = ["synth", "--engine", "inline", "--limit", "40", "--shard-size", "20", "--no-progress"]
FILE_LIMIT = 96 * 1024  # bytes: above every cache entry and the run's json files, below a shard of 20 samples


def limited_files():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def synth(out: Path, limit_files: bool) -> subprocess.CompletedProcess:
    return subprocess.run(uniedit_cmd(*ARGS, "--out", str(out)), capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ), timeout=300, preexec_fn=limited_files if limit_files else None)


def test_efbig_stops_cleanly_and_resumes(tmp_path: Path):
    out = tmp_path / "run"
    full = synth(out, limit_files=True)
    assert full.returncode == 2, full.stderr
    lines = [line for line in full.stderr.splitlines() if line.strip()]
    assert "Traceback" not in full.stderr
    assert lines[-1].startswith("error: cannot write ") and "File too large" in lines[-1], lines[-1]
    assert "run the same command again" in lines[-1]
    assert unreadable_shards(out) == []
    assert not (out / ".lock").exists()
    assert not list(out.glob("*/.*.tmp"))  # the refused temp file was not left behind as a shard

    resumed = synth(out, limit_files=False)
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference"
    assert synth(reference, limit_files=False).returncode == 0
    assert rows(out) == rows(reference)
