"""examples/finetune_janus_pro.py as a user runs it: SIGKILL + --resume, and Ray Train with two CPU workers."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.conftest import REPO  # noqa: E402
from tests.e2e.test_object_store import s3  # noqa: E402,F401  (the moto S3 fixture)
from tests.unit.synthetic_runs import make_sample, write_run  # noqa: E402
from tests.unit.test_finetune_tiny import load_example  # noqa: E402
from uniedit_synth.export import export_run  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.train]

SCRIPT = REPO / "examples" / "finetune_janus_pro.py"


@pytest.fixture(scope="module")
def grouped_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 samples in 4 row groups of 2 (so ranks and data positions matter)."""
    root = tmp_path_factory.mktemp("training")
    run = write_run(root / "run", [make_sample(i, category=("color", "count")[i % 2]) for i in range(8)])
    export_run(run, root / "hf", "hf", row_group_rows=2, progress=False)
    return root / "hf"


def tiny(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--tiny",
        "--data",
        str(data),
        "--out",
        str(out),
        "--lr",
        "3e-3",
        "--batch-size",
        "4",
        "--seed",
        "0",
        "--device",
        "cpu",
        *extra,
    ]


def script(*args: str) -> list[str]:
    return [sys.executable, str(SCRIPT), *args]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_after_a_checkpoint_then_resume_continues_bit_identically(
    grouped_export: Path, tmp_path: Path
):
    reference = load_example().main(
        tiny(grouped_export, tmp_path / "reference", "--steps", "20", "--no-save")
    )

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        script(*tiny(grouped_export, out, "--steps", "20", "--save-every", "10", "--halt-after-step", "10")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    marker = out / "checkpoints" / "step-00000010.complete"
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint in 120 s"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model").exists()
    # a checkpoint cut by a kill: files, but no .complete marker; it must not be picked
    partial = out / "checkpoints" / "step-00000015"
    partial.mkdir()
    (partial / "model.pt").write_bytes(b"\x80\x02 half a pickle")

    resumed = subprocess.run(
        script(*tiny(grouped_export, out, "--steps", "20", "--save-every", "10", "--resume")),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "step-00000010 (step 10)" in resumed.stderr
    printed = [json.loads(line) for line in resumed.stdout.splitlines() if line.startswith("{")]
    assert [row["step"] for row in printed] == list(range(11, 21))  # starts at step 10
    logged = metrics(out)
    assert [row["step"] for row in logged] == list(range(1, 21))
    for mine, theirs in zip(logged, reference, strict=True):
        assert (mine["loss"], mine["loss_gen"]) == (theirs["loss"], theirs["loss_gen"])  # bit-identical
    assert (out / "checkpoints" / "step-00000020.complete").exists() and (
        out / "model" / "config.json"
    ).exists()


def row_groups_by_id(export: Path) -> dict[str, tuple[str, int]]:
    where = {}
    for path in sorted((export / "data").glob("train-*.parquet")):
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            for sample_id in parquet.read_row_group(group, columns=["id"]).column("id").to_pylist():
                where[sample_id] = (path.name, group)
    return where


@pytest.mark.ray
def test_ray_train_two_workers_equal_one_process_with_the_same_global_batch(
    grouped_export: Path, tmp_path: Path
):
    single_out = tmp_path / "single"
    single = load_example().main(
        tiny(grouped_export, single_out, "--steps", "20", "--rank-layout", "2", "--log-ids", "--no-save")
    )
    out = tmp_path / "ray"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        script(*tiny(grouped_export, out, "--steps", "20", "--ray-workers", "2", "--log-ids")),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    distributed = metrics(out)
    assert [row["step"] for row in distributed] == list(range(1, 21))
    first = statistics.mean(row["loss"] for row in distributed[:5])
    last = statistics.mean(row["loss"] for row in distributed[-5:])
    assert last < 0.75 * first, f"loss did not fall: {first:.3f} → {last:.3f}"
    assert [row["loss"] for row in distributed] == pytest.approx([row["loss"] for row in single], rel=1e-4)

    groups = row_groups_by_id(grouped_export)
    ranks = [
        [json.loads(line) for line in (out / "ranks" / f"rank-{rank:05d}.jsonl").read_text().splitlines()]
        for rank in range(2)
    ]
    reference = [
        json.loads(line) for line in (single_out / "ranks" / "rank-00000.jsonl").read_text().splitlines()
    ]
    epoch = 2  # steps per epoch: 8 rows / global batch 4
    for step in range(20):
        zero, one = ranks[0][step]["ids"], ranks[1][step]["ids"]
        assert len(zero) == len(one) == 2
        assert zero + one == reference[step]["ids"]  # the same global batch as the single process
        if step % epoch == 0:  # each rank reads whole row groups of its own within an epoch
            epoch_groups = [
                {groups[i] for s in range(step, step + epoch) for i in ranks[r][s]["ids"]} for r in range(2)
            ]
            assert not epoch_groups[0] & epoch_groups[1]
    assert (out / "model" / "config.json").is_file()


def test_checkpoints_and_model_on_object_storage(grouped_export: Path, s3):  # noqa: F811
    """--out s3://… (moto on loopback): checkpoints, metrics and the tuned model go through pyarrow, and --resume
    picks the newest complete checkpoint there."""
    example = load_example()
    reference = example.main(
        [
            "--tiny",
            "--data",
            str(grouped_export),
            "--lr",
            "3e-3",
            "--batch-size",
            "4",
            "--seed",
            "0",
            "--device",
            "cpu",
            "--steps",
            "6",
            "--no-save",
        ]
    )
    bucket = s3.bucket()
    uri = s3.uri(bucket, "janus")
    common = [
        "--tiny",
        "--data",
        str(grouped_export),
        "--out",
        uri,
        "--lr",
        "3e-3",
        "--batch-size",
        "4",
        "--seed",
        "0",
        "--device",
        "cpu",
        "--steps",
        "6",
        "--save-every",
        "3",
    ]
    example.main(common)
    keys = s3.keys(bucket, "janus/")
    assert {
        "janus/checkpoints/step-00000003.complete",
        "janus/checkpoints/step-00000006.complete",
        "janus/model/config.json",
        "janus/model/uniedit_tokenizer.json",
        "janus/metrics.jsonl",
    } <= set(keys)
    s3.client.delete_object(Bucket=bucket, Key="janus/checkpoints/step-00000006.complete")
    resumed = example.main([*common, "--resume"])
    assert [h["step"] for h in resumed] == [4, 5, 6]
    assert [h["loss"] for h in resumed] == [h["loss"] for h in reference[3:]]
    logged = [json.loads(line) for line in s3.get(bucket, "janus/metrics.jsonl").decode().splitlines()]
    assert [row["step"] for row in logged] == list(range(1, 7))


@pytest.mark.ray
def test_ray_train_fsdp_two_workers_shard_and_checkpoint(grouped_export: Path, tmp_path: Path):
    """--fsdp over two Ray workers (FSDP2, gloo): the same steps as one process with the same global batch, and the
    sharded run's checkpoint (full state dicts) resumes in one process."""
    example = load_example()
    single = example.main(
        tiny(grouped_export, tmp_path / "single", "--steps", "6", "--rank-layout", "2", "--no-save")
    )
    out = tmp_path / "fsdp"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        script(
            *tiny(grouped_export, out, "--steps", "6", "--ray-workers", "2", "--fsdp", "--save-every", "3")
        ),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [row["loss"] for row in metrics(out)] == pytest.approx([row["loss"] for row in single], rel=1e-5)
    assert {p.name for p in (out / "checkpoints" / "step-00000006").iterdir()} >= {
        "rng-rank00000.pt",
        "rng-rank00001.pt",
    }
    (out / "checkpoints" / "step-00000006.complete").unlink()
    resumed = example.main(
        tiny(grouped_export, out, "--steps", "6", "--rank-layout", "2", "--resume", "--no-save")
    )
    assert [row["step"] for row in resumed] == [4, 5, 6]
    assert [row["loss"] for row in resumed] == pytest.approx([row["loss"] for row in single[3:]], rel=1e-5)
