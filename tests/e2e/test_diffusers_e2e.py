"""The `diffusers` editor served by Ray replicas, end to end on CPU with a tiny random InstructPix2Pix pipeline
built in code (tests/fakes/tiny_diffusers.py): no weights are downloaded."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import REPO

pytest.importorskip("diffusers")
pytest.importorskip("torch")

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.diffusers]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tests.fakes.tiny_diffusers import build_tiny_pix2pix

    return build_tiny_pix2pix(tmp_path_factory.mktemp("tiny") / "pix2pix")


def tiny_pipeline(tmp_path: Path, model: Path | str, *, serve=None, resources=None, options=None,
                  limit: int = 8) -> Path:
    raw = {
        "name": "tiny-diffusers",
        "seed": 0,
        "limit": limit,
        "source": {"spec": "scenes"},
        "backends": {
            "text": {"type": "builtin", "model": "builtin-text"},
            "editor": {
                "type": "diffusers",
                "model": str(model),
                "resources": resources or {"num_gpus": 0, "num_cpus": 1},
                "serve": serve or {"replicas": 1, "max_batch": 4, "batch_wait_ms": 300},
                # float64: a request's pixels do not depend on the batch it shares (see README)
                "options": options or {"steps": 2, "size": 32, "dtype": "float64", "guidance_scale": 3.0},
            },
        },
        "stages": {
            "classify": {"backend": "text", "trust_source_category": False, "drop_categories": ["others"]},
            "rewrite": {"backend": "text"},
            # the model's own output is stored (keep_geometry would resize it to the source's size)
            "edit": {"backend": "editor", "concurrency": 8, "max_attempts": 1, "keep_geometry": False},
            "judge": {"backend": "text",
                      "thresholds": {"instruction_following": 0, "visual_quality": 0, "coherence": 0}},
        },
        "engine": {"kind": "ray", "workers": 1, "shard_size": 4},
    }
    path = tmp_path / "tiny-diffusers.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def synth(pipeline: Path, out: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 240):
    cmd = [sys.executable, "-m", "uniedit_synth.cli", "synth", "--pipeline", str(pipeline), "--out", str(out),
           "--engine", "ray", "--no-progress", *extra]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO)


def edited_images(out: Path) -> dict[str, tuple[bytes, bytes]]:
    """sample id -> (source image, edited image) over accepted and rejected rows."""
    rows = {}
    for kind in ("data", "rejects"):
        for path in sorted((out / kind).glob("*.parquet")):
            for row in pq.read_table(path).to_pylist():
                if row["edited_image"]:
                    rows[row["id"]] = (row["source_image"]["bytes"], row["edited_image"]["bytes"])
    return rows


def digest(images: dict[str, tuple[bytes, bytes]]) -> dict[str, str]:
    return {k: hashlib.sha256(v[1]).hexdigest() for k, v in images.items()}


@pytest.fixture(scope="module")
def first_run(tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    """One run of 8 scenes through the tiny model (1 replica, batches of up to 4)."""
    base = tmp_path_factory.mktemp("first")
    pipeline = tiny_pipeline(base, tiny_model)
    out = base / "run"
    proc = synth(pipeline, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "8 records" in proc.stdout
    return pipeline, out


def test_the_run_ends_with_images_from_the_model_in_batches(first_run):
    from PIL import Image

    _, out = first_run
    images = edited_images(out)
    assert len(images) == 8
    for sample_id, (source, edited) in images.items():
        assert edited != source, sample_id
        with Image.open(io.BytesIO(source)) as src, Image.open(io.BytesIO(edited)) as dst:
            # the model's output: the source scaled to size 32 (long side), new pixels
            assert max(dst.size) == 32 and dst.size != src.size, sample_id
            assert dst.convert("RGB").tobytes() != src.convert("RGB").resize(dst.size).tobytes(), sample_id
    stats = json.loads((out / "stats.json").read_text())
    editor = stats["replicas"]["editor"]
    assert editor["replicas"] == 1 and editor["devices"] == ["cpu"] and editor["restarts"] == 0
    sizes = {int(k): v for k, v in editor["batch_sizes"].items()}
    assert sum(k * v for k, v in sizes.items()) == editor["requests"] == 8
    assert any(k > 1 for k in sizes), sizes  # dynamic batching put several requests in one pipeline call
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["backends"]["editor"]["serve"]["max_batch"] == 4


def test_the_cache_answers_the_same_request_with_the_same_bytes(first_run, tmp_path):
    pipeline, out = first_run
    again = tmp_path / "again"
    # the run without its manifest: every shard runs again. The cache packs keep a reference to the shard cell
    # holding an edited image instead of its bytes (docs/guides/scale.md), so the shards travel with the cache
    shutil.copytree(out, again)
    (again / "manifest.jsonl").unlink()
    proc = synth(pipeline, again)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 made" in proc.stdout, proc.stdout  # every call, the edits included, came from the cache
    assert digest(edited_images(again)) == digest(edited_images(out))


def test_a_killed_replica_is_replaced_and_the_model_gives_the_same_bytes_again(first_run, tmp_path):
    """No cache this time: the model makes every image again from the same per-request seeds, in batches of
    another size (up to 3, the first run's were 4), while the first replica dies (a hard exit) as it starts its
    second batch; that batch is retried on the replacement."""
    _, out = first_run
    pipeline = tiny_pipeline(tmp_path, json.loads((out / "run.json").read_text())["config"]["backends"]["editor"][
        "model"], serve={"replicas": 1, "max_batch": 3, "batch_wait_ms": 300})
    fresh = tmp_path / "fresh"
    proc = synth(pipeline, fresh, env={"UNIEDIT_FAULT_REPLICA_EXIT": "0:1:2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((fresh / "stats.json").read_text())
    editor = stats["replicas"]["editor"]
    assert editor["restarts"] == 1, editor
    assert max(int(k) for k in editor["batch_sizes"]) <= 3
    assert stats["accepted"] + stats["rejected"] == 8
    assert digest(edited_images(fresh)) == digest(edited_images(out))


# -- bad input: one line, exit 2, before any call of the other stages ------------------------------------------
def assert_refused(proc, *needles: str, call_log: Path) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error") or "uniedit" in ln]
    message = proc.stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in message, (needle, message, lines)
    assert not call_log.exists() or call_log.read_text() == "", "a stage made a call before the refusal"


def test_a_model_dir_without_a_pipeline_is_refused(tmp_path):
    empty = tmp_path / "not-a-pipeline"
    empty.mkdir()
    (empty / "unet").mkdir()
    log = tmp_path / "calls.log"
    proc = synth(tiny_pipeline(tmp_path, empty), tmp_path / "run", env={"UNIEDIT_CALL_LOG": str(log)})
    assert_refused(proc, "no model_index.json", call_log=log)


def test_a_text_to_image_pipeline_class_is_refused(tiny_model, tmp_path):
    log = tmp_path / "calls.log"
    pipeline = tiny_pipeline(tmp_path, tiny_model, options={"pipeline": "StableDiffusionPipeline", "steps": 2})
    proc = synth(pipeline, tmp_path / "run", env={"UNIEDIT_CALL_LOG": str(log)})
    assert_refused(proc, "StableDiffusionPipeline", "cannot edit", call_log=log)


def test_a_gpu_request_on_a_cluster_without_gpus_is_refused(tiny_model, tmp_path):
    log = tmp_path / "calls.log"
    pipeline = tiny_pipeline(tmp_path, tiny_model, resources={"num_gpus": 1})
    proc = synth(pipeline, tmp_path / "run", env={"UNIEDIT_CALL_LOG": str(log), "CUDA_VISIBLE_DEVICES": ""})
    assert_refused(proc, "GPU", "no GPU", call_log=log)


def test_a_model_that_cannot_load_in_its_replica_is_refused_before_any_call(tiny_model, tmp_path):
    """model_index.json names an editing class (preflight passes) but the UNet is missing: the replica's load
    fails, and the run stops before any shard worker starts."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    shutil.rmtree(broken / "unet")
    log = tmp_path / "calls.log"
    proc = synth(tiny_pipeline(tmp_path, broken), tmp_path / "run", env={"UNIEDIT_CALL_LOG": str(log)})
    assert_refused(proc, "could not load the model", call_log=log)
