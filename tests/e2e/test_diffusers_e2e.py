"""The `diffusers` editor served by Ray replicas, end to end on CPU with a tiny random InstructPix2Pix pipeline
built in code (tests/fakes/tiny_diffusers.py): no weights are downloaded."""

from __future__ import annotations

import hashlib
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
            "classify": {"backend": "text", "trust_source_category": False},
            "rewrite": {"backend": "text"},
            "edit": {"backend": "editor", "concurrency": 8, "max_attempts": 1},
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
