"""Backend plugins (`type: package.module:Class`) on the driver and on Ray actors, with actor resources."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from tests.conftest import REPO
from uniedit_synth.core.bundled import pipelines_dir

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

PLUGIN = "examples.plugins.tint_editor:TintEditor"


def plugin_pipeline(tmp_path: Path, **editor_extra) -> Path:
    raw = yaml.safe_load((pipelines_dir() / "default.yaml").read_text())
    log = tmp_path / "starts"
    log.mkdir()
    raw["backends"]["editor"] = {"type": PLUGIN, "model": "tint-v1",
                                 "options": {"colour": [255, 0, 0], "strength": 0.5, "load_log": str(log)},
                                 **editor_extra}
    raw["stages"]["edit"]["max_attempts"] = 1
    raw["stages"]["judge"]["thresholds"] = {"instruction_following": 1, "visual_quality": 1, "coherence": 1}
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def tinted(png: bytes) -> bytes:
    with Image.open(io.BytesIO(png)) as source:
        rgb = source.convert("RGB")
    return Image.blend(rgb, Image.new("RGB", rgb.size, (255, 0, 0)), 0.5).tobytes()


def test_plugin_editor_runs_on_ray_actors(tmp_path: Path):
    pipeline = plugin_pipeline(tmp_path, resources={"num_cpus": 1})
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "uniedit_synth.cli", "synth", "--pipeline", str(pipeline), "--out", str(out),
           "--limit", "6", "--shard-size", "3", "--engine", "ray", "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    assert "6 records" in stdout

    starts = [json.loads(p.read_text()) for p in (tmp_path / "starts").glob("start-*.json")]
    assert starts, "start() ran in no worker"
    assert proc.pid not in {s["pid"] for s in starts}  # the driver built the backend but never loaded it
    assert all(s["ray_resources"].get("CPU") == 1 for s in starts)  # the backend's resources reached Ray

    rows = [r for kind in ("data", "rejects") for p in sorted((out / kind).glob("*.parquet"))
            for r in pq.read_table(p).to_pylist() if r["edited_image"]]
    assert rows
    for row in rows:
        edited = Image.open(io.BytesIO(row["edited_image"]["bytes"])).convert("RGB")
        assert edited.tobytes() == tinted(row["source_image"]["bytes"]), row["id"]
        assert json.loads(row["models"] if isinstance(row["models"], str) else json.dumps(row["models"]))[
            "editor"] == "tint-v1"


def test_a_worker_can_ask_for_more_than_the_cluster_has():
    """What a worker asks for is what Ray is told: the merged amounts (a GPU backend → num_gpus)."""
    from uniedit_synth.core.config import load_pipeline
    from uniedit_synth.engine.runtime import worker_resources

    config = load_pipeline("default", {
        "backends": {"editor": {"resources": {"num_gpus": 1, "resources": {"a100": 0.5}}},
                     "text": {"resources": {"num_cpus": 2, "resources": {"a100": 0.25}}}},
        "engine": {"worker_resources": {"num_cpus": 1, "memory_mb": 512}},
        "stages": {"judge": {"resources": {"resources": {"judge_slot": 1}}}},
    })
    assert worker_resources(config).actor_options() == {
        "num_cpus": 2, "num_gpus": 1, "memory": 512 * 1024 * 1024, "resources": {"a100": 0.5, "judge_slot": 1}}
    # where it runs is not what it makes: resources stay out of the pipeline hash
    assert config.hashed_view() == load_pipeline("default").hashed_view()
    assert worker_resources(load_pipeline("default")).actor_options() == {"num_cpus": 0}
