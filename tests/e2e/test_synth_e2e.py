"""`uniedit synth` as a user runs it: the offline world end to end, resume after SIGKILL, and user errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, run_cli, uniedit_cmd
from uniedit_synth.offline.checks import quality_figures
from uniedit_synth.offline.flaws import expected_edited_png

pytestmark = pytest.mark.e2e

VOLATILE = {"latency_s"}  # wall-clock time of the calls: the only field that differs between two runs


def read_rows(out: Path, kind: str) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for path in sorted((out / kind).glob("shard-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            assert row["id"] not in rows, f"duplicate id {row['id']}"
            rows[row["id"]] = {k: v for k, v in row.items() if k not in VOLATILE}
    return rows


def call_count(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.ray
def test_synth_300_records_end_to_end(tmp_path: Path):
    import datasets

    out = tmp_path / "run"
    proc = run_cli("synth", "--out", str(out), "--limit", "300", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "300 records" in proc.stdout

    accepted, rejected = read_rows(out, "data"), read_rows(out, "rejects")
    assert len(accepted) + len(rejected) == 300
    assert not set(accepted) & set(rejected)
    # the default pipeline groups questions by scene: `merged` records went into another record's sample
    merged = sum(1 for row in rejected.values() if row["reject_reason"] == "merged")
    assert merged > 50 and len(accepted) > 0.75 * (300 - merged)
    assert len(rejected) > merged  # the imperfect editor and leaky rewriter are caught
    for row in accepted.values():
        assert row["accepted"] and row["reject_reason"] is None
        program, meta = json.loads(row["edit_program"]), json.loads(row["record_meta"])
        expected = expected_edited_png(row["source_image"]["bytes"], program, meta)
        assert expected == row["edited_image"]["bytes"] or _same_pixels(expected, row["edited_image"]["bytes"]), row["id"]
    for row in rejected.values():
        assert not row["accepted"] and row["reject_reason"]
    decoded = [
        {**row, **{c: json.loads(row[c]) for c in ("edit_program", "record_meta") if row[c]}} for row in accepted.values()
    ]
    quality = quality_figures(decoded)  # every accepted edit needs the answer (issue 11)
    assert quality["rows"] == len(accepted) and quality["no_op"] == 0
    assert quality["decided_in_advance"] == 0 and quality["leaks"] == 0
    assert all(row["instruction_plan"] and row["instruction_plan"]["style"] for row in accepted.values())

    stats = json.loads((out / "stats.json").read_text())
    assert stats["read"] == 300 and stats["accepted"] == len(accepted) and stats["status"] == "finished"
    assert sum(stats["reject_reasons"].values()) == len(rejected)

    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert len(ds) == len(accepted)
    assert ds[0]["source_image"].mode == "RGB" and ds[0]["edited_image"].size == ds[0]["source_image"].size

    shown = run_cli("stats", str(out))
    assert shown.returncode == 0 and "rejects by reason" in shown.stdout and "judge" in shown.stdout


def _same_pixels(a: bytes, b: bytes) -> bool:
    import io

    import numpy as np
    from PIL import Image

    return np.array_equal(np.asarray(Image.open(io.BytesIO(a)).convert("RGB")),
                          np.asarray(Image.open(io.BytesIO(b)).convert("RGB")))


SLOW = [
    "--limit", "200", "--shard-size", "20", "--concurrency", "4", "--no-progress",
    "--set", "backends.editor.options.latency_s=0.08",
    "--set", "backends.text.options.latency_s=0.01",
]


@pytest.mark.ray
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path: Path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    ref_log, int_log = tmp_path / "ref.calls", tmp_path / "int.calls"

    proc = run_cli("synth", "--out", str(reference), "--engine", "inline", *SLOW,
                   env={"UNIEDIT_CALL_LOG": str(ref_log)})
    assert proc.returncode == 0, proc.stderr

    env = {**os.environ, "UNIEDIT_CALL_LOG": str(int_log)}
    victim = subprocess.Popen(uniedit_cmd("synth", "--out", str(interrupted), *SLOW), cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    manifest = interrupted / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if manifest.exists() and manifest.read_text().count("\n") >= 1:
            break
        time.sleep(0.02)
    assert victim.poll() is None, "the run finished before it could be killed"
    os.killpg(victim.pid, signal.SIGKILL)  # the whole job, Ray workers included, like a preempted machine
    victim.wait()
    landed = manifest.read_text().count("\n")
    assert 1 <= landed < 10, landed
    calls_before = call_count(int_log)

    resumed = run_cli("synth", "--out", str(interrupted), *SLOW, env={"UNIEDIT_CALL_LOG": str(int_log)})
    assert resumed.returncode == 0, resumed.stderr
    assert f"{landed} already done" in resumed.stdout

    for kind in ("data", "rejects"):
        assert read_rows(interrupted, kind) == read_rows(reference, kind)
    # nothing paid twice: the calls of both invocations add up to the uninterrupted run's
    assert call_count(int_log) == call_count(ref_log), (calls_before, call_count(int_log), call_count(ref_log))
    assert calls_before > 0


def one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0], lines[0]


def test_second_run_on_a_locked_dir_is_refused(tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(["sleep", "60"])
    try:
        (out / ".lock").write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename}))
        one_line_error(run_cli("synth", "--out", str(out), "--engine", "inline", "-n", "5"), "in use by another run")
    finally:
        holder.kill()
        holder.wait()


def test_changed_config_is_refused_unless_forced(tmp_path: Path):
    out = tmp_path / "run"
    args = ["synth", "--out", str(out), "--engine", "inline", "-n", "10", "--no-progress"]
    assert run_cli(*args).returncode == 0
    changed = run_cli(*args, "--set", "stages.judge.thresholds.coherence=5")
    one_line_error(changed, "stages.judge.thresholds.coherence: 3.0 → 5.0")
    forced = run_cli(*args, "--set", "stages.judge.thresholds.coherence=5", "--force-new-config")
    assert forced.returncode == 0, forced.stderr
    assert "0 made, " in forced.stdout or "from cache" in forced.stdout


def test_bad_yaml_unknown_backend_and_unwritable_dir(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages: {classify: [\n")
    one_line_error(run_cli("synth", "--pipeline", str(bad), "--out", str(tmp_path / "a")), "not valid YAML")

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text((REPO / "pipelines" / "default.yaml").read_text().replace("type: builtin\n    model: builtin-editor",
                                                                                  "type: dalle9\n    model: x"))
    one_line_error(run_cli("synth", "--pipeline", str(unknown), "--out", str(tmp_path / "b"), "--engine", "inline"),
                   "unknown type 'dalle9'")

    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    one_line_error(run_cli("synth", "--out", str(blocker / "out"), "--engine", "inline"), "not writable")

    one_line_error(run_cli("synth", "--pipeline", "nope", "--out", str(tmp_path / "c")), "unknown pipeline 'nope'")
