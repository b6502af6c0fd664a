"""`uniedit synth` on Ray workers with the scene PNG encoding pinned per run (issue 31).

A new run of a real-model pipeline (the `openai` preset against the fake server) encodes its scenes the fast way;
a run made before the pin (its run.json without `scene_png`) keeps Pillow's bytes for every record it renders.
Both give the same pixels, and a rerun of either, finished or with its shards to redo (its manifest gone: an
interrupted run), sends no request and writes the same rows.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.e2e.test_backends_e2e import OPENAI_KEY, synth
from tests.fakes import FakeOpenAI
from uniedit_synth.offline.render import PNG_NEW, PNG_PILLOW, render_image, render_png
from uniedit_synth.offline.world import Scene

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

RECORDS = 6
RAY = ("--workers", "2", "--shard-size", "3")


def rows(out: Path) -> dict[str, dict]:
    found = {}
    for kind in ("data", "rejects"):
        for path in sorted((out / kind).glob("shard-*.parquet")):
            for row in pq.read_table(path).to_pylist():
                found[row["id"]] = {k: v for k, v in row.items() if k != "latency_s"}
    return found


def check_sources(found: dict[str, dict], encoding: str) -> None:
    """Every row's source image is its scene in `encoding`, pixel for pixel what Pillow drew."""
    for row in found.values():
        scene = Scene.model_validate(json.loads(row["record_meta"])["scene"])
        stored = row["source_image"]["bytes"]
        assert stored == render_png(scene, encoding), (row["id"], encoding)
        with Image.open(io.BytesIO(stored)) as image:
            assert (np.asarray(image) == np.asarray(render_image(scene))).all()


def reruns_change_nothing(out: Path, fake: FakeOpenAI) -> None:
    """Run a finished run again, then again with every shard to redo from the cache (the manifest gone, as if no
    shard had finished): no request, the same rows."""
    before, sent = rows(out), len(fake.requests)
    for redo in (False, True):
        if redo:
            (out / "manifest.jsonl").unlink()
        proc = synth("openai", out, fake, None, *RAY, records=RECORDS, engine="ray")
        assert proc.returncode == 0, proc.stderr
        assert ("2 run, 0 already done" if redo else "0 run, 2 already done") in proc.stdout
        assert len(fake.requests) == sent  # every call hit the cache
        assert rows(out) == before


def test_new_and_earlier_runs_keep_their_own_scene_bytes_on_ray(tmp_path: Path):
    with FakeOpenAI(api_key=OPENAI_KEY) as fake:
        new = tmp_path / "new"
        proc = synth("openai", new, fake, None, *RAY, records=RECORDS, engine="ray")
        assert proc.returncode == 0, proc.stderr
        info = json.loads((new / "run.json").read_text())
        assert info["scene_png"] == PNG_NEW
        made_new = rows(new)
        assert len(made_new) == RECORDS
        check_sources(made_new, PNG_NEW)
        reruns_change_nothing(new, fake)

        # a run the code before the pin started: the same config, its run.json without `scene_png`
        before = tmp_path / "before"
        before.mkdir()
        info.pop("scene_png")
        (before / "run.json").write_text(json.dumps(info))
        proc = synth("openai", before, fake, None, *RAY, records=RECORDS, engine="ray")
        assert proc.returncode == 0, proc.stderr
        assert json.loads((before / "run.json").read_text())["scene_png"] == PNG_PILLOW
        made_before = rows(before)
        check_sources(made_before, PNG_PILLOW)
        assert made_before.keys() == made_new.keys()
        for key, row in made_before.items():  # only the source image's bytes differ (not its pixels)
            other = made_new[key]
            assert {k: v for k, v in row.items() if k != "source_image"} == {
                k: v for k, v in other.items() if k != "source_image"}
        reruns_change_nothing(before, fake)
