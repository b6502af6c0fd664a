"""The machine-checkable edit program: choosing one for a question, applying it, and verifying an edit.

Two kinds of program, both plain JSON dicts:

* `kind: "scene"` — for images from the offline world. The condition is the record's own query
  (questions.py); its value on the scene picks `if_true` or `if_false`, and an action may use that value
  (`"$answer"`: "paint it that same colour", "write the result on the board")::

      {"kind": "scene", "version": 1,
       "condition": {"query": {"type": "count", "filter": {"color": "red"}}, "test": {"op": "even"}},
       "if_true": {"op": "recolor", "target": {"shape": "cube"}, "color": "yellow"},
       "if_false": {"op": "remove", "target": {"size": "large", "shape": "sphere"}}}

  Actions: recolor, remove, resize, add, write_text. The expected edit is the scene re-rendered, so a
  verification is a pixel comparison.
* `kind: "generic"` — for any other image. The branch is decided by the (known) answer; each branch draws
  a panel or a tint into its own corner box, so the judge checks that pixels changed inside the right box
  and (nearly) nowhere else.
"""

from __future__ import annotations

import io
import random
import re
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel

from .questions import (
    FLAT_TOP_SHAPES,
    POINTED_SHAPES,
    ROLLING_SHAPES,
    WARM_COLORS,
    QueryError,
    answer_query,
    mentions_answer,
    normalise_answer,
    select,
    unique_filter,
)
from .render import draw_text_centered, encode_png, render_image, render_png
from .world import COLORS, MATERIALS, SHAPES, SIZES, Board, Scene, SceneObject, Sign

PROGRAM_VERSION = 1
ANSWER = "$answer"
SCORE_NAMES = ("instruction_following", "visual_quality", "coherence")
# A pixel "changed" when some channel moved by more than this (absorbs mild re-encoding noise).
PIXEL_TOLERANCE = 24
# Share of pixels that may differ from the expected render for an edit to still count as exact. Tiny on
# purpose: one wrong digit on a board changes only a few dozen pixels of a 256x256 render.
SCENE_MISMATCH_SHARE = 0.0001
FLAWS = ("wrong_branch", "wrong_detail", "unchanged")


class ProgramError(ValueError):
    """The program is malformed or does not fit the scene / image it is applied to."""


class VerifyResult(BaseModel):
    """A judge's verdict on one edit: scores 1–5 per criterion, and why."""

    ok: bool
    scores: dict[str, int]
    analysis: str


# ================================================================ scene programs: semantics


def condition_holds(test: dict[str, Any], value: int | str, scene: Scene) -> bool:
    """Does the condition's `test` hold for the query `value`?"""
    op = test["op"]
    if op == "even":
        return int(value) % 2 == 0
    if op == "odd":
        return int(value) % 2 == 1
    if op == "gt":
        return int(value) > int(test["value"])
    if op == "lt":
        return int(value) < int(test["value"])
    if op == "same_as":
        return value == answer_query(scene, test["other"])
    if op == "is_side":
        return value == test["value"]
    if op == "warm":
        return value in WARM_COLORS
    if op == "rolls":
        return value in ROLLING_SHAPES
    if op == "flat_top":
        return value in FLAT_TOP_SHAPES
    if op == "pointed":
        return value in POINTED_SHAPES
    if op == "len_gt":
        return len(str(value)) > int(test["value"])
    if op == "vowel_start":
        return str(value)[:1].upper() in "AEIOU"
    raise ProgramError(f"unknown test op {op!r}")


def condition_value(scene: Scene, program: dict[str, Any]) -> int | str:
    try:
        return answer_query(scene, program["condition"]["query"])
    except (QueryError, KeyError) as exc:
        raise ProgramError(f"the program's question has no answer on this scene: {exc}") from None


def branch_taken(scene: Scene, program: dict[str, Any]) -> bool:
    """True when the condition holds on `scene`, i.e. `if_true` is the correct branch."""
    value = condition_value(scene, program)
    try:
        return condition_holds(program["condition"]["test"], value, scene)
    except (QueryError, KeyError, ValueError) as exc:
        raise ProgramError(f"the program's test cannot be evaluated: {exc}") from None


def _resolve(field: Any, value: int | str) -> Any:
    return str(value) if field == ANSWER else field


def apply_action(scene: Scene, action: dict[str, Any], value: int | str) -> Scene:
    """A new scene with one action applied (`"$answer"` fields take the condition's value)."""
    out = scene.model_copy(deep=True)
    op = action["op"]
    if op in ("recolor", "remove", "resize"):
        targets = {o.id for o in select(out, action["target"])}
        if not targets:
            raise ProgramError(f"{op}: target {action['target']} matches nothing")
        if op == "remove":
            out.objects = [o for o in out.objects if o.id not in targets]
        for obj in out.objects:
            if obj.id in targets and op == "recolor":
                obj.color = _resolve(action["color"], value)
            elif obj.id in targets and op == "resize":
                obj.size = action["size"]
        return out
    if op == "add":
        col, row = action["cell"]
        if (col, row) in out.occupied_cells():
            raise ProgramError(f"add: cell {col},{row} is taken")
        spec = {k: _resolve(v, value) for k, v in action["object"].items()}
        out.objects.append(SceneObject(id=out.next_object_id(), col=col, row=row, **spec))
        return out
    if op == "write_text":
        text = str(_resolve(action["text"], value))
        item = out.wall_item(action["slot"])
        if isinstance(item, Board):
            item.result = text
        elif isinstance(item, Sign):
            item.text = text
        else:
            out.signs.append(Sign(slot=action["slot"], text=text))
        return out
    raise ProgramError(f"unknown action op {op!r}")


def apply_branch(scene: Scene, program: dict[str, Any], branch: bool) -> Scene:
    """The scene after running one branch (the condition's value still feeds `"$answer"`)."""
    value = condition_value(scene, program)
    return apply_action(scene, program["if_true" if branch else "if_false"], value)


def apply_program(scene: Scene, program: dict[str, Any]) -> Scene:
    """The correctly edited scene: evaluate the condition on `scene` itself, run the branch it selects."""
    return apply_branch(scene, program, branch_taken(scene, program))


# ================================================================ scene programs: choosing one


def value_kind(query: dict[str, Any], value: int | str) -> str:
    """What the answer is ("number", "color", "shape", "side" or "text"), for picking tests and actions."""
    if isinstance(value, int):
        return "number"
    if query["type"] == "attr":
        return str(query["attr"])
    if query["type"] == "side":
        return "side"
    return "text"


def _other_unique(
    scene: Scene, rng: random.Random, avoid: str, exclude_ids: set[int], exclude_attrs: tuple[str, ...] = ()
) -> tuple[SceneObject, dict[str, Any]] | None:
    candidates = [o for o in scene.objects if o.id not in exclude_ids]
    rng.shuffle(candidates)
    for obj in candidates:
        where = unique_filter(scene, obj, rng, exclude=exclude_attrs, avoid=avoid)
        if where is not None:
            return obj, where
    return None


def choose_test(
    scene: Scene, query: dict[str, Any], value: int | str, rng: random.Random, avoid: str, ref_ids: set[int]
) -> dict[str, Any] | None:
    kind = value_kind(query, value)
    if kind == "number":
        n = int(value)
        options: list[dict[str, Any]] = [{"op": "even"}, {"op": "odd"}]
        options += [{"op": "gt", "value": t} for t in (n - 1, n + 1) if t >= 0]
        options += [{"op": "lt", "value": t} for t in (n - 1, n + 1) if t >= 1]
        return rng.choice(options)
    if kind in ("color", "shape", "side"):
        facts = {"color": ["warm"], "shape": ["rolls", "flat_top", "pointed"], "side": []}[kind]
        if facts and rng.random() < 0.5:
            return {"op": rng.choice(facts)}
        other = _other_unique(scene, rng, avoid, ref_ids, exclude_attrs=(kind,) if kind != "side" else ())
        if other is None and kind == "side":
            # Nothing else to compare with: name the *other* half, so the text never states the answer.
            return {"op": "is_side", "value": "right" if value == "left" else "left"}
        if other is None:
            return {"op": rng.choice(facts)}
        _, where = other
        if kind == "side":
            return {"op": "same_as", "other": {"type": "side", "ref": where}}
        return {"op": "same_as", "other": {"type": "attr", "attr": kind, "ref": where}}
    word = str(value)
    if rng.random() < 0.5:
        return {"op": "vowel_start"}
    return {"op": "len_gt", "value": rng.choice([k for k in (len(word) - 1, len(word)) if k >= 1])}


def _plain_actions(
    scene: Scene, rng: random.Random, avoid: str, ref: dict[str, Any] | None, ref_ids: set[int]
) -> list[dict[str, Any]]:
    """Actions that do not use the answer: recolor, remove, resize an object, or add one."""
    targets: list[tuple[SceneObject, dict[str, Any]]] = []
    if ref is not None and len(ref_ids) == 1:
        obj = next(o for o in scene.objects if o.id in ref_ids)
        targets.append((obj, ref))
    other = _other_unique(scene, rng, avoid, ref_ids) or _group_target(scene, rng, avoid, ref_ids)
    if other is not None:
        targets.append(other)
    actions: list[dict[str, Any]] = []
    palette = [c for c in COLORS if not mentions_answer(c, avoid)] if avoid else list(COLORS)
    for obj, where in targets:
        every = {"every": True} if len(select(scene, where)) > 1 else {}
        colors = [c for c in palette if c != obj.color]
        actions.append({"op": "recolor", "target": where, "color": rng.choice(colors), **every})
        actions.append({"op": "remove", "target": where, **every})
        size = "small" if obj.size == "large" else "large"
        actions.append({"op": "resize", "target": where, "size": size, **every})
    free = scene.free_cells()
    if free:
        actions.append({"op": "add", "object": _new_object(rng, avoid), "cell": list(rng.choice(free))})
    return actions


def _group_target(
    scene: Scene, rng: random.Random, avoid: str, exclude_ids: set[int]
) -> tuple[SceneObject, dict[str, Any]] | None:
    """When no object can be singled out (look-alike duplicates): one object's attributes as a filter that
    may pick several, for an edit of "every small red cylinder". Answer-stating values are left out."""
    candidates = [o for o in scene.objects if o.id not in exclude_ids] or list(scene.objects)
    if not candidates:
        return None
    obj = rng.choice(candidates)
    where = {a: getattr(obj, a) for a in ("size", "color", "material", "shape")}
    return obj, {a: v for a, v in where.items() if not (avoid and mentions_answer(v, avoid))}


def _new_object(rng: random.Random, avoid: str, **fixed: str) -> dict[str, str]:
    def pick(options: tuple[str, ...] | list[str]) -> str:
        allowed = [o for o in options if not (avoid and mentions_answer(o, avoid))]
        return rng.choice(allowed or list(options))

    spec = {
        "size": pick(SIZES),
        "color": pick(list(COLORS)),
        "material": pick(MATERIALS),
        "shape": pick(SHAPES),
    }
    spec.update(fixed)
    return spec


def _answer_actions(
    scene: Scene,
    query: dict[str, Any],
    value: int | str,
    rng: random.Random,
    avoid: str,
    ref_ids: set[int],
) -> list[dict[str, Any]]:
    """Actions that use the answer itself: paint in that colour, add that shape, write that number / word."""
    kind = value_kind(query, value)
    actions: list[dict[str, Any]] = []
    free = scene.free_cells()
    if kind == "color":
        other = _other_unique(scene, rng, avoid, ref_ids, exclude_attrs=("color",))
        if other is not None and other[0].color != value:
            actions.append({"op": "recolor", "target": other[1], "color": ANSWER})
        if free:
            obj = _new_object(rng, avoid, color=ANSWER)
            actions.append({"op": "add", "object": obj, "cell": list(rng.choice(free))})
    elif kind == "shape" and free:
        obj = _new_object(rng, avoid, shape=ANSWER)
        actions.append({"op": "add", "object": obj, "cell": list(rng.choice(free))})
    elif kind in ("number", "text"):
        if query["type"] == "board":
            actions.append({"op": "write_text", "slot": query["slot"], "text": ANSWER})
        for slot in scene.free_slots():
            actions.append({"op": "write_text", "slot": slot, "text": ANSWER})
    return actions


def scene_program(
    scene: Scene, question_spec: dict[str, Any], rng: random.Random, avoid: str = "", tries: int = 16
) -> dict[str, Any]:
    """A nested-logic edit program for a scene question, drawn from `rng`.

    Both branches change the scene, and differently, so taking the wrong branch is always visible.
    `avoid` (the answer) keeps answer-stating attribute values out of every reference the program makes.
    """
    query = question_spec["query"]
    value = answer_query(scene, query)
    ref = query.get("ref")
    ref_ids = {o.id for o in select(scene, ref)} if ref is not None else set()
    for _ in range(tries):
        test = choose_test(scene, query, value, rng, avoid, ref_ids)
        if test is None:
            continue
        with_answer = _answer_actions(scene, query, value, rng, avoid, ref_ids)
        plain = _plain_actions(scene, rng, avoid, ref, ref_ids)
        if with_answer and plain and rng.random() < 0.6:
            pair = [rng.choice(with_answer), rng.choice(plain)]
            rng.shuffle(pair)
        elif len(with_answer) >= 2 and rng.random() < 0.5:
            pair = rng.sample(with_answer, 2)
        elif len(plain) >= 2:
            pair = rng.sample(plain, 2)
        else:
            continue
        program = {
            "kind": "scene",
            "version": PROGRAM_VERSION,
            "condition": {"query": query, "test": test},
            "if_true": pair[0],
            "if_false": pair[1],
        }
        try:
            original = scene.model_dump()
            true_scene = apply_branch(scene, program, True).model_dump()
            false_scene = apply_branch(scene, program, False).model_dump()
            branch_taken(scene, program)
        except (ProgramError, QueryError):
            continue
        if original != true_scene and original != false_scene and true_scene != false_scene:
            return program
    raise ProgramError("no edit program with two distinct, visible branches fits this scene")


# ================================================================ generic programs (any image)

GENERIC_COLORS: dict[str, tuple[int, int, int]] = {**COLORS, "black": (20, 20, 20), "white": (245, 245, 245)}
CORNERS: dict[str, tuple[float, float, float, float]] = {  # box as fractions of width / height
    "top-left": (0.04, 0.04, 0.46, 0.26),
    "top-right": (0.54, 0.04, 0.96, 0.26),
    "bottom-left": (0.04, 0.74, 0.46, 0.96),
    "bottom-right": (0.54, 0.74, 0.96, 0.96),
}
PANEL_FILL = (250, 250, 250)
PANEL_BORDER = (15, 15, 15)
TINTS = {"blue": (40, 80, 210), "orange": (240, 130, 30), "green": (40, 160, 60), "purple": (130, 50, 170)}


def answer_kind(answer: str) -> str:
    """Which generic edit fits an answer: "number", "color", "yes_no" or "text"."""
    norm = normalise_answer(answer)
    if re.fullmatch(r"-?\d+", norm):
        return "number"
    if norm in GENERIC_COLORS:
        return "color"
    if norm in ("yes", "no"):
        return "yes_no"
    return "text"


def generic_program(
    question: str,
    answer: str,
    category: str,
    image_size: tuple[int, int] | int | None,
    rng: random.Random,
) -> dict[str, Any]:
    """A deterministic, visible edit for an image from outside the offline world.

    The branch is decided by the known answer; each branch edits a different corner box, so taking the
    wrong branch is visible. `image_size` is only recorded. The answer may be *drawn* (text on a panel, a colour swatch), but the program
    is data: it is the instruction text that must never state the answer.
    """
    size = (
        [image_size, image_size] if isinstance(image_size, int) else list(image_size) if image_size else None
    )
    norm = normalise_answer(answer)
    kind = answer_kind(answer)
    corner_true, corner_false = rng.sample(sorted(CORNERS), 2)
    shown = " ".join(answer.split())[:24]
    if kind == "number":
        n = int(norm)
        test = rng.choice([{"op": "even"}, {"op": "gt", "value": n + rng.choice((-1, 1))}])
        actions = [{"op": "panel", "corner": c, "text": norm} for c in (corner_true, corner_false)]
    elif kind == "color":
        test = {"op": "warm"}
        actions = [{"op": "swatch", "corner": c, "color": norm} for c in (corner_true, corner_false)]
    elif kind == "yes_no":
        test = {"op": "affirmative"}
        first, second = rng.sample(sorted(TINTS), 2)
        actions = [{"op": "tint", "corner": corner_true, "color": first}]
        actions.append({"op": "tint", "corner": corner_false, "color": second})
    else:
        words = len(norm.split())
        test = rng.choice(
            [{"op": "single_word"}, {"op": "len_gt", "value": max(1, len(norm) + rng.choice((-1, 0)))}]
        )
        if words > 1 and test["op"] == "len_gt":
            test = {"op": "single_word"}
        actions = [{"op": "panel", "corner": c, "text": shown} for c in (corner_true, corner_false)]
    return {
        "kind": "generic",
        "version": PROGRAM_VERSION,
        "category": category,
        "image_size": size,  # informational: boxes are fractions, applied to whatever size arrives
        "condition": {"answer": norm, "test": test},
        "if_true": actions[0],
        "if_false": actions[1],
    }


def generic_branch_taken(program: dict[str, Any]) -> bool:
    answer = str(program["condition"]["answer"])
    test = program["condition"]["test"]
    op = test["op"]
    if op == "even":
        return int(answer) % 2 == 0
    if op == "gt":
        return int(answer) > int(test["value"])
    if op == "warm":
        return answer in WARM_COLORS
    if op == "affirmative":
        return answer == "yes"
    if op == "single_word":
        return len(answer.split()) == 1
    if op == "len_gt":
        return len(answer) > int(test["value"])
    raise ProgramError(f"unknown generic test op {op!r}")


def corner_box(corner: str, width: int, height: int) -> tuple[int, int, int, int]:
    fx0, fy0, fx1, fy1 = CORNERS[corner]
    return round(fx0 * width), round(fy0 * height), round(fx1 * width), round(fy1 * height)


def decode_rgb(png: bytes) -> Image.Image:
    try:
        with Image.open(io.BytesIO(png)) as image:
            return image.convert("RGB")
    except Exception as exc:  # PIL raises many types for bad data
        raise ProgramError(f"image cannot be decoded: {exc}") from None


def draw_generic_action(image: Image.Image, action: dict[str, Any]) -> None:
    width, height = image.size
    x0, y0, x1, y1 = corner_box(action["corner"], width, height)
    inclusive = [x0, y0, x1 - 1, y1 - 1]  # PIL rectangles include their far edge; the box does not
    border = max(1, min(width, height) // 100)
    draw = ImageDraw.Draw(image)
    op = action["op"]
    if op == "panel":
        draw.rectangle(inclusive, fill=PANEL_FILL, outline=PANEL_BORDER, width=border)
        draw_text_centered(draw, (x0, y0, x1, y1), str(action["text"]), PANEL_BORDER)
    elif op == "swatch":
        draw.rectangle(inclusive, fill=GENERIC_COLORS[action["color"]], outline=PANEL_BORDER, width=border)
    elif op == "tint":
        region = np.asarray(image.crop((x0, y0, x1, y1)), dtype=np.float32)
        rgb = np.array(TINTS[action["color"]], dtype=np.float32)
        blended = (region * 0.4 + rgb * 0.6).round().astype(np.uint8)
        image.paste(Image.fromarray(blended, "RGB"), (x0, y0))
        draw.rectangle(inclusive, outline=PANEL_BORDER, width=border)
    else:
        raise ProgramError(f"unknown generic action op {op!r}")


def apply_generic(source_png: bytes, program: dict[str, Any], branch: bool | None = None) -> bytes:
    """Apply a generic program to any image (PNG/JPEG/… bytes) → PNG bytes of the same size."""
    image = decode_rgb(source_png)
    taken = generic_branch_taken(program) if branch is None else branch
    draw_generic_action(image, program["if_true" if taken else "if_false"])
    return encode_png(image)


# ================================================================ expected edits, flaws, verification


def scene_of(meta: dict[str, Any]) -> Scene:
    try:
        return Scene.model_validate(meta["scene"])
    except (KeyError, ValueError) as exc:
        raise ProgramError(f"meta has no valid scene: {exc}") from None


def expected_edited_png(source_png: bytes, program: dict[str, Any], meta: dict[str, Any]) -> bytes:
    """What a perfect editor returns for this program: the re-rendered scene, or the generic edit."""
    if program.get("kind") == "scene":
        return render_png(apply_program(scene_of(meta), program))
    if program.get("kind") == "generic":
        return apply_generic(source_png, program)
    raise ProgramError(f"unknown program kind {program.get('kind')!r}")


def flawed_edit(
    source_png: bytes, program: dict[str, Any], meta: dict[str, Any], flaw: str, rng: random.Random
) -> bytes:
    """An edit that is visibly wrong in the way `flaw` names (one of FLAWS): the other branch, a wrong
    colour / text / place, or no change at all. Falls back to "unchanged" where a flaw would not show."""
    if flaw == "unchanged":
        return source_png
    if program.get("kind") == "scene":
        scene = scene_of(meta)
        taken = branch_taken(scene, program)
        if flaw == "wrong_branch":
            wrong = apply_branch(scene, program, not taken)
        else:
            wrong = _wrong_detail(scene, program, taken, rng)
        if wrong is None or wrong.model_dump() == apply_program(scene, program).model_dump():
            return source_png
        return render_png(wrong)
    taken = generic_branch_taken(program)
    if flaw == "wrong_branch":
        return apply_generic(source_png, program, branch=not taken)
    action = dict(program["if_true" if taken else "if_false"])
    others = [
        c for c in sorted(CORNERS) if c not in (program["if_true"]["corner"], program["if_false"]["corner"])
    ]
    action["corner"] = rng.choice(others)  # the right edit in the wrong place
    image = decode_rgb(source_png)
    draw_generic_action(image, action)
    return encode_png(image)


def _wrong_detail(scene: Scene, program: dict[str, Any], taken: bool, rng: random.Random) -> Scene | None:
    value = condition_value(scene, program)
    action = dict(program["if_true" if taken else "if_false"])
    if action["op"] == "recolor":
        intended = _resolve(action["color"], value)
        action["color"] = rng.choice([c for c in COLORS if c != intended])
    elif action["op"] == "add":
        obj = {k: _resolve(v, value) for k, v in action["object"].items()}
        obj["color"] = rng.choice([c for c in COLORS if c != obj["color"]])
        action["object"] = obj
    elif action["op"] == "write_text":
        text = str(_resolve(action["text"], value))
        action["text"] = (
            str(int(text) + rng.choice((-1, 1))) if text.lstrip("-").isdigit() else text[::-1] + "X"
        )
    else:
        return apply_branch(scene, program, not taken)
    return apply_action(scene, action, value)


def _changed_mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > PIXEL_TOLERANCE


def _scores(instruction: int, quality: int, coherence: int) -> dict[str, int]:
    return dict(zip(SCORE_NAMES, (instruction, quality, coherence), strict=True))


def verify(
    source_png: bytes, edited_png: bytes, program: dict[str, Any], meta: dict[str, Any]
) -> VerifyResult:
    """Judge one edit against its program: 5/5/5 for the expected edit, instruction_following ≤ 2 for the
    other branch, a wrong detail, a wrong place or no change."""
    try:
        source = np.asarray(decode_rgb(source_png))
        edited = np.asarray(decode_rgb(edited_png))
    except ProgramError as exc:
        return VerifyResult(ok=False, scores=_scores(1, 1, 1), analysis=str(exc))
    if edited.shape != source.shape:
        return VerifyResult(
            ok=False,
            scores=_scores(1, 2, 1),
            analysis=f"edited image is {edited.shape[1]}x{edited.shape[0]}, source is {source.shape[1]}x{source.shape[0]}",
        )
    try:
        if program.get("kind") == "scene":
            return _verify_scene(source, edited, program, meta)
        if program.get("kind") == "generic":
            return _verify_generic(source_png, source, edited, program)
    except (ProgramError, KeyError, TypeError, ValueError) as exc:  # a malformed program is a failed check
        return VerifyResult(ok=False, scores=_scores(1, 3, 1), analysis=f"cannot check this edit: {exc!r}")
    return VerifyResult(
        ok=False, scores=_scores(1, 1, 1), analysis=f"unknown program kind {program.get('kind')!r}"
    )


def _verify_scene(
    source: np.ndarray, edited: np.ndarray, program: dict[str, Any], meta: dict[str, Any]
) -> VerifyResult:
    scene = scene_of(meta)
    taken = branch_taken(scene, program)
    expected = np.asarray(render_image(apply_branch(scene, program, taken)))  # no PNG round trip: lossless
    total = expected.shape[0] * expected.shape[1]
    mismatch = 0.0 if np.array_equal(edited, expected) else _changed_mask(edited, expected).mean()
    branch_name = "if_true" if taken else "if_false"
    op = program[branch_name]["op"]
    if mismatch <= SCENE_MISMATCH_SHARE:
        return VerifyResult(
            ok=True,
            scores=_scores(5, 5, 5),
            analysis=f"The condition evaluates to {taken}; the {op} edit of the {branch_name} branch is present "
            "exactly and nothing else changed.",
        )
    if _changed_mask(edited, source).mean() <= SCENE_MISMATCH_SHARE:
        return VerifyResult(
            ok=False,
            scores=_scores(1, 5, 4),
            analysis="The image is unchanged; the requested edit is missing.",
        )
    other = np.asarray(render_image(apply_branch(scene, program, not taken)))
    if _changed_mask(edited, other).mean() <= SCENE_MISMATCH_SHARE:
        return VerifyResult(
            ok=False,
            scores=_scores(1, 5, 4),
            analysis=f"The edit follows the wrong branch: the condition evaluates to {taken}, but the image shows "
            f"the {'if_false' if taken else 'if_true'} edit instead of the {op} edit.",
        )
    expected_region = _changed_mask(expected, source)
    stray = (_changed_mask(edited, source) & ~expected_region).sum() / total
    coherence = 4 if stray < 0.01 else 3 if stray < 0.05 else 2
    return VerifyResult(
        ok=False,
        scores=_scores(2, 4, coherence),
        analysis=f"The edit differs from the expected {op} edit on {mismatch:.1%} of the pixels "
        f"(wrong colour, text or object).",
    )


def _verify_generic(
    source_png: bytes, source: np.ndarray, edited: np.ndarray, program: dict[str, Any]
) -> VerifyResult:
    height, width = source.shape[:2]
    taken = generic_branch_taken(program)
    action = program["if_true" if taken else "if_false"]
    x0, y0, x1, y1 = corner_box(action["corner"], width, height)
    inside = np.zeros((height, width), dtype=bool)
    inside[y0:y1, x0:x1] = True
    changed = _changed_mask(edited, source)
    expected = np.asarray(decode_rgb(apply_generic(source_png, program)))
    expected_in = _changed_mask(expected, source)[inside].mean()
    changed_in = changed[inside].mean()
    changed_out = changed[~inside].mean()
    if not changed.any():
        return VerifyResult(ok=False, scores=_scores(1, 5, 4), analysis="The image is unchanged.")
    if changed_out > 0.01:
        return VerifyResult(
            ok=False,
            scores=_scores(1, 3, 2),
            analysis=f"{changed_out:.1%} of the pixels outside the {action['corner']} region changed: the edit "
            "is in the wrong place or spills over the image.",
        )
    if changed_in < 0.5 * expected_in:
        return VerifyResult(
            ok=False,
            scores=_scores(2, 4, 4),
            analysis=f"Only {changed_in:.1%} of the {action['corner']} region changed (expected about "
            f"{expected_in:.1%}).",
        )
    content_diff = np.abs(edited[inside].astype(np.int16) - expected[inside].astype(np.int16)).mean()
    if content_diff <= 6:
        return VerifyResult(
            ok=True,
            scores=_scores(5, 5, 5),
            analysis=f"The {action['op']} edit is in the {action['corner']} region as the condition requires, and "
            "the rest of the image is untouched.",
        )
    return VerifyResult(
        ok=True,
        scores=_scores(3, 4, 5),
        analysis=f"The {action['corner']} region was edited and nothing else changed, but its content differs "
        "from the expected edit.",
    )
