"""A new stage is one module plus one line of core/stage_table.py STAGE_TABLE (plus its prompt for a model stage):
proved on a copy of the package, through Ray for a filter stage and inline for a model stage with an output."""

from __future__ import annotations

import difflib
import filecmp
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
    table_py = tree / "uniedit_synth" / "core" / "stage_table.py"
    before = table_py.read_text().splitlines(keepends=True)
    anchor = next(i for i, line in enumerate(before) if line.lstrip().startswith('StageDef("classify"'))
    after = [*before[:anchor], TABLE_LINE, *before[anchor:]]
    table_py.write_text("".join(after))
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
    grouped = validated - stats["reject_reasons"].get("merged", 0)  # source.group_by_image merges after validate
    assert stats["stages"]["noop"]["in"] == stats["stages"]["noop"]["out"] == grouped
    assert stats["stages"]["classify"]["in"] == grouped  # noop ran between validate and classify
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


CAPTION_MODULE = '''"""A caption stage: one text call per judged record, its reply kept in the row's `outputs` column."""

from pydantic import BaseModel

from ..core.records import RejectReason
from .base import StageContext, WorkItem

SCHEMA = {"type": "object", "properties": {"caption": {"type": "string"}}, "required": ["caption"],
          "additionalProperties": False}


class CaptionReply(BaseModel):
    caption: str


class CaptionStage:
    name = "caption"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.spec = getattr(ctx.config.stages, self.name)

    async def __call__(self, item: WorkItem) -> WorkItem:
        reply = await self.ctx.ask(
            self.name, item, self.ctx.prompt(self.spec.prompt), {"question": item.record.question},
            reply_model=CaptionReply, schema=SCHEMA, schema_name="caption", context={},
            failure=RejectReason.stage_failed,
        )
        item.outputs[self.name] = {"caption": reply.caption}
        return item
'''
CAPTION_PROMPT = "You write one short caption of an image.\n=== USER ===\nCaption the image this question is about: $question\n"
CAPTION_LINE = ('    StageDef("caption", "text", "uniedit_synth.stages.caption:CaptionStage", RejectReason.stage_failed, '
                'after_caps=True, role="captioner"),\n')


def _read_rows(tree: Path, run: Path, kind: str) -> list[dict]:
    """The run's rows as the copied package reads them (export/run_reader.py: rows → Samples), as JSON."""
    code = ("import sys, json; from uniedit_synth.export.run_reader import RunReader; r = RunReader(sys.argv[1]); "
            f"print(json.dumps([s.model_dump(mode='json', exclude={{'source_image', 'edited_image'}}) "
            f"for s, _ in r.iter_samples(r.{kind}_files)]))")
    proc = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=120, cwd=run,
                          env={**os.environ, "PYTHONPATH": str(tree)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_model_stage_with_an_output_is_one_module_one_line_and_its_prompt(tmp_path: Path):
    tree = tmp_path / "tree"
    for name in ("uniedit_synth", "pipelines", "prompts"):
        shutil.copytree(REPO / name, tree / name, ignore=shutil.ignore_patterns("__pycache__", "_data"))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cli = [sys.executable, "-m", "uniedit_synth.cli"]
    base = ["--limit", "12", "--engine", "inline", "--shard-size", "6", "--no-progress"]
    old = tmp_path / "old"  # a run made before the stage existed
    made = subprocess.run([*cli, "synth", "--out", str(old), *base], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=240)
    assert made.returncode == 0, made.stderr

    table_py = tree / "uniedit_synth" / "core" / "stage_table.py"
    before = table_py.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(before) if line.startswith("STAGE_TABLE"))
    anchor = next(i for i in range(start, len(before)) if before[i] == ")\n")  # after the last stage
    after = [*before[:anchor], CAPTION_LINE, *before[anchor:]]
    table_py.write_text("".join(after))
    (tree / "uniedit_synth" / "stages" / "caption.py").write_text(CAPTION_MODULE)
    (tree / "prompts" / "caption.txt").write_text(CAPTION_PROMPT)
    changed = [line for line in difflib.unified_diff(before, after, n=0) if line[:1] in "+-"
               and not line.startswith(("+++", "---"))]
    assert changed == ["+" + CAPTION_LINE]

    def differing(left: Path, right: Path) -> set[str]:
        cmp = filecmp.dircmp(left, right, ignore=["__pycache__", "_data"])
        out = {str(Path(name)) for name in cmp.diff_files + cmp.left_only + cmp.right_only}
        for sub in cmp.common_dirs:
            out |= {f"{sub}/{name}" for name in differing(left / sub, right / sub)}
        return out

    touched = set().union(*({f"{name}/{p}" for p in differing(REPO / name, tree / name)}
                            for name in ("uniedit_synth", "pipelines", "prompts")))
    assert touched == {"uniedit_synth/core/stage_table.py", "uniedit_synth/stages/caption.py", "prompts/caption.txt"}

    out = tmp_path / "run"
    proc = subprocess.run([*cli, "synth", "--out", str(out), *base, "--set", "stages.caption.backend=text"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["accepted"] > 0
    assert stats["stages"]["caption"]["in"] == stats["stages"]["caption"]["out"] == stats["accepted"]
    assert stats["stages"]["judge"]["out"] >= stats["stages"]["caption"]["in"]  # it runs after the judge
    run = json.loads((out / "run.json").read_text())
    assert "caption.txt" in run["prompt_hashes"]  # its prompt is part of the pipeline hash
    assert run["config"]["stages"]["caption"]["prompt"] == "caption.txt"

    accepted = _read_rows(tree, out, "data")
    assert len(accepted) == stats["accepted"]
    for row in accepted:
        assert row["outputs"] == {"caption": {"caption": "builtin caption: caption"}}
        assert row["models"]["captioner"] == "builtin-text" and row["models"]["judge"] == "builtin-text"
        assert row["prompt_versions"]["caption"].startswith("caption.txt@")
    assert all(row["outputs"] is None for row in _read_rows(tree, out, "reject"))  # never reached the stage

    # the run made before the stage reads with the new table (no captioner in its `models` column) ...
    old_rows = _read_rows(tree, old, "data")
    assert old_rows and all(r["models"]["captioner"] is None and r["models"]["classifier"] == "builtin-text"
                            and r["outputs"] is None for r in old_rows)
    report = subprocess.run([*cli, "report", str(old), "-q"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    assert report.returncode == 0, report.stderr
    # ... and the new run reads with the package without the stage (the extra role ignored)
    new_rows = _read_rows(REPO, out, "data")
    assert [r["id"] for r in new_rows] == [r["id"] for r in accepted]
    assert all("captioner" not in r["models"] for r in new_rows)
    report = subprocess.run([*cli, "report", str(out), "-q"], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=120)
    assert report.returncode == 0, report.stderr
    assert ">caption<" in (out / "report" / "index.html").read_text()
