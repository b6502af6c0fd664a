"""The pixel gates (no_op_edit, over_edited): offline-world edits, re-encoded as generative editors return
them, against the editor flaws and whole-image changes they must catch; and the edit stage running them
before the judge, with the edited image brought back to the source's size."""

from __future__ import annotations

import asyncio
import io
import random
from typing import Any

import numpy as np
import pytest
from PIL import Image

from benchmarks.pixel_gates import GLOBAL, NOISE, records
from uniedit_synth.backends.base import EditReply, EditRequest
from uniedit_synth.core.config import load_pipeline
from uniedit_synth.core.ledger import Ledger
from uniedit_synth.core.plan import InstructionPlan
from uniedit_synth.core.records import RejectReason, VQARecord
from uniedit_synth.core.specs import PixelGatesSpec
from uniedit_synth.method import pixel_gates
from uniedit_synth.offline.flaws import apply_flaw, expected_edited_png
from uniedit_synth.offline.regions import edit_region
from uniedit_synth.stages.base import Rejected, StageContext, WorkItem
from uniedit_synth.stages.edit import EditStage

LIMITS = pixel_gates.GateLimits()


def image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def judge(source: bytes, edited: Image.Image | bytes, style: str, region: Any = None) -> str | None:
    failed = pixel_gates.verdict(pixel_gates.measure(source, edited, region, LIMITS), LIMITS, style)
    return failed.reason if failed else None


@pytest.fixture(scope="module")
def world() -> list[tuple[str, str, bytes, dict, dict]]:
    return [r for r in records(25, seed=11) if r[0] != "generic/noise"]


def test_defaults_agree_with_the_yaml_model() -> None:
    spec = PixelGatesSpec()
    assert (spec.no_op_delta, spec.shift_delta, spec.spread_share, spec.outside_delta) == (
        LIMITS.no_op_delta, LIMITS.shift_delta, LIMITS.spread_share, LIMITS.outside_delta)  # fmt: skip
    assert spec.max_changed_share == LIMITS.max_changed_share


def test_honest_edits_pass_exact_and_re_encoded(world: list) -> None:
    for _group, style, source, program, meta in world:
        region = edit_region(np.asarray(image(source)), program, meta)
        good = image(expected_edited_png(source, program, meta))
        for name in ("exact", "jpeg85", "resample0.5", "editor:jpeg75", "editor:resample0.5+jpeg75"):
            assert judge(source, NOISE[name](good), style, region) is None, (style, name)


def test_unchanged_and_collateral_flaws_are_caught_through_noise(world: list) -> None:
    for _group, style, source, program, meta in world:
        region = edit_region(np.asarray(image(source)), program, meta)
        for name in ("exact", "jpeg85", "resample0.5", "editor:jpeg75"):
            assert judge(source, NOISE[name](image(source)), style, region) == "no_op_edit"
        flawed, applied = apply_flaw(source, program, meta, "collateral_change", random.Random(3))
        if applied == "collateral_change":
            assert judge(source, NOISE["jpeg85"](image(flawed)), style, region) == "over_edited"


def test_whole_image_changes_are_over_edits_without_a_region(world: list) -> None:
    for _group, style, source, program, meta in world[:8]:
        good = image(expected_edited_png(source, program, meta))
        for name, change in GLOBAL.items():
            assert judge(source, change(good), style) == "over_edited", name


def test_area_limit_is_per_style() -> None:
    source = Image.new("RGB", (200, 150), (120, 130, 140))
    edited = source.copy()
    edited.paste((250, 20, 20), (0, 0, 200, 105))  # 70 % of the picture
    assert judge(png(source), edited, "conditional") == "over_edited"
    wide = pixel_gates.GateLimits(max_changed_share={"conditional": 0.8, "default": 0.6})
    assert pixel_gates.verdict(pixel_gates.measure(png(source), edited), wide, "conditional") is None
    assert pixel_gates.verdict(pixel_gates.measure(png(source), edited), wide, None) is not None  # default


def scene_like(size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A wall over a floor (the floor from 62 % down) with a box on it, as the real-path scenes look."""
    width, height = size
    picture = Image.new("RGB", size, (196, 198, 204))
    picture.paste((150, 140, 128), (0, round(height * 0.62), width, height))
    picture.paste(
        (60, 90, 200), (round(width * 0.4), round(height * 0.45), round(width * 0.55), round(height * 0.7))
    )
    return picture


def test_a_speck_instead_of_the_edit_is_a_no_op() -> None:
    source = scene_like()
    speck = source.copy()
    speck.paste((20, 20, 20), (3, 3, 7, 7))  # a 4x4-px dot: its local change is large, its area a speck's
    measures = pixel_gates.measure(png(source), NOISE["editor:jpeg85"](speck))
    assert measures.peak >= LIMITS.no_op_delta and measures.changed_px < LIMITS.speck_limit("conditional")
    for style in ("conditional", "synthesis", "transform", None):
        failed = pixel_gates.verdict(measures, LIMITS, style)
        assert failed is not None and (failed.reason, failed.gate) == ("no_op_edit", "speck"), style
        assert "min_changed_px" in failed.detail
    # render: one written digit is as small as a speck, so the check is off there (the judge sees it)
    assert pixel_gates.verdict(measures, LIMITS, "render") is None


def test_a_small_honest_edit_is_no_speck() -> None:
    source = scene_like()
    edited = source.copy()
    edited.paste((230, 200, 40), (150, 150, 170, 170))  # a 20x20-px gold mark: small, but an edit
    for name in ("exact", "jpeg85", "editor:jpeg75", "editor:resample0.5+jpeg75"):
        assert judge(png(source), NOISE[name](edited), "conditional") is None, name


@pytest.mark.parametrize("style", ["conditional", "synthesis", "render", "transform", None])
def test_the_edit_plus_the_floor_repainted_is_an_over_edit(style: str | None) -> None:
    source = scene_like()
    edited = source.copy()
    edited.paste((230, 200, 40), (0, round(240 * 0.62), 320, 240))  # the whole floor: 38 % of the picture
    failed = pixel_gates.verdict(
        pixel_gates.measure(png(source), NOISE["editor:jpeg85"](edited)), LIMITS, style
    )
    assert failed is not None and failed.reason == "over_edited", (style, failed)


def test_geometry_is_compared_in_the_sources() -> None:
    source = Image.new("RGB", (320, 240), (90, 120, 150))
    same_upscaled = source.resize((1184, 864), Image.Resampling.BICUBIC)
    assert judge(png(source), same_upscaled, "conditional") == "no_op_edit"
    assert pixel_gates.aspect_error((320, 240), (1184, 864)) < 0.03
    assert pixel_gates.aspect_error((320, 240), (1024, 1024)) == pytest.approx(1 / 3)


# -- the edit stage ------------------------------------------------------------------------------------------
class StubEditor:
    """A caller whose edits come from `replies` in turn; records the requests."""

    def __init__(self, replies: list[bytes]):
        self.replies = list(replies)
        self.requests: list[EditRequest] = []

    async def edit(self, request: EditRequest, ledger: Ledger) -> EditReply:
        self.requests.append(request)
        return EditReply(image=self.replies.pop(0), model="stub")


def stage_item(replies: list[bytes], source: bytes, **edit: Any) -> tuple[EditStage, WorkItem, StubEditor]:
    config = load_pipeline("default", {"stages": {"edit": {"prompt": None, **edit}}})
    caller = StubEditor(replies)
    stage = EditStage(StageContext(config=config, callers={"edit": caller}, models={"edit": "stub"}))
    record = VQARecord(id="t/1", source="t", image=source, question="What colour?", answer="red")
    item = WorkItem(record=record, shard=0, image=source, instruction="paint the box red",
                    plan=InstructionPlan(style="synthesis"))  # fmt: skip
    return stage, item, caller


def picture_pair() -> tuple[bytes, Image.Image]:
    source = Image.new("RGB", (320, 240), (90, 120, 150))
    edited = source.copy()
    edited.paste((230, 40, 40), (120, 90, 200, 150))
    return png(source), edited


def test_stage_edits_again_after_a_no_op_and_keeps_the_source_size() -> None:
    source, edited = picture_pair()
    again = png(edited.resize((1536, 1024), Image.Resampling.BICUBIC))  # gpt-image-1's nearest size for 4:3
    stage, item, caller = stage_item([source, again], source)
    asyncio.run(stage(item, 0))
    assert [r.attempt for r in caller.requests] == [0, 1] and item.attempts == 2
    assert all(r.source_size == (320, 240) for r in caller.requests)
    assert image(item.edited_image).size == (320, 240)


def test_stage_rejects_after_the_last_attempt_without_going_on() -> None:
    source, _ = picture_pair()
    shifted = png(Image.new("RGB", (320, 240), (110, 140, 170)))  # a tone shift of the whole picture
    stage, item, caller = stage_item([source, shifted], source)
    with pytest.raises(Rejected) as caught:
        asyncio.run(stage(item, 0))
    assert caught.value.reason is RejectReason.over_edited and "shift" in caught.value.detail
    assert len(caller.requests) == 2
    stage, item, caller = stage_item([source], source, max_attempts=1)
    with pytest.raises(Rejected) as caught:
        asyncio.run(stage(item, 0))
    assert caught.value.reason is RejectReason.no_op_edit


def test_gates_and_geometry_can_be_switched_off() -> None:
    source, edited = picture_pair()
    square = png(edited.resize((512, 512)))
    stage, item, caller = stage_item([source], source, gates={"enabled": False}, keep_geometry=False)
    asyncio.run(stage(item, 0))
    assert item.edited_image == source and caller.requests[0].source_size is None
    stage, item, _ = stage_item([square], source, keep_geometry=False)
    asyncio.run(stage(item, 0))
    assert image(item.edited_image).size == (512, 512)  # the release's fixed geometry, stored as returned
