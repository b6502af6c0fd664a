"""The faster image paths of issue 31 give what the slower ones gave: each is checked against the code it
replaced (kept here as the reference), on random inputs and on real offline-world images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.fakes.base import edited_png
from uniedit_synth.core.config import InputPolicy
from uniedit_synth.method import masks, pixel_gates
from uniedit_synth.offline.observe import _grow
from uniedit_synth.sources.scenes import ScenesSource
from uniedit_synth.sources.validate import validate_record
from uniedit_synth.stages.edit import fit_to_size, to_size

RNG = np.random.default_rng(31)


def old_cell_share(local: np.ndarray, gradient: np.ndarray, level: float) -> float:
    height, width = local.shape
    rows = np.array_split(np.arange(height), min(pixel_gates.GRID, height))
    cols = np.array_split(np.arange(width), min(pixel_gates.GRID, width))
    structured = changed = 0
    for r in rows:
        for c in cols:
            if gradient[np.ix_(r, c)].max() >= level:
                structured += 1
                changed += bool(local[np.ix_(r, c)].max() >= level)
    return changed / structured if structured >= pixel_gates.MIN_STRUCTURED_CELLS else 0.0


@pytest.mark.parametrize("shape", [(256, 256), (256, 171), (171, 256), (9, 13), (3, 5), (100, 37)])
def test_cell_share_matches_the_block_loop(shape: tuple[int, int]) -> None:
    for _ in range(10):
        local = RNG.normal(20, 10, shape).astype(np.float32)
        gradient = RNG.normal(20, 10, shape).astype(np.float32)
        assert pixel_gates._cell_share(local, gradient, 25.0) == old_cell_share(local, gradient, 25.0)


def test_channel_max_and_changed_beyond_match_numpy() -> None:
    for dtype in (np.float32, np.int16, np.uint8):
        array = RNG.integers(0, 255, (31, 17, 3)).astype(dtype)
        assert np.array_equal(masks.channel_max(array), array.max(axis=2))
    a = RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    b = RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    reference = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > 24
    assert np.array_equal(masks.changed_beyond(a, b, 24), reference)
    assert np.array_equal(masks.changed_beyond(a.astype(np.int32), b, 24), reference)  # the fallback


def test_grow_matches_pillows_max_filter_up_to_the_border() -> None:
    for density in (0.002, 0.02):
        mask = RNG.random((64, 80)) < density
        mask[0, 5] = mask[63, 79] = True  # on the border too
        reference = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255, "L").filter(ImageFilter.MaxFilter(9))) > 0
        assert np.array_equal(_grow(mask), reference)


def scene_png(size: int = 256) -> bytes:
    image = ScenesSource(count=1, image_size=size).record(0).image
    assert image is not None
    return image


def test_measure_of_a_source_view_equals_measure_of_its_bytes() -> None:
    source = scene_png()
    edited = edited_png(source, size=(1024, 1024))
    view = pixel_gates.source_view(source)
    assert view.size == (256, 256) and view.work.shape == (256, 256, 3)
    resized, pixels = fit_to_size(edited, view.size)
    assert resized == to_size(edited, view.size) and pixels is not None
    assert pixel_gates.measure(view, pixels) == pixel_gates.measure(source, resized)
    assert fit_to_size(source, view.size) == (source, None)  # already at size: the bytes as they came


def test_a_rendered_scene_is_validated_without_decoding_its_png_and_gives_the_same_record() -> None:
    lazy = ScenesSource(count=1, image_size=256, defer_render=True).record(0)
    assert lazy.image is None
    seen: list[Image.Image] = []
    clean = validate_record(lazy, InputPolicy(), None, seen.append)
    assert clean.image == scene_png()
    with Image.open(io.BytesIO(clean.image)) as decoded:
        assert np.array_equal(np.asarray(seen[0]), np.asarray(decoded.convert("RGB")))
    # a policy that shrinks the image still goes through normalisation
    small = validate_record(lazy, InputPolicy(max_side=128), None)
    with Image.open(io.BytesIO(small.image)) as decoded:
        assert decoded.size == (128, 128)


def test_validation_leaves_the_gates_view_and_a_changed_image_is_decoded_again() -> None:
    from uniedit_synth.core.records import VQARecord
    from uniedit_synth.stages.base import WorkItem, with_source_view

    lazy = ScenesSource(count=1, image_size=256, defer_render=True).record(0)
    item = WorkItem(record=lazy, shard=0)
    seen: list[Image.Image] = []
    hook = with_source_view(seen.append, item, enabled=True)
    clean = validate_record(lazy, InputPolicy(), None, hook)
    assert len(seen) == 1 and item.source_view is not None and item.source_view[0] is None
    view = item.source_view[1]
    assert view.size == (256, 256) and np.array_equal(view.work, pixel_gates.source_view(clean.image).work)
    assert with_source_view(None, item, enabled=False) is None  # gates off: nothing kept
    # a view of other bytes (a chain's next turn reusing an item) is never measured against: the gate decodes
    # the item's own image; an unchanged edit of it is a no-op, where the stale view would see a whole new scene
    import yaml

    from uniedit_synth.core.bundled import pipelines_dir
    from uniedit_synth.core.config import parse_pipeline
    from uniedit_synth.stages.base import StageContext
    from uniedit_synth.stages.edit import EditStage

    config = parse_pipeline(yaml.safe_load((pipelines_dir() / "default.yaml").read_text()))
    stage = EditStage(StageContext(config=config, callers={}, models={}))
    mine = ScenesSource(count=2, image_size=256).record(1).image
    assert mine is not None and mine != clean.image
    other = WorkItem(record=VQARecord(id="x", source="s", question="q", answer="a"), shard=0, image=mine,
                     edited_image=mine, source_view=(clean.image, view))
    failed = stage._gate(other)
    assert failed is not None and failed.reason == "no_op_edit"
    assert other.source_view is not None and other.source_view[0] is mine
