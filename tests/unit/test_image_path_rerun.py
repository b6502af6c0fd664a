"""A run's rows, stored images and cache keys do not move when the image byte path gets faster (issue 31).

`fixtures/image_path_rerun.json` was written by the code before the CPU work (main at 793e3c1: every image decoded
again where it was used), with

    PYTHONPATH=<a checkout of that commit>:. python tests/unit/test_image_path_rerun.py --write

A change that means to move rows or keys (a prompt's text, the plan, the pipelines) moves them here too: then
write the fixture again from the commit *before* the image-path change being tested (for a merge: from the
branch merged into, before the merge), never from the code under test, or the test proves nothing.

Each case runs today's code on the same records, in a run made before (its run.json from before `scene_png`:
such a run keeps Pillow's scene PNGs for life, offline/render.py), and compares, row by row, the verdict, the
scores and the sha256 of both stored images, and the sorted request keys of the response cache: equal keys are
what lets a rerun of a run made by the older code hit every cached reply. A new run encodes its scenes faster:
its rows differ from the fixture in the source images' bytes alone, which decode to the same pixels. The test then
reruns a new run, a run made before and a run a version pinned to OpenCV's encoding (`opencv-none-3`, the new
runs' one before ISA-L's) from the cache (data and manifest removed) and checks that each kept its encoding,
every call hit and every row came back the same.

Cases: the offline pipeline (builtin models; the scene rendered in the worker, the pixel gates, the builtin
judge's observations and non-edit consistency) and the `uniedit` pipeline against the fake OpenAI and Gemini
servers with edits returned at Gemini's 1K geometry (keep_geometry brings them back to the source's size, the
gates measure the resized image).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

FIXTURE = Path(__file__).parent / "fixtures" / "image_path_rerun.json"
KEY = "sk-image-path-rerun"
CASES = ("offline", "uniedit")


def config(case: str, openai_url: str = "", gemini_url: str = "") -> Any:
    from uniedit_synth.core.bundled import pipelines_dir
    from uniedit_synth.core.config import parse_pipeline

    file = {"offline": "default.yaml", "uniedit": "uniedit.yaml"}[case]
    raw = yaml.safe_load((pipelines_dir() / file).read_text())
    for backend in raw["backends"].values():
        if case == "offline":
            backend.setdefault("options", {})["latency_s"] = 0
        else:
            backend["base_url"] = gemini_url if backend["type"] == "gemini" else openai_url
    raw.setdefault("limits", {})["rate_limits"] = {}
    overrides = {
        "limit": 12 if case == "offline" else 6,
        "source": {"options": {"image_size": 256 if case == "offline" else 128}},
        "engine": {"kind": "inline", "workers": 1, "shard_size": 50},
        "limits": {"max_cost_usd": None},
    }
    return parse_pipeline(raw, overrides=overrides)


def made_before(case: str, out: Path, scene_png: str | None = None) -> None:
    """`out` as a run started by the code before run.json's `scene_png` (a run.json of this config without it, no
    shard finished: a run stopped early), which today's code resumes; with `scene_png`, a run started by a version
    whose new runs pinned that encoding."""
    from uniedit_synth.engine.driver import Driver

    info = Driver(config(case), str(out))._run_json("2026-01-01T00:00:00", "interrupted", None)
    info.pop("scene_png", None)
    if scene_png is not None:
        info["scene_png"] = scene_png
    out.mkdir(parents=True)
    (out / "run.json").write_text(json.dumps(info))


def run(case: str, out: Path, before: bool = False, pinned: str | None = None) -> tuple[str, str]:
    """One run of `case` into `out` (`before`: a run made before `scene_png`, or, with `pinned`, by a version that
    pinned that encoding); returns the fake servers' URLs (stopped by then: "" offline)."""
    from uniedit_synth.engine.driver import run_synth

    if before and not out.exists():
        made_before(case, out, pinned)
    if case == "offline":
        run_synth(config(case), str(out), progress=False)
        return "", ""
    from tests.fakes import FakeGemini, FakeOpenAI

    with FakeOpenAI(api_key=KEY) as openai_fake, FakeGemini(api_key=KEY) as gemini_fake:
        gemini_fake.edit_geometry = True  # 1024x1024 for 1:1, as the model does at 1K
        urls = openai_fake.base_url, gemini_fake.base_url
        run_synth(config(case, *urls), str(out), progress=False)
    return urls


def sha(value: Any) -> str | None:
    data = value.get("bytes") if isinstance(value, dict) else value
    return hashlib.sha256(data).hexdigest() if data else None


def digest(out: Path) -> dict[str, Any]:
    """What must not move: per row (accepted and rejected), the verdict, scores and both images' sha256; the
    response cache's request keys."""
    from uniedit_synth.run.cache import ResponseCache

    rows = []
    for folder in ("data", "rejects"):
        for path in sorted((out / folder).glob("*.parquet")):
            for row in pq.read_table(path).to_pylist():
                rows.append({
                    "id": row["id"], "accepted": row["accepted"], "reject_reason": row.get("reject_reason"),
                    "score": row.get("score"), "scores": row.get("scores"), "attempts": row.get("attempts"),
                    "edit_instruction": row.get("edit_instruction"),
                    "source_image": sha(row.get("source_image")), "edited_image": sha(row.get("edited_image")),
                })
    rows.sort(key=lambda r: r["id"])
    return {"rows": rows, "cache_keys": sorted(ResponseCache(out / "cache").packed_keys())}


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.mark.parametrize("case", CASES)
def test_rows_images_and_cache_keys_match_the_run_before(case: str, tmp_path: Path, keys: None) -> None:
    expected = json.loads(FIXTURE.read_text())[case]
    out = tmp_path / case
    run(case, out, before=True)
    assert json.loads((out / "run.json").read_text())["scene_png"] == "pillow-3"
    got = digest(out)
    assert len(got["rows"]) == len(expected["rows"])
    for mine, theirs in zip(got["rows"], expected["rows"], strict=True):
        assert mine == theirs
    assert got["cache_keys"] == expected["cache_keys"]
    assert any(r["accepted"] for r in got["rows"]) and all(r["source_image"] for r in got["rows"] if r["accepted"])


def test_a_new_offline_world_run_keeps_pillows_bytes(tmp_path: Path, keys: None) -> None:
    """The builtin editor draws its flaws from the source's bytes: the offline world's new runs stay as they were."""
    out = tmp_path / "offline"
    run("offline", out)
    assert json.loads((out / "run.json").read_text())["scene_png"] == "pillow-3"
    assert digest(out) == json.loads(FIXTURE.read_text())["offline"]


def test_a_new_run_differs_from_the_run_before_in_its_source_bytes_alone(tmp_path: Path, keys: None) -> None:
    from uniedit_synth.offline.render import PNG_NEW

    case = "uniedit"  # real models' pipeline (fakes): the scenes are encoded the fast way
    expected = json.loads(FIXTURE.read_text())[case]
    out = tmp_path / case
    run(case, out)
    assert json.loads((out / "run.json").read_text())["scene_png"] == PNG_NEW
    got = digest(out)
    assert len(got["rows"]) == len(expected["rows"])
    for mine, theirs in zip(got["rows"], expected["rows"], strict=True):
        assert {**mine, "source_image": None} == {**theirs, "source_image": None}
        assert mine["source_image"] != theirs["source_image"]
    assert stored_sources(out, PNG_NEW) == len(got["rows"])


def stored_sources(out: Path, encoding: str) -> int:
    """How many source images the rows of `out` store; each checked to be its scene's PNG in `encoding` (not
    Pillow's, unless that is the encoding), decoding to the scene's pixels."""
    from uniedit_synth.offline.render import PNG_PILLOW, render_image, render_png
    from uniedit_synth.offline.world import Scene

    images = 0
    for folder in ("data", "rejects"):
        for path in sorted((out / folder).glob("*.parquet")):
            for row in pq.read_table(path, columns=["source_image", "record_meta"]).to_pylist():
                if not row["source_image"]:  # a reject stored without its image
                    continue
                scene = Scene.model_validate(json.loads(row["record_meta"])["scene"])
                stored = row["source_image"]["bytes"]
                assert stored == render_png(scene, encoding)
                assert encoding == PNG_PILLOW or stored != render_png(scene, PNG_PILLOW)
                assert (np.asarray(Image.open(io.BytesIO(stored))) == np.asarray(render_image(scene))).all()
                images += 1
    return images


@pytest.mark.parametrize("made", ["new", "before", "opencv"])
@pytest.mark.parametrize("case", CASES)
def test_a_rerun_from_the_cache_hits_every_call_and_changes_no_row(case: str, made: str, tmp_path: Path,
                                                                   keys: None) -> None:
    from uniedit_synth.offline.render import PNG_OPENCV

    out = tmp_path / case
    # "opencv": a run started by the version whose new runs pinned OpenCV's encoding keeps it
    urls = run(case, out, before=made != "new", pinned=PNG_OPENCV if made == "opencv" else None)
    before = digest(out)
    if made == "before":
        assert before == json.loads(FIXTURE.read_text())[case]
    if made == "opencv":
        assert json.loads((out / "run.json").read_text())["scene_png"] == PNG_OPENCV
        assert stored_sources(out, PNG_OPENCV) == sum(1 for row in before["rows"] if row["source_image"]) > 0
    shutil.rmtree(out / "data")
    shutil.rmtree(out / "rejects", ignore_errors=True)
    (out / "manifest.jsonl").unlink()
    from uniedit_synth.engine.driver import run_synth

    # the servers are gone: a single miss would be an unreachable provider and stop the run
    summary = run_synth(config(case, *urls), str(out), progress=False)
    assert digest(out) == before
    assert summary.read == len(before["rows"])
    if case != "offline":  # the builtin models' replies are not cached
        assert sum(summary.cache_hits.values()) > 0 and sum(summary.calls.values()) == 0


def write_fixture() -> None:
    import tempfile

    os.environ.update(OPENAI_API_KEY=KEY, GEMINI_API_KEY=KEY)
    os.environ.pop("GOOGLE_API_KEY", None)
    import uniedit_synth

    print(f"writing {FIXTURE} with {uniedit_synth.__file__}", file=sys.stderr)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            run(case, Path(tmp) / case, before=True)
            result[case] = digest(Path(tmp) / case)
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: PYTHONPATH=<checkout>:. python tests/unit/test_image_path_rerun.py --write")
    write_fixture()
