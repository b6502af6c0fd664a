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
import json
import random
import re
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel

from ..method.answers import mentions_answer, normalise_answer, same_answer
from ..method.consistency import PIXEL_TOLERANCE, changed_mask
from .questions import (
    FLAT_TOP_SHAPES,
    POINTED_SHAPES,
    ROLLING_SHAPES,
    WARM_COLORS,
    QueryError,
    answer_query,
    plausible_answers,
    possible_answers,
    select,
    unique_filter,
)
from .render import draw_text_centered, encode_png, render_image, render_png
from .world import COLORS, MATERIALS, SHAPES, SIGN_WORDS, SIZES, Board, Scene, SceneObject, Sign

PROGRAM_VERSION = 2
ANSWER = "$answer"
SCORE_NAMES = ("instruction_following", "visual_quality", "coherence")
# Share of pixels that may differ from the expected render for an edit to still count as exact. Tiny on
# purpose: one wrong digit on a board changes only a few dozen pixels of a 256x256 render.
SCENE_MISMATCH_SHARE = 0.0001
FLAWS = ("wrong_branch", "wrong_detail", "unchanged", "wrong_digit", "near_miss_shade", "extra_object")
#: every flaw the editor can apply: FLAWS (the default draw) plus `collateral_change` (the right edit, and an
#: unrelated object recoloured: what non-edit consistency measures), chosen with the editor's `flaw_kinds`
FLAW_KINDS = (*FLAWS, "collateral_change")


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
    if op == "always":
        return True
    if op == "eq":
        return same_answer(str(value), str(test["value"]))
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


def is_nested(node: Any) -> bool:
    """A branch that is itself a condition ({"test", "if_true", "if_false"}) rather than an action."""
    return isinstance(node, dict) and "test" in node and "op" not in node


def is_conditional(program: dict[str, Any]) -> bool:
    return program["condition"]["test"]["op"] != "always"


def _holds(test: dict[str, Any], value: int | str, scene: Scene) -> bool:
    try:
        return condition_holds(test, value, scene)
    except (QueryError, KeyError, ValueError) as exc:
        raise ProgramError(f"the program's test cannot be evaluated: {exc}") from None


def branch_taken(scene: Scene, program: dict[str, Any]) -> bool:
    """True when the top condition holds on `scene`, i.e. `if_true` is the correct branch."""
    return _holds(program["condition"]["test"], condition_value(scene, program), scene)


def resolve(node: Any, value: int | str, scene: Scene) -> dict[str, Any]:
    """The action a (possibly nested) branch comes down to for the answer `value`."""
    while is_nested(node):
        node = node["if_true"] if _holds(node["test"], value, scene) else node["if_false"]
    if not isinstance(node, dict) or "op" not in node:
        raise ProgramError("a branch of the program is not an action")
    return node


def _resolve(field: Any, value: int | str) -> Any:
    return str(value) if field == ANSWER else field


def apply_action(scene: Scene, action: dict[str, Any], value: int | str) -> Scene:
    """A new scene with one action applied (`"$answer"` fields take the condition's value)."""
    out = scene.model_copy(deep=True)
    op = action["op"]
    if op in ("recolor", "remove", "resize", "transform"):
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
            elif obj.id in targets and op == "transform":
                for key, new in action["into"].items():
                    setattr(obj, key, _resolve(new, value))
        return out
    if op == "add":
        col, row = action["cell"]
        if (col, row) in out.occupied_cells():
            raise ProgramError(f"add: cell {col},{row} is taken")
        spec = {k: _resolve(v, value) for k, v in action["object"].items()}
        out.objects.append(SceneObject(id=out.next_object_id(), col=col, row=row, **spec))
        return out
    if op == "add_count":  # as many copies of an object as the answer says, in the listed cells in order
        count = int(_resolve(action["count"], value))
        cells = action["cells"]
        if not 0 <= count <= len(cells):
            raise ProgramError(f"add_count: {count} objects do not fit in {len(cells)} cells")
        for col, row in cells[:count]:
            if (col, row) in out.occupied_cells():
                raise ProgramError(f"add_count: cell {col},{row} is taken")
            out.objects.append(SceneObject(id=out.next_object_id(), col=col, row=row, **action["object"]))
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
    """The scene after running one top-level branch (nested conditions inside it, and `"$answer"`, still
    evaluated on the scene)."""
    value = condition_value(scene, program)
    node = program["if_true" if branch else "if_false"]
    if node is None:
        raise ProgramError("this program has no such branch")
    return apply_action(scene, resolve(node, value, scene), value)


def apply_program(scene: Scene, program: dict[str, Any]) -> Scene:
    """The correctly edited scene: evaluate the condition on `scene` itself, run the branch it selects."""
    return apply_branch(scene, program, branch_taken(scene, program))


def decided_conditions(scene: Scene, program: dict[str, Any]) -> list[str]:
    """The conditions of a scene program whose truth is decided in advance: the same for every answer the
    question could have (questions.possible_answers) among the answers that reach that condition."""
    if not is_conditional(program):
        return []
    space = possible_answers(scene, program["condition"]["query"])
    decided: list[str] = []

    def walk(test: dict[str, Any], if_true: Any, if_false: Any, reaching: list[int | str]) -> None:
        outcomes = [_holds(test, v, scene) for v in reaching]
        if len(set(outcomes)) < 2:
            decided.append(f"{test} over {reaching}")
        for node, truth in ((if_true, True), (if_false, False)):
            if is_nested(node):
                sub = [v for v, o in zip(reaching, outcomes, strict=True) if o == truth]
                walk(node["test"], node["if_true"], node["if_false"], sub)

    walk(program["condition"]["test"], program["if_true"], program["if_false"], space)
    return decided


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


def typed_candidate(query: dict[str, Any], value: int | str, candidate: str) -> int | str:
    """The plan's candidate as a value of the answer's type (counts are ints)."""
    if isinstance(value, int):
        try:
            return int(normalise_answer(candidate))
        except ValueError:
            raise ProgramError(f"candidate {candidate!r} is not a number") from None
    if query["type"] == "read":
        return candidate.strip().upper()
    return normalise_answer(candidate)


def pick_distractor(scene: Scene, query: dict[str, Any], value: int | str, rng: random.Random) -> int | str:
    """A value the question could have answered, other than the answer (near it, for numbers)."""
    options = [v for v in plausible_answers(scene, query) if not same_answer(str(v), str(value))]
    options = options or [v for v in possible_answers(scene, query) if not same_answer(str(v), str(value))]
    if not options:
        raise ProgramError("the question has no other possible answer")
    if isinstance(value, int):
        options = sorted(options, key=lambda v: abs(int(v) - value))[:2]
    return rng.choice(options)


def _other_unique(
    scene: Scene,
    rng: random.Random,
    avoid: tuple[str, ...],
    exclude_ids: set[int],
    exclude_attrs: tuple[str, ...] = (),
) -> tuple[SceneObject, dict[str, Any]] | None:
    candidates = [o for o in scene.objects if o.id not in exclude_ids]
    rng.shuffle(candidates)
    for obj in candidates:
        where = unique_filter(scene, obj, rng, exclude=exclude_attrs, avoid=avoid[0] if avoid else "")
        if where is not None and not any(_states(v, avoid) for v in where.values()):
            return obj, where
    return None


def _states(word: Any, avoid: tuple[str, ...]) -> bool:
    return any(a and mentions_answer(str(word), a) for a in avoid)


def _group_target(
    scene: Scene,
    rng: random.Random,
    avoid: tuple[str, ...],
    exclude_ids: set[int],
    exclude_attrs: tuple[str, ...],
) -> tuple[SceneObject, dict[str, Any]] | None:
    """When no object can be singled out (look-alike duplicates): one object's attributes as a filter that
    may pick several, for an edit of "every small red cylinder". Answer-stating values are left out."""
    candidates = [o for o in scene.objects if o.id not in exclude_ids] or list(scene.objects)
    if not candidates:
        return None
    obj = rng.choice(candidates)
    where = {a: getattr(obj, a) for a in ("size", "color", "material", "shape") if a not in exclude_attrs}
    where = {a: v for a, v in where.items() if not _states(v, avoid)}
    return (obj, where) if where else None


def _new_object(rng: random.Random, avoid: tuple[str, ...], **fixed: str) -> dict[str, str]:
    def pick(options: tuple[str, ...] | list[str]) -> str:
        allowed = [o for o in options if not _states(o, avoid)]
        return rng.choice(allowed or list(options))

    spec = {
        "size": pick(SIZES),
        "color": pick(list(COLORS)),
        "material": pick(MATERIALS),
        "shape": pick(SHAPES),
    }
    spec.update(fixed)
    return spec


def _plain_actions(
    scene: Scene,
    query: dict[str, Any],
    rng: random.Random,
    avoid: tuple[str, ...],
    ref: dict[str, Any] | None,
    ref_ids: set[int],
    category: str,
) -> list[dict[str, Any]]:
    """Actions that do not use the answer: recolor, remove, resize an object, or add one.

    Counted objects are always named as a group ("every cyan object"): "the cyan object" would say the
    count is 1. Knowledge questions never pick a target by material (a magnet question's edit must not
    name "the metal object")."""
    numeric = query["type"] in ("count", "count_arith")
    exclude_attrs = ("material",) if category == "knowledge" else ()
    if category == "knowledge":  # nor add "metal" things: the fact a magnet question tests
        avoid = (*avoid, "metal")
    targets: list[tuple[SceneObject, dict[str, Any]]] = []
    if ref is not None and len(ref_ids) == 1 and not (category == "knowledge" and "material" in ref):
        obj = next(o for o in scene.objects if o.id in ref_ids)
        targets.append((obj, ref))
    other = _other_unique(scene, rng, avoid, ref_ids, exclude_attrs) or _group_target(
        scene, rng, avoid, ref_ids, exclude_attrs
    )
    if other is not None:
        targets.append(other)
    actions: list[dict[str, Any]] = []
    palette = [c for c in COLORS if not _states(c, avoid)]
    for obj, where in targets:
        every = {"every": True} if numeric or len(select(scene, where)) > 1 else {}
        colors = [c for c in palette if c != obj.color]
        if colors:
            actions.append({"op": "recolor", "target": where, "color": rng.choice(colors), **every})
        actions.append({"op": "remove", "target": where, **every})
        size = "small" if obj.size == "large" else "large"
        actions.append({"op": "resize", "target": where, "size": size, **every})
    free = scene.free_cells()
    if free:
        actions.append({"op": "add", "object": _new_object(rng, avoid), "cell": list(rng.choice(free))})
    for slot in scene.free_slots():
        words = [w for w in SIGN_WORDS if not _states(w, avoid)]
        actions.append({"op": "write_text", "slot": slot, "text": rng.choice(words)})
    return actions


def _answer_actions(
    scene: Scene,
    query: dict[str, Any],
    value: int | str,
    rng: random.Random,
    avoid: tuple[str, ...],
    ref_ids: set[int],
    category: str,
) -> list[dict[str, Any]]:
    """Actions that use the answer itself: paint in that colour, add that shape, add that many objects,
    write that number / word."""
    kind = value_kind(query, value)
    actions: list[dict[str, Any]] = []
    free = scene.free_cells()
    exclude_attrs = ("color", "material") if category == "knowledge" else ("color",)
    if category == "knowledge":
        avoid = (*avoid, "metal")
    if kind == "color":
        other = _other_unique(scene, rng, avoid, ref_ids, exclude_attrs=exclude_attrs)
        if other is not None and other[0].color != value:
            actions.append({"op": "recolor", "target": other[1], "color": ANSWER})
        if free:
            obj = _new_object(rng, avoid, color=ANSWER)
            actions.append({"op": "add", "object": obj, "cell": list(rng.choice(free))})
    elif kind == "shape" and free:
        obj = _new_object(rng, avoid, shape=ANSWER)
        actions.append({"op": "add", "object": obj, "cell": list(rng.choice(free))})
    elif kind in ("number", "text"):
        if kind == "number" and query["type"] != "board":
            if 0 < int(value) < len(free):  # room for the answer and for one more (a wrong count shows)
                cells = [list(c) for c in rng.sample(free, len(free))]
                actions.append(
                    {"op": "add_count", "object": _new_object(rng, avoid), "count": ANSWER, "cells": cells}
                )
        if query["type"] == "board":
            actions.append({"op": "write_text", "slot": query["slot"], "text": ANSWER})
        slots = scene.free_slots() or [  # a full wall: write over a sign the question is not about
            sign.slot for sign in scene.signs if sign.slot != query.get("slot")
        ]
        for slot in slots:
            actions.append({"op": "write_text", "slot": slot, "text": ANSWER})
    return actions


def _transform_action(
    scene: Scene, query: dict[str, Any], rng: random.Random, avoid: tuple[str, ...]
) -> dict[str, Any] | None:
    """Turn the located object into a different one, keeping its place (the release's location style)."""
    ref = query.get("ref")
    if ref is None:
        return None
    found = select(scene, ref)
    if len(found) != 1:
        return None
    obj = found[0]
    shapes = [s for s in SHAPES if s != obj.shape and not _states(s, avoid)]
    colors = [c for c in COLORS if c != obj.color and not _states(c, avoid)]
    if not shapes or not colors:
        return None
    into = {"shape": rng.choice(shapes), "color": rng.choice(colors), "material": rng.choice(MATERIALS)}
    return {"op": "transform", "target": ref, "into": into}


def _leaf_scenes(scene: Scene, program: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Every leaf action's scene (with the true value), or None when one fails to apply."""
    value = condition_value(scene, program)
    leaves: list[dict[str, Any]] = []

    def collect(node: Any) -> None:
        if node is None:
            return
        if is_nested(node):
            collect(node["if_true"])
            collect(node["if_false"])
        else:
            leaves.append(node)

    collect(program["if_true"])
    collect(program["if_false"])
    try:
        return [apply_action(scene, leaf, value).model_dump() for leaf in leaves]
    except (ProgramError, QueryError, ValueError):
        return None


def inner_tests(
    scene: Scene, query: dict[str, Any], value: int | str, rng: random.Random
) -> list[dict[str, Any]]:
    """Second-level tests on the same answer (for a nested branch): parity and thresholds, warm colours,
    shape facts, word facts."""
    kind = value_kind(query, value)
    if kind == "number":
        space = [int(v) for v in possible_answers(scene, query)]
        thresholds = sorted(set(space))
        options: list[dict[str, Any]] = [{"op": "even"}, {"op": "odd"}]
        options += [{"op": "gt", "value": t} for t in thresholds]
        options += [{"op": "lt", "value": t} for t in thresholds]
        return options
    if kind == "color":
        return [{"op": "warm"}]
    if kind == "shape":
        return [{"op": "rolls"}, {"op": "flat_top"}, {"op": "pointed"}]
    if kind == "text":
        return [{"op": "vowel_start"}, *({"op": "len_gt", "value": k} for k in (3, 4, 5))]
    return []


def scene_program(
    scene: Scene,
    question_spec: dict[str, Any],
    rng: random.Random,
    avoid: str = "",
    plan: dict[str, Any] | None = None,
    nested_rate: float = 0.0,
    tries: int = 24,
) -> dict[str, Any]:
    """An edit program for a scene question that follows the instruction plan, drawn from `rng`.

    * conditional: the condition tests "the answer is the plan's candidate" (no candidate in the plan:
      a distractor from the question's answer space, recorded in `candidate`); both branches change the
      scene, differently; with probability `nested_rate` the else branch is itself a condition on the same
      answer (two nested levels), chosen so that its truth still depends on the answer;
    * synthesis / render: one action that uses the answer (that colour, that shape, that many, that text);
    * transform: the located object becomes another one.

    `avoid` (the answer) keeps answer-stating attribute values out of every reference the program makes.
    """
    query = question_spec["query"]
    value = answer_query(scene, query)
    style = (plan or {}).get("style") or "conditional"
    category = str(question_spec.get("category") or "")
    ref = query.get("ref")
    ref_ids = {o.id for o in select(scene, ref)} if ref is not None else set()
    original = scene.model_dump()
    for _ in range(tries):
        if style == "conditional":
            raw = (plan or {}).get("candidate")
            candidate = (
                typed_candidate(query, value, raw) if raw else pick_distractor(scene, query, value, rng)
            )
            avoids = tuple(a for a in (avoid, str(candidate)) if a)
            plain = _plain_actions(scene, query, rng, avoids, ref, ref_ids, category)
            if len(plain) < 2:
                continue
            first, second = rng.sample(plain, 2)
            if_false: Any = second
            if nested_rate and rng.random() < nested_rate and len(plain) >= 3:
                third = rng.choice([a for a in plain if a is not first and a is not second])
                reaching = [
                    v for v in possible_answers(scene, query) if not same_answer(str(v), str(candidate))
                ]
                tests = [
                    t
                    for t in inner_tests(scene, query, value, rng)
                    if len({condition_holds(t, v, scene) for v in reaching}) == 2
                    and not _states(t.get("value", ""), avoids)
                ]
                if tests:
                    if_false = {"test": rng.choice(tests), "if_true": second, "if_false": third}
            program = {
                "kind": "scene",
                "version": PROGRAM_VERSION,
                "condition": {"query": query, "test": {"op": "eq", "value": candidate}},
                "if_true": first,
                "if_false": if_false,
                "candidate": str(candidate),
            }
        else:
            if style == "transform":
                action = _transform_action(scene, query, rng, (avoid,))
                options = (
                    [action]
                    if action
                    else _answer_actions(scene, query, value, rng, (avoid,), ref_ids, category)
                )
            else:
                options = _answer_actions(scene, query, value, rng, (avoid,), ref_ids, category)
                if style == "render":
                    options = [a for a in options if a["op"] == "write_text"] or options
                else:
                    options = [a for a in options if a["op"] != "write_text"] or options
            if not options:
                raise ProgramError(f"no {style} edit fits this scene")
            program = {
                "kind": "scene",
                "version": PROGRAM_VERSION,
                "condition": {"query": query, "test": {"op": "always"}},
                "if_true": rng.choice(options),
                "if_false": None,
            }
        leaves = _leaf_scenes(scene, program)
        if (
            leaves is None
            or original in leaves
            or len({json.dumps(x, sort_keys=True) for x in leaves}) < len(leaves)
        ):
            continue
        if decided_conditions(scene, program):
            continue
        return program
    raise ProgramError("no edit program with distinct, visible branches fits this scene")


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
    plan: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A deterministic, visible edit for an image from outside the offline world, following the plan.

    Conditional: the branch is decided by whether the (known) answer is the plan's candidate; each branch
    edits a different corner box, so taking the wrong branch is visible. Other styles: one edit that shows
    the answer (the number or text on a panel, the colour as a swatch, a tint for yes / no). `image_size`
    is only recorded. The answer may be *drawn*, but the program is data: it is the instruction text that
    must never state the answer.
    """
    size = (
        [image_size, image_size] if isinstance(image_size, int) else list(image_size) if image_size else None
    )
    norm = normalise_answer(answer)
    kind = answer_kind(answer)
    style = (plan or {}).get("style") or "conditional"
    corner_true, corner_false = rng.sample(sorted(CORNERS), 2)
    shown = " ".join(answer.split())[:24]
    if kind == "number":
        actions = [{"op": "panel", "corner": c, "text": norm} for c in (corner_true, corner_false)]
    elif kind == "color":
        actions = [{"op": "swatch", "corner": c, "color": norm} for c in (corner_true, corner_false)]
    elif kind == "yes_no":
        first, second = rng.sample(sorted(TINTS), 2)
        actions = [{"op": "tint", "corner": corner_true, "color": first}]
        actions.append({"op": "tint", "corner": corner_false, "color": second})
    else:
        actions = [{"op": "panel", "corner": c, "text": shown} for c in (corner_true, corner_false)]
    if style == "conditional":
        candidate = (plan or {}).get("candidate")
        if not candidate:
            from ..method.plan import distractor

            candidate = distractor(answer, rng) or f"not {norm}"
        test: dict[str, Any] = {"op": "eq", "value": str(candidate)}
        if_false: dict[str, Any] | None = actions[1]
    else:
        test, if_false = {"op": "always"}, None
    return {
        "kind": "generic",
        "version": PROGRAM_VERSION,
        "category": category,
        "image_size": size,  # informational: boxes are fractions, applied to whatever size arrives
        "condition": {"answer": norm, "test": test},
        "if_true": actions[0],
        "if_false": if_false,
        **({"candidate": str(test["value"])} if test["op"] == "eq" else {}),
    }


def generic_branch_taken(program: dict[str, Any]) -> bool:
    answer = str(program["condition"]["answer"])
    test = program["condition"]["test"]
    op = test["op"]
    if op == "always":
        return True
    if op == "eq":
        return same_answer(answer, str(test["value"]))
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


def _rgb(color: str, table: dict[str, tuple[int, int, int]]) -> tuple[int, int, int]:
    if color.startswith("#") and len(color) == 7:  # a near-miss shade
        return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)
    return table[color]


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
        draw.rectangle(
            inclusive, fill=_rgb(action["color"], GENERIC_COLORS), outline=PANEL_BORDER, width=border
        )
    elif op == "tint":
        region = np.asarray(image.crop((x0, y0, x1, y1)), dtype=np.float32)
        rgb = np.array(_rgb(action["color"], TINTS), dtype=np.float32)
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
    """An edit that is visibly wrong in the way `flaw` names (one of FLAWS)."""
    return apply_flaw(source_png, program, meta, flaw, rng)[0]


def apply_flaw(
    source_png: bytes, program: dict[str, Any], meta: dict[str, Any], flaw: str, rng: random.Random
) -> tuple[bytes, str]:
    """(wrong edit, the flaw kind actually applied). Kinds: the other branch, a wrong colour / text /
    place, no change at all, a wrong digit in a written number, a near-miss shade of the right colour, the
    right edit plus an extra object. A kind that cannot show on this program falls back to another one
    (wrong_branch → wrong_detail on a program without branches; digit and shade → wrong_detail; anything
    that would come out identical to the expected edit → unchanged)."""
    if flaw not in FLAW_KINDS:
        raise ProgramError(f"unknown flaw {flaw!r} (known: {', '.join(FLAW_KINDS)})")
    if flaw == "unchanged":
        return source_png, "unchanged"
    if program.get("kind") == "scene":
        return _scene_flaw(source_png, program, meta, flaw, rng)
    return _generic_flaw(source_png, program, flaw, rng)


def near_miss(rgb: tuple[int, int, int], rng: random.Random) -> str:
    """A shade close to `rgb` but past the judge's per-pixel tolerance on one channel: "#rrggbb"."""
    channel = rng.randrange(3)
    out = list(rgb)
    step = 3 * PIXEL_TOLERANCE
    out[channel] = out[channel] + step if out[channel] + step <= 255 else out[channel] - step
    return "#" + "".join(f"{c:02x}" for c in out)


def _scene_flaw(
    source_png: bytes, program: dict[str, Any], meta: dict[str, Any], flaw: str, rng: random.Random
) -> tuple[bytes, str]:
    scene = scene_of(meta)
    value = condition_value(scene, program)
    taken = branch_taken(scene, program)
    expected = apply_program(scene, program)
    action = resolve(program["if_true" if taken else "if_false"], value, scene)
    wrong: Scene | None = None
    applied = flaw
    if flaw == "wrong_branch" and is_conditional(program):
        wrong = apply_branch(scene, program, not taken)
    elif flaw == "wrong_digit" and action["op"] in ("write_text", "add_count"):
        if action["op"] == "write_text":
            text = str(_resolve(action["text"], value))
            if text.lstrip("-").isdigit():
                wrong = apply_action(scene, {**action, "text": str(int(text) + rng.choice((-1, 1)))}, value)
        else:
            count = int(_resolve(action["count"], value))
            other = count + 1 if count + 1 <= len(action["cells"]) else count - 1
            wrong = apply_action(scene, {**action, "count": other}, value)
    elif flaw == "near_miss_shade":
        wrong = expected.model_copy(deep=True)
        changed = _changed_objects(scene, expected)
        pool = [o for o in wrong.objects if o.id in changed] or wrong.objects
        if pool:
            target = rng.choice(pool)
            target.color = near_miss(COLORS.get(target.color, (128, 128, 128)), rng)
        else:
            wrong = None
    elif flaw == "extra_object":
        free = expected.free_cells()
        if free:
            wrong = expected.model_copy(deep=True)
            col, row = rng.choice(free)
            wrong.objects.append(
                SceneObject(id=wrong.next_object_id(), col=col, row=row, **_new_object(rng, ()))
            )
    elif flaw == "collateral_change":
        changed = _changed_objects(scene, expected)
        untouched = [o for o in expected.objects if o.id not in changed]
        if untouched:
            wrong = expected.model_copy(deep=True)
            chosen = rng.choice(untouched).id
            target = next(o for o in wrong.objects if o.id == chosen)
            target.color = rng.choice([c for c in COLORS if c != target.color])
    if wrong is None:
        applied = "wrong_detail"
        wrong = _wrong_detail(scene, program, taken, rng)
    if wrong is None or wrong.model_dump() == expected.model_dump():
        return source_png, "unchanged"
    return render_png(wrong), applied


def _changed_objects(before: Scene, after: Scene) -> set[int]:
    old = {o.id: o.model_dump() for o in before.objects}
    return {o.id for o in after.objects if old.get(o.id) != o.model_dump()}


def _wrong_detail(scene: Scene, program: dict[str, Any], taken: bool, rng: random.Random) -> Scene | None:
    value = condition_value(scene, program)
    action = dict(resolve(program["if_true" if taken else "if_false"], value, scene))
    if action["op"] == "recolor":
        intended = _resolve(action["color"], value)
        action["color"] = rng.choice([c for c in COLORS if c != intended])
    elif action["op"] == "add":
        obj = {k: _resolve(v, value) for k, v in action["object"].items()}
        obj["color"] = rng.choice([c for c in COLORS if c != obj["color"]])
        action["object"] = obj
    elif action["op"] == "transform":
        into = dict(action["into"])
        into["color"] = rng.choice([c for c in COLORS if c != into["color"]])
        action["into"] = into
    elif action["op"] == "add_count":
        count = int(_resolve(action["count"], value))
        action["count"] = count + 1 if count + 1 <= len(action["cells"]) else count - 1
    elif action["op"] == "write_text":
        text = str(_resolve(action["text"], value))
        action["text"] = (
            str(int(text) + rng.choice((-1, 1))) if text.lstrip("-").isdigit() else text[::-1] + "X"
        )
    elif is_conditional(program):
        return apply_branch(scene, program, not taken)
    else:
        return None
    return apply_action(scene, action, value)


def _generic_flaw(
    source_png: bytes, program: dict[str, Any], flaw: str, rng: random.Random
) -> tuple[bytes, str]:
    taken = generic_branch_taken(program)
    action = dict(program["if_true" if taken else "if_false"])
    used = {
        program["if_true"]["corner"],
        *([program["if_false"]["corner"]] if program.get("if_false") else []),
    }
    others = [c for c in sorted(CORNERS) if c not in used]
    image = decode_rgb(source_png)
    if flaw == "wrong_branch" and program.get("if_false"):
        return apply_generic(source_png, program, branch=not taken), flaw
    if flaw == "wrong_digit" and action["op"] == "panel" and re.search(r"\d", str(action["text"])):
        text = str(action["text"])
        digits = [i for i, ch in enumerate(text) if ch.isdigit()]
        i = rng.choice(digits)
        wrong_digit = str((int(text[i]) + rng.choice((1, 2, 3, 4, 5, 6, 7, 8, 9))) % 10)
        draw_generic_action(image, {**action, "text": text[:i] + wrong_digit + text[i + 1 :]})
        return encode_png(image), flaw
    if flaw == "near_miss_shade" and action["op"] in ("swatch", "tint"):
        table = GENERIC_COLORS if action["op"] == "swatch" else TINTS
        draw_generic_action(image, {**action, "color": near_miss(table[action["color"]], rng)})
        return encode_png(image), flaw
    if flaw == "extra_object" and others:
        draw_generic_action(image, action)
        x0, y0, x1, y1 = corner_box(rng.choice(others), *image.size)
        draw = ImageDraw.Draw(image)
        radius = max(3, min(x1 - x0, y1 - y0) // 3)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=GENERIC_COLORS["red"])
        return encode_png(image), flaw
    if flaw == "collateral_change" and others:
        draw_generic_action(image, action)
        x0, y0, x1, y1 = corner_box(rng.choice(others), *image.size)
        patch = np.asarray(image)[y0:y1, x0:x1]
        image.paste(Image.fromarray((255 - patch).astype(np.uint8)), (x0, y0))  # an unrelated region altered
        return encode_png(image), flaw
    # wrong_detail (and the fallback): the right edit in the wrong place
    action["corner"] = rng.choice(others) if others else action["corner"]
    draw_generic_action(image, action)
    return encode_png(image), "wrong_detail"


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
    mismatch = 0.0 if np.array_equal(edited, expected) else changed_mask(edited, expected).mean()
    branch_name = "if_true" if taken else "if_false"
    op = resolve(program[branch_name], condition_value(scene, program), scene)["op"]
    if mismatch <= SCENE_MISMATCH_SHARE:
        return VerifyResult(
            ok=True,
            scores=_scores(5, 5, 5),
            analysis=f"The condition evaluates to {taken}; the {op} edit of the {branch_name} branch is present "
            "exactly and nothing else changed.",
        )
    if changed_mask(edited, source).mean() <= SCENE_MISMATCH_SHARE:
        return VerifyResult(
            ok=False,
            scores=_scores(1, 5, 4),
            analysis="The image is unchanged; the requested edit is missing.",
        )
    if is_conditional(program):
        other = np.asarray(render_image(apply_branch(scene, program, not taken)))
        if changed_mask(edited, other).mean() <= SCENE_MISMATCH_SHARE:
            return VerifyResult(
                ok=False,
                scores=_scores(1, 5, 4),
                analysis=f"The edit follows the wrong branch: the condition evaluates to {taken}, but the image "
                f"shows the {'if_false' if taken else 'if_true'} edit instead of the {op} edit.",
            )
    expected_region = changed_mask(expected, source)
    stray = (changed_mask(edited, source) & ~expected_region).sum() / total
    coherence = 4 if stray < 0.01 else 3 if stray < 0.05 else 2
    return VerifyResult(
        ok=False,
        scores=_scores(2, 4, coherence),
        analysis=f"The edit differs from the expected {op} edit on {mismatch:.1%} of the pixels "
        f"(wrong colour, shade, text, count or an extra object).",
    )


#: share of the edit box's pixels that may differ from a re-render of the expected panel (anti-aliasing)
GENERIC_BOX_MISMATCH_SHARE = 0.002


def _verify_generic(
    source_png: bytes, source: np.ndarray, edited: np.ndarray, program: dict[str, Any]
) -> VerifyResult:
    """Exact check against a re-render of the expected edit: any pixel of the box that differs by more than
    the tolerance on some channel counts (a wrong digit changes dozens of them), never a mean over the box."""
    height, width = source.shape[:2]
    taken = generic_branch_taken(program)
    action = program["if_true" if taken else "if_false"]
    x0, y0, x1, y1 = corner_box(action["corner"], width, height)
    inside = np.zeros((height, width), dtype=bool)
    inside[y0:y1, x0:x1] = True
    changed = changed_mask(edited, source)
    expected = np.asarray(decode_rgb(apply_generic(source_png, program)))
    expected_in = changed_mask(expected, source)[inside].mean()
    changed_in = changed[inside].mean()
    changed_out = changed[~inside].mean()
    if not changed.any():
        return VerifyResult(ok=False, scores=_scores(1, 5, 4), analysis="The image is unchanged.")
    if changed_out > 0.01:
        return VerifyResult(
            ok=False,
            scores=_scores(1, 3, 2),
            analysis=f"{changed_out:.1%} of the pixels outside the {action['corner']} region changed: the edit "
            "is in the wrong place, spills over the image or adds something extra.",
        )
    if changed_in < 0.5 * expected_in:
        return VerifyResult(
            ok=False,
            scores=_scores(2, 4, 4),
            analysis=f"Only {changed_in:.1%} of the {action['corner']} region changed (expected about "
            f"{expected_in:.1%}).",
        )
    mismatch = changed_mask(edited, expected)[inside].mean()
    if mismatch <= GENERIC_BOX_MISMATCH_SHARE:
        return VerifyResult(
            ok=True,
            scores=_scores(5, 5, 5),
            analysis=f"The {action['op']} edit is in the {action['corner']} region as the condition requires, and "
            "the rest of the image is untouched.",
        )
    return VerifyResult(
        ok=False,
        scores=_scores(2, 4, 5),
        analysis=f"The {action['corner']} region was edited and nothing else changed, but {mismatch:.1%} of its "
        "pixels differ from the expected edit (wrong text, digit or shade).",
    )
