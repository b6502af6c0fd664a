"""`uniedit eval` on a tiny Janus-Pro tuned for a few steps vs its untuned copy, on an export's validation split,
judged by the run's own (builtin) judge stage; every figure is recomputed here from the judge's ground truth on
the very edits written under <out>/edits, and a rerun generates and judges nothing."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.conftest import REPO, run_cli  # noqa: E402
from tests.unit.test_finetune_tiny import load_example  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.train]


def _bootstrap(diffs: list[float], resamples: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    boot = sorted(statistics.fmean(diffs[rng.randrange(len(diffs))] for _ in diffs) for _ in range(resamples))

    def pct(q: float) -> float:
        pos = (len(boot) - 1) * q / 100
        lo = int(pos)
        hi = min(lo + 1, len(boot) - 1)
        return boot[lo] + (boot[hi] - boot[lo]) * (pos - lo)

    return [pct(2.5), pct(97.5)]


def test_tiny_janus_tuned_vs_untuned_on_an_export_validation_split(tmp_path: Path):
    from uniedit_synth.offline.verify import verify

    run, export = tmp_path / "run", tmp_path / "hf"
    synth = run_cli("synth", "--engine", "inline", "--limit", "16", "--shard-size", "8", "--no-progress",
                    "--out", str(run))
    assert synth.returncode == 0, synth.stderr
    exported = run_cli("export", str(run), "--format", "hf", "--out", str(export), "--val-fraction", "0.3")
    assert exported.returncode == 0, exported.stderr
    example = load_example()
    example.main(["--tiny", "--data", str(export), "--steps", "8", "--out", str(tmp_path / "tuned"),
                  "--device", "cpu"])
    example.main(["--tiny", "--data", str(export), "--steps", "0", "--out", str(tmp_path / "untuned"),
                  "--device", "cpu"])

    out = tmp_path / "eval"
    args = ("eval", "--model", str(tmp_path / "tuned" / "model"), "--baseline", str(tmp_path / "untuned" / "model"),
            "--bench", f"export={export}@validation", "--out", str(out))
    proc = run_cli(*args, env={"CUDA_VISIBLE_DEVICES": ""}, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "eval.json").read_text())
    assert report["protocol"]["preset"] == "pipeline" and report["protocol"]["type"] == "builtin"

    rows = {}
    for path in sorted((export / "data").glob("validation-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows[row["id"]] = row
    assert len(rows) >= 2
    thresholds = report["protocol"]["thresholds"]
    for label in ("model", "baseline"):
        samples = report["samples"][label]
        assert sorted(s["key"] for s in samples) == sorted(rows)
        for sample in samples:
            row = rows[sample["key"]]
            edited = (out / sample["edit"]).read_bytes()
            truth = verify(row["source_image"]["bytes"], edited, json.loads(row["edit_program"]),
                           json.loads(row["record_meta"] or "{}"))
            figures = sample["figures"]
            assert {k: figures[k] for k in truth.scores} == truth.scores
            assert figures["passed"] == float(all(figures[k] >= bar for k, bar in thresholds.items()))
        block = report["models"][label]
        for name, value in block["mean"].items():
            assert value == pytest.approx(statistics.fmean(s["figures"][name] for s in samples))
        assert block["headline"]["value"] == pytest.approx(statistics.fmean(s["figures"]["passed"] for s in samples))

    paired = report["paired"]["model_minus_baseline"]
    base = {s["key"]: s["figures"] for s in report["samples"]["baseline"]}
    for name, figure in paired["figures"].items():
        diffs = [s["figures"][name] - base[s["key"]][name] for s in report["samples"]["model"]]
        assert figure["mean_diff"] == pytest.approx(statistics.fmean(diffs))
        assert figure["ci95"] == pytest.approx(_bootstrap(diffs, paired["resamples"], paired["seed"]))

    again = run_cli(*args, env={"CUDA_VISIBLE_DEVICES": ""}, cwd=REPO)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count(" 0 paid") == 2  # nothing generated or judged again
    assert json.loads((out / "eval.json").read_text())["samples"] == report["samples"]
