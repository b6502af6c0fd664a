"""The offline world: scene generation, rendering, questions, edit programs and their verification."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
from PIL import Image

from uniedit_synth.offline import choose, flaws, generic, verify
from uniedit_synth.offline import program as prog
from uniedit_synth.offline.questions import (
    SCENE_CATEGORIES,
    answer_query,
    generate_vqa,
    mentions_answer,
    normalise_answer,
    select,
)
from uniedit_synth.offline.render import render_png, slot_box
from uniedit_synth.offline.world import GRID_COLS, GRID_ROWS, Board, Scene, SceneObject, Sign, generate_scene
from uniedit_synth.sources.scenes import ScenesSource


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def small_scene() -> Scene:
    return Scene(
        size=128,
        objects=[
            SceneObject(id=0, shape="cube", color="red", size="large", material="metal", col=0, row=2),
            SceneObject(id=1, shape="sphere", color="red", size="small", material="rubber", col=2, row=2),
            SceneObject(id=2, shape="cone", color="blue", size="small", material="rubber", col=3, row=0),
        ],
        signs=[Sign(slot="left", text="LEMON"), Sign(slot="middle", text="")],
        boards=[Board(slot="right", a=7, op="+", b=5)],
    )


def count_red_program(if_true: dict, if_false: dict, test: dict | None = None) -> dict:
    return {
        "kind": "scene",
        "version": 1,
        "condition": {"query": {"type": "count", "filter": {"color": "red"}}, "test": test or {"op": "even"}},
        "if_true": if_true,
        "if_false": if_false,
    }


# ---------------------------------------------------------------- world and rendering


def test_generate_scene_is_seeded_and_cells_do_not_overlap() -> None:
    for i in range(200):
        scene = generate_scene(random.Random(i))
        assert scene == generate_scene(random.Random(i))
        cells = [(o.col, o.row) for o in scene.objects]
        assert len(cells) == len(set(cells))
        assert all(0 <= c < GRID_COLS and 0 <= r < GRID_ROWS for c, r in cells)
        assert 3 <= len(scene.objects) <= 7
    assert generate_scene(random.Random(1)) != generate_scene(random.Random(2))


def test_generate_scene_meets_requirements() -> None:
    for i in range(300):
        scene = generate_scene(random.Random(i), require=("sign", "board", "free_slot"))
        assert any(s.text for s in scene.signs)
        assert scene.boards
        assert scene.free_slots()
    with pytest.raises(ValueError, match="unknown requirement"):
        generate_scene(random.Random(0), require=("dragon",))


def test_scene_json_round_trip_renders_identically() -> None:
    scene = generate_scene(random.Random(5), require=("sign", "board"))
    blob = json.dumps(scene.model_dump(mode="json"))
    again = Scene.model_validate(json.loads(blob))
    assert again == scene
    assert render_png(again) == render_png(scene)


def test_render_is_deterministic_sized_and_draws_text() -> None:
    scene = small_scene()
    png = render_png(scene)
    assert png == render_png(scene.model_copy(deep=True))
    assert png.startswith(b"\x89PNG")
    assert pixels(png).shape == (128, 128, 3)
    blank = scene.model_copy(deep=True)
    blank.signs[0].text = ""
    x0, y0, x1, y1 = slot_box("left", 128)
    diff = np.abs(pixels(png).astype(int) - pixels(render_png(blank)).astype(int)).max(axis=2) > 24
    assert diff[y0:y1, x0:x1].sum() > 20, "the sign's text is not drawn"
    assert diff.sum() == diff[y0:y1, x0:x1].sum(), "text drawn outside its sign"


def test_metal_and_rubber_render_differently() -> None:
    rubber = Scene(
        objects=[
            SceneObject(id=0, shape="sphere", color="red", size="large", material="rubber", col=1, row=1)
        ]
    )
    metal = rubber.model_copy(deep=True)
    metal.objects[0].material = "metal"
    assert render_png(rubber) != render_png(metal)


# ---------------------------------------------------------------- source and questions


def test_source_is_deterministic_prefix_stable_and_streams() -> None:
    first = list(ScenesSource(count=16, seed=7))
    again = list(ScenesSource(count=16, seed=7))
    assert [r.model_dump() for r in first] == [r.model_dump() for r in again]
    longer = ScenesSource(count=40, seed=7)
    assert longer.estimated_len() == 40
    prefix = [r for _, r in zip(range(16), iter(longer), strict=False)]
    assert [r.model_dump() for r in prefix] == [r.model_dump() for r in first]
    other = list(ScenesSource(count=16, seed=8))
    assert [r.image for r in other] != [r.image for r in first]
    assert first[3].id == "scenes/7-000003"
    assert len({r.id for r in first}) == 16


def test_source_records_are_consistent_with_their_scene() -> None:
    records = list(ScenesSource(count=28, seed=1, image_size=128))
    assert {r.category for r in records} == set(SCENE_CATEGORIES)
    for record in records:
        assert record.source == "scenes"
        assert record.meta["world"] == "scenes"
        scene = Scene.model_validate(record.meta["scene"])
        spec = record.meta["question_spec"]
        assert spec["category"] == record.category
        assert str(answer_query(scene, spec["query"])) == record.answer
        assert record.image == render_png(scene)
        assert pixels(record.image).shape == (128, 128, 3)
        # a multiple-choice question lists its answer among the options, by design
        assert mentions_answer(record.question, record.answer) == (record.category == "multi-choice")


def test_source_category_filter_and_errors() -> None:
    records = list(ScenesSource(count=6, categories=["ocr", "math"]))
    assert [r.category for r in records] == ["ocr", "math"] * 3
    from uniedit_synth.core.errors import SourceError

    with pytest.raises(SourceError, match="unknown category"):
        ScenesSource(categories=["poetry"])


@pytest.mark.parametrize("category", SCENE_CATEGORIES)
def test_questions_never_state_their_answer(category: str) -> None:
    rng = random.Random(category)
    for _ in range(150):
        scene, question, answer, spec = generate_vqa(rng, category, size=128)
        assert answer
        words = question.lower().replace("?", " ").replace(",", " ").replace(":", " ").replace(".", " ").split()
        if category == "multi-choice":  # the options are listed, the answer among them
            assert answer.lower() in words and [str(o) for o in spec["query"]["options"]].count(answer) == 1
        else:
            assert answer.lower() not in words
        assert str(answer_query(scene, spec["query"])) == answer


def test_relation_selector_finds_the_nearest_object() -> None:
    scene = small_scene()
    left_of_sphere = {"relation": {"dir": "left_of", "anchor": {"shape": "sphere"}}}
    assert [o.id for o in select(scene, left_of_sphere)] == [0]
    behind_sphere = {"relation": {"dir": "behind", "anchor": {"shape": "sphere"}}}
    assert select(scene, behind_sphere) == []


def test_answer_normalisation_and_leak_matching() -> None:
    assert normalise_answer("  Three. ") == "3"
    assert normalise_answer("The Red") == "red"
    assert normalise_answer("12.0") == "12"
    assert mentions_answer("paint it RED now", "red")
    assert mentions_answer("there are three cubes", "3")
    assert mentions_answer("remove all cubes", "cube")
    assert mentions_answer("the sign says lemon", "LEMON")
    assert not mentions_answer("paint it reddish", "red")
    assert not mentions_answer("more than 13", "3")


# ---------------------------------------------------------------- edit programs


def test_apply_program_evaluates_the_condition_on_the_scene() -> None:
    scene = small_scene()  # two red objects: "even" holds
    program = count_red_program(
        {"op": "recolor", "target": {"shape": "cone"}, "color": "yellow"},
        {"op": "remove", "target": {"shape": "cone"}},
    )
    edited = prog.apply_program(scene, program)
    assert [o.color for o in edited.objects if o.shape == "cone"] == ["yellow"]
    program["condition"]["test"] = {"op": "odd"}
    edited = prog.apply_program(scene, program)
    assert not any(o.shape == "cone" for o in edited.objects)
    assert len(scene.objects) == 3, "apply_program must not mutate its input"


def test_actions_add_resize_and_write_text_use_the_answer() -> None:
    scene = small_scene()
    board_query = {"type": "board", "slot": "right"}
    program = {
        "kind": "scene",
        "condition": {"query": board_query, "test": {"op": "gt", "value": 10}},
        "if_true": {"op": "write_text", "slot": "right", "text": "$answer"},
        "if_false": {"op": "write_text", "slot": "middle", "text": "$answer"},
    }
    edited = prog.apply_program(scene, program)
    assert edited.boards[0].label() == "7 + 5 = 12"
    program["condition"]["test"] = {"op": "gt", "value": 12}
    assert prog.apply_program(scene, program).signs[1].text == "12"
    add = count_red_program(
        {
            "op": "add",
            "object": {"shape": "cylinder", "color": "green", "size": "large", "material": "metal"},
            "cell": [1, 0],
        },
        {"op": "resize", "target": {"shape": "cube"}, "size": "small"},
    )
    added = prog.apply_program(scene, add)
    assert [(o.shape, o.col, o.row) for o in added.objects][-1] == ("cylinder", 1, 0)
    add["condition"]["test"] = {"op": "odd"}
    assert prog.apply_program(scene, add).objects[0].size == "small"
    with pytest.raises(prog.ProgramError, match="taken"):
        prog.apply_action(scene, {**add["if_true"], "cell": [0, 2]}, 0)


def test_scene_program_branches_are_distinct_and_visible() -> None:
    rng = random.Random(3)
    for category in SCENE_CATEGORIES:
        for _ in range(20):
            scene, _, answer, spec = generate_vqa(rng, category, size=128)
            program = choose.scene_program(scene, spec, rng, avoid=answer)
            assert json.loads(json.dumps(program)) == program
            original = scene.model_dump()
            results = [prog.apply_branch(scene, program, b).model_dump() for b in (True, False)]
            assert original not in results
            assert results[0] != results[1]


def test_verify_accepts_the_expected_edit_and_rejects_flaws() -> None:
    rng = random.Random(11)
    for category in SCENE_CATEGORIES:
        for _ in range(6):
            scene, _, answer, spec = generate_vqa(rng, category, size=128)
            meta = {"world": "scenes", "scene": scene.model_dump(mode="json"), "question_spec": spec}
            program = choose.scene_program(scene, spec, rng, avoid=answer)
            source = render_png(scene)
            good = flaws.expected_edited_png(source, program, meta)
            verdict = verify.verify(source, good, program, meta)
            assert verdict.ok and min(verdict.scores.values()) >= 4, verdict
            for flaw in flaws.FLAWS:
                bad = flaws.flawed_edit(source, program, meta, flaw, random.Random(flaw))
                assert bad != good
                verdict = verify.verify(source, bad, program, meta)
                assert not verdict.ok
                assert verdict.scores["instruction_following"] <= 2, (flaw, verdict)


def test_verify_names_the_wrong_branch_and_bad_images() -> None:
    scene = small_scene()
    meta = {"scene": scene.model_dump(mode="json")}
    program = count_red_program(
        {"op": "recolor", "target": {"shape": "cone"}, "color": "yellow"},
        {"op": "remove", "target": {"shape": "cone"}},
    )
    source = render_png(scene)
    wrong = render_png(prog.apply_branch(scene, program, False))
    verdict = verify.verify(source, wrong, program, meta)
    assert verdict.scores["instruction_following"] == 1 and "wrong branch" in verdict.analysis
    garbage = verify.verify(source, b"not an image", program, meta)
    assert not garbage.ok and garbage.scores["visual_quality"] == 1
    resized = io.BytesIO()
    Image.open(io.BytesIO(source)).resize((64, 64)).save(resized, "PNG")
    assert not verify.verify(source, resized.getvalue(), program, meta).ok


# ---------------------------------------------------------------- generic mode


def random_png(width: int = 200, height: int = 150, seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("How many dogs are there?", "3"),
        ("What color is the bus?", "red"),
        ("Is it raining?", "no"),
        ("What does the sign say?", "STOP"),
        ("What is the man holding?", "a red umbrella"),
    ],
)
def test_generic_edit_changes_only_its_region(question: str, answer: str) -> None:
    source = random_png()
    program = generic.generic_program(question, answer, "others", (200, 150), random.Random(question))
    assert program["kind"] == "generic"
    edited = generic.apply_generic(source, program)
    assert edited == generic.apply_generic(source, program)
    taken = generic.generic_branch_taken(program)
    x0, y0, x1, y1 = generic.corner_box(program["if_true" if taken else "if_false"]["corner"], 200, 150)
    changed = np.abs(pixels(edited).astype(int) - pixels(source).astype(int)).max(axis=2) > 0
    inside = np.zeros_like(changed)
    inside[y0:y1, x0:x1] = True
    assert changed[inside].mean() > 0.3
    assert not changed[~inside].any()
    good = verify.verify(source, edited, program, {})
    assert good.ok and min(good.scores.values()) >= 4
    for flaw in flaws.FLAWS:
        bad = flaws.flawed_edit(source, program, {}, flaw, random.Random(0))
        verdict = verify.verify(source, bad, program, {})
        assert not verdict.ok and verdict.scores["instruction_following"] <= 2, (flaw, verdict)


def test_generic_verify_rejects_other_content_in_the_right_region() -> None:
    """The generic judge compares the box with a re-render of the expected panel pixel by pixel: other
    content in the right place is a wrong edit (it used to pass with a mean over the box)."""
    source = random_png(seed=1)
    program = generic.generic_program("How many cats?", "4", "count", 200, random.Random(0))
    taken = generic.generic_branch_taken(program)
    x0, y0, x1, y1 = generic.corner_box(program["if_true" if taken else "if_false"]["corner"], 200, 150)
    image = Image.open(io.BytesIO(source)).convert("RGB")
    image.paste((10, 200, 10), (x0, y0, x1, y1))  # right place, other content
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    verdict = verify.verify(source, buffer.getvalue(), program, {})
    assert not verdict.ok and verdict.scores["instruction_following"] == 2
    image.paste((10, 200, 10), (0, 60, 200, 90))  # and a stray band across the image
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    assert not verify.verify(source, buffer.getvalue(), program, {}).ok


def test_generic_verify_rejects_a_wrong_digit() -> None:
    """A panel showing 8 where the answer is 7 scored 5/5/5 under the old mean-over-the-box check."""
    source = random_png(seed=4)
    program = generic.generic_program("How many birds?", "7", "count", 200, random.Random(2), plan={"style": "render"})
    good = generic.apply_generic(source, program)
    assert verify.verify(source, good, program, {}).ok
    wrong = dict(program, if_true={**program["if_true"], "text": "8"})
    verdict = verify.verify(source, generic.apply_generic(source, wrong), program, {})
    assert not verdict.ok and verdict.scores["instruction_following"] <= 2, verdict


def test_generic_mode_reads_jpeg_and_grayscale_sources() -> None:
    gray = Image.fromarray(np.random.default_rng(2).integers(0, 256, (90, 120), dtype=np.uint8), "L")
    buffer = io.BytesIO()
    gray.save(buffer, "JPEG")
    source = buffer.getvalue()
    program = generic.generic_program("What is written?", "EXIT", "ocr", (120, 90), random.Random(1))
    edited = generic.apply_generic(source, program)
    assert pixels(edited).shape == (90, 120, 3)
    assert verify.verify(source, edited, program, {}).ok


def test_programs_exist_for_scenes_of_look_alike_objects() -> None:
    """No object but the asked-about one can be singled out, and the wall has no free slot."""
    twins = [
        SceneObject(id=0, shape="cylinder", color="red", size="small", material="rubber", col=1, row=0),
        SceneObject(id=1, shape="cylinder", color="red", size="small", material="rubber", col=2, row=0),
        SceneObject(id=2, shape="cube", color="yellow", size="small", material="rubber", col=3, row=2),
    ]
    wall = [Sign(slot=s, text="OPEN") for s in ("left", "middle", "right")]
    scene = Scene(size=96, objects=twins, signs=wall)
    side = {"category": "location", "query": {"type": "side", "ref": {"color": "yellow"}}}
    total = {
        "category": "math",
        "query": {"type": "count_arith", "op": "+", "filters": [{"shape": "cube"}, {"shape": "cylinder"}]},
    }
    for spec, answer in ((side, "right"), (total, "3")):
        for seed in range(10):
            program = choose.scene_program(scene, spec, random.Random(seed), avoid=answer)
            results = [prog.apply_branch(scene, program, b).model_dump() for b in (True, False)]
            assert scene.model_dump() not in results and results[0] != results[1]


def test_deferred_render_gives_the_same_image_in_validation() -> None:
    from uniedit_synth.core.config import InputPolicy
    from uniedit_synth.sources.validate import validate_record

    eager = ScenesSource(count=3, seed=2).record(2)
    lazy = ScenesSource(count=3, seed=2, defer_render=True).record(2)
    assert lazy.image is None and lazy.id == eager.id
    assert validate_record(lazy, InputPolicy()).image == validate_record(eager, InputPolicy()).image
