"""The offline world's scene PNG encoding, pinned per run (issue 31): a new run encodes its scenes the fast way, a
run made before keeps Pillow's bytes for every record it renders, and both give the same pixels.

The run-level checks (a run made before resumed by today's code gives the bytes, rows and cache keys of the code
before; a new run's rows differ in the source images' bytes alone; reruns hit every cached call) are in
test_image_path_rerun.py; the CLI on Ray workers in tests/e2e/test_scene_png_e2e.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from uniedit_synth.core.config import InputPolicy, SourceSpec, parse_pipeline
from uniedit_synth.core.errors import SourceError
from uniedit_synth.core.png import SIGNATURE
from uniedit_synth.engine.run_info import scene_png
from uniedit_synth.offline.render import (
    PNG_ISAL,
    PNG_NEW,
    PNG_OPENCV,
    PNG_PILLOW,
    encode_png,
    render_image,
    render_png,
)
from uniedit_synth.offline.world import Scene
from uniedit_synth.run.store import RunDir
from uniedit_synth.sources import open_source
from uniedit_synth.sources.scenes import PNG_META_KEY, ScenesSource, pin_scene_png
from uniedit_synth.sources.validate import validate_record


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def scenes(n: int = 4, size: int = 256) -> list[Scene]:
    source = ScenesSource(count=n, seed=11, image_size=size, defer_render=True)
    return [Scene.model_validate(source.record(i).meta["scene"]) for i in range(n)]


def config(pipeline: str):
    from uniedit_synth.core.bundled import pipelines_dir

    return parse_pipeline(yaml.safe_load((pipelines_dir() / f"{pipeline}.yaml").read_text()))


# -- the encodings -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [64, 256, 1024])
@pytest.mark.parametrize("encoding", [PNG_OPENCV, PNG_ISAL])
def test_every_encoding_gives_the_pixels_pillow_drew(size: int, encoding: str):
    import cv2

    for scene in scenes(2, size):
        drawn = np.asarray(render_image(scene))
        pillow, fast = render_png(scene, PNG_PILLOW), render_png(scene, encoding)
        assert pillow != fast  # the bytes differ: that is why a run pins one
        assert (pixels(pillow) == drawn).all() and (pixels(fast) == drawn).all()
        assert (cv2.imdecode(np.frombuffer(fast, np.uint8), cv2.IMREAD_COLOR_RGB) == drawn).all()
        assert render_png(scene, encoding) == fast  # deterministic


def test_the_isal_encoding_is_a_plain_png_with_unfiltered_rows():
    """What PNG_ISAL writes: one IDAT of scanlines with filter type None, an ordinary zlib stream; so any decoder
    reads it, and the pixel gates' OpenCV path (plain 8-bit RGB) takes it."""
    import struct
    import zlib

    from uniedit_synth.method.pixel_gates import plain_png_pixels

    scene = scenes(1, 96)[0]
    drawn = np.asarray(render_image(scene))
    png = render_png(scene, PNG_ISAL)
    assert png[:8] == SIGNATURE and png[12:16] == b"IHDR"
    assert struct.unpack(">IIBBBBB", png[16:29]) == (96, 96, 8, 2, 0, 0, 0)
    length = int.from_bytes(png[33:37], "big")
    assert png[37:41] == b"IDAT" and png[41 + length + 4 :] == b"\0\0\0\0IEND\xaeB`\x82"
    rows = np.frombuffer(zlib.decompress(png[41 : 41 + length]), np.uint8).reshape(96, 1 + 96 * 3)
    assert (rows[:, 0] == 0).all() and (rows[:, 1:].reshape(96, 96, 3) == drawn).all()
    assert (plain_png_pixels(png) == drawn).all()


def test_the_isal_encoding_writes_the_bytes_it_always_wrote():
    """A run pinned to isal-none-1 hashes these bytes into its cache keys: a deflater that writes other bytes
    (an ISA-L release that changed its level-1 output) would make a resumed run miss the cached calls of the
    shards it had in flight. Should this fail after an upgrade, give the new output an encoding name of its
    own (PNG_ENCODINGS) and keep the old one writable, as pillow-3 and opencv-none-3 are."""
    import hashlib

    expected = {
        64: "37f88ed1d97284d759ebd0c87b4ffa666f9e825d45427dd875b9e5a2e3302b5a",
        256: "a51f73a1f7e001491f0260ec63c8768cefecc93b493756396b9b85b9e4771eaa",
    }
    for size, digest in expected.items():
        assert hashlib.sha256(render_png(scenes(1, size)[0], PNG_ISAL)).hexdigest() == digest


def test_pillow_stays_the_default_and_an_unknown_encoding_is_refused():
    scene = scenes(1)[0]
    assert render_png(scene) == render_png(scene, PNG_PILLOW)
    buffer = io.BytesIO()
    render_image(scene).save(buffer, format="PNG", compress_level=3)
    assert render_png(scene) == buffer.getvalue()  # the bytes of every run before the pin
    with pytest.raises(ValueError, match="unknown scene PNG encoding"):
        encode_png(render_image(scene), "webp")


# -- what a run pins -----------------------------------------------------------------------------------------
def test_a_new_run_gets_the_fast_encoding_unless_its_editor_is_the_builtin_one(tmp_path: Path):
    fresh = RunDir(tmp_path / "new")
    assert scene_png(fresh, None, config("openai")) == PNG_NEW == PNG_ISAL
    assert scene_png(fresh, None, config("uniedit")) == PNG_NEW
    # the builtin editor draws its flaws from the source's bytes: the offline world keeps Pillow's
    assert scene_png(fresh, None, config("default")) == PNG_PILLOW


def test_a_run_made_before_the_pin_keeps_pillow(tmp_path: Path):
    openai = config("openai")
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text(json.dumps({"pipeline_hash": "abc"}))
    previous, _ = RunDir(old).load_run_json()
    assert previous is not None and scene_png(RunDir(old), previous, openai) == PNG_PILLOW
    broken = tmp_path / "broken"  # an unreadable run.json: what made the run is unknown, so the old bytes
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    assert scene_png(RunDir(broken), None, openai) == PNG_PILLOW
    manifest_only = tmp_path / "manifest"
    manifest_only.mkdir()
    (manifest_only / "manifest.jsonl").write_text("")
    assert scene_png(RunDir(manifest_only), None, openai) == PNG_PILLOW


def test_the_pin_is_carried_from_run_json(tmp_path: Path):
    run_dir = RunDir(tmp_path)
    assert scene_png(run_dir, {"pipeline_hash": "x", "scene_png": PNG_OPENCV}, config("default")) == PNG_OPENCV
    assert scene_png(run_dir, {"pipeline_hash": "x", "scene_png": PNG_PILLOW}, config("openai")) == PNG_PILLOW
    # a run made with OpenCV's encoding (the new runs' one before PNG_ISAL) keeps it
    assert scene_png(run_dir, {"pipeline_hash": "x", "scene_png": PNG_OPENCV}, config("openai")) == PNG_OPENCV


def test_an_encoding_this_version_cannot_write_is_a_clear_error():
    with pytest.raises(SourceError, match="resume it with the version that made it"):
        pin_scene_png(open_source(SourceSpec(spec="scenes"), seed=0, limit=4), "future-9")


# -- how the pin reaches the worker's rendering --------------------------------------------------------------
@pytest.mark.parametrize("light", [True, False])
def test_records_carry_the_pin_to_the_worker_and_validation_renders_with_it(light: bool):
    spec = SourceSpec(spec="scenes", options={"image_size": 128})
    driver_side = pin_scene_png(open_source(spec, seed=2, limit=6), PNG_NEW)
    if light:
        assert driver_side.lighten() is None
    records = list(driver_side)
    assert all(r.meta[PNG_META_KEY] == PNG_NEW for r in records)
    # the worker opens its own source, unpinned: the records it reads back keep the driver's pin
    whole = open_source(spec, seed=2, limit=6).hydrate(records)
    policy = InputPolicy()
    for record in whole:
        assert record.image is None and record.meta[PNG_META_KEY] == PNG_NEW
        clean = validate_record(record, policy)
        scene = Scene.model_validate(record.meta["scene"])
        assert clean.image == render_png(scene, PNG_NEW)
        # the stages see the record as before the pin: the meta without it
        assert PNG_META_KEY not in clean.meta and clean.meta == {
            k: v for k, v in record.meta.items() if k != PNG_META_KEY}


def test_a_pillow_run_reads_the_records_of_every_run_before():
    spec = SourceSpec(spec="scenes", options={"image_size": 128})
    unpinned = list(open_source(spec, seed=2, limit=6))
    pinned = pin_scene_png(open_source(spec, seed=2, limit=6), PNG_PILLOW)
    records = list(pinned)
    assert [r.model_dump() for r in records] == [r.model_dump() for r in unpinned]
    assert all(PNG_META_KEY not in r.meta for r in records)
    clean = validate_record(records[0], InputPolicy())
    assert clean.image == render_png(Scene.model_validate(records[0].meta["scene"]), PNG_PILLOW)


def test_validation_hands_an_isal_scene_s_pixels_to_the_hook_once_converted():
    """PNG_ISAL reads the drawing's pixels to write the PNG: validation gives those very pixels to its hook (the
    pixel gates' source view, the screen's fingerprint), which see what they saw of the image before."""
    from uniedit_synth.method.fingerprint import fingerprint_image
    from uniedit_synth.method.pixel_gates import source_view

    spec = SourceSpec(spec="scenes", options={"image_size": 128})
    seen: list = []
    for encoding in (PNG_ISAL, PNG_PILLOW):
        seen.clear()
        [record] = open_source(spec, seed=3, limit=1).hydrate(list(pin_scene_png(open_source(spec, seed=3, limit=1),
                                                                               encoding)))
        validate_record(record, InputPolicy(), on_image=seen.append)
        [given] = seen
        drawn = render_image(Scene.model_validate(record.meta["scene"]))
        if encoding == PNG_ISAL:
            assert isinstance(given, np.ndarray) and (given == np.asarray(drawn)).all()
        else:
            assert isinstance(given, Image.Image) and given.tobytes() == drawn.tobytes()
        assert (source_view(given).work == source_view(drawn).work).all()
        assert fingerprint_image(given) == fingerprint_image(drawn)
