"""A new stage is one module plus one line of config.STAGE_TABLE: proved on a copy of the package, through Ray."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

NOOP_MODULE = '''"""A no-op stage: passes every record on unchanged (and says which process ran it)."""

import os


class NoopStage:
    name = "noop"

    def __init__(self, ctx):
        self.ctx = ctx

    async def __call__(self, item):
        item.record.meta["noop_pid"] = os.getpid()
        return item
'''
TABLE_LINE = '    StageDef("noop", None, "uniedit_synth.stages.noop:NoopStage", RejectReason.invalid_input),\n'


def test_a_noop_stage_is_one_module_and_one_line(tmp_path: Path):
    tree = tmp_path / "tree"
    for name in ("uniedit_synth", "pipelines", "prompts"):
        shutil.copytree(REPO / name, tree / name, ignore=shutil.ignore_patterns("__pycache__", "_data"))
    config_py = tree / "uniedit_synth" / "core" / "config.py"
    before = config_py.read_text().splitlines(keepends=True)
    anchor = next(i for i, line in enumerate(before) if line.lstrip().startswith('StageDef("classify"'))
    after = [*before[:anchor], TABLE_LINE, *before[anchor:]]
    config_py.write_text("".join(after))
    (tree / "uniedit_synth" / "stages" / "noop.py").write_text(NOOP_MODULE)
    changed = [line for line in difflib.unified_diff(before, after, n=0) if line[:1] in "+-"
               and not line.startswith(("+++", "---"))]
    assert changed == ["+" + TABLE_LINE]

    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "uniedit_synth.cli", "synth", "--out", str(out), "--limit", "10",
           "--engine", "ray", "--workers", "1", "--shard-size", "5", "--no-progress",
           "--set", "stages.noop.concurrency=3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    stats = json.loads((out / "stats.json").read_text())
    validated = stats["stages"]["validate"]["out"]
    assert validated > 0
    assert stats["stages"]["noop"]["in"] == stats["stages"]["noop"]["out"] == validated
    assert stats["stages"]["classify"]["in"] == validated  # noop ran between validate and classify
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["stages"]["noop"]["concurrency"] == 3

    import pyarrow.parquet as pq

    metas = [json.loads(m) for p in sorted((out / "data").glob("*.parquet"))
             for m in pq.read_table(p, columns=["record_meta"]).column(0).to_pylist()]
    pids = {m["noop_pid"] for m in metas}
    assert pids and os.getpid() not in pids and proc.pid not in pids  # it ran in a Ray worker process

    help_text = subprocess.run([*cmd[:3], "synth", "--help"], capture_output=True, text=True, env=env,
                               cwd=tmp_path).stdout
    assert "noop" in help_text  # --concurrency lists the stages it sets
    report = subprocess.run([*cmd[:3], "report", str(out), "-q"], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=120)
    assert report.returncode == 0, report.stderr
    assert ">noop<" in (out / "report" / "index.html").read_text()
