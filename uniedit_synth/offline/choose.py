"""Choosing a scene program for a question: the condition on the record's own query, a candidate value or a
distractor, and visible actions for both branches (nested when asked), each checked to change the scene."""

from __future__ import annotations

import json
import random
from typing import Any

from ..method.answers import mentions_answer, normalise_answer, same_answer
from .program import (
    ANSWER,
    PROGRAM_VERSION,
    ProgramError,
    apply_action,
    condition_holds,
    condition_value,
    decided_conditions,
    is_nested,
)
from .questions import (
    QueryError,
    answer_query,
    plausible_answers,
    possible_answers,
    select,
    unique_filter,
)
from .world import COLORS, MATERIALS, SHAPES, SIGN_WORDS, SIZES, Scene, SceneObject

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


def new_object(rng: random.Random, avoid: tuple[str, ...], **fixed: str) -> dict[str, str]:
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
        actions.append({"op": "add", "object": new_object(rng, avoid), "cell": list(rng.choice(free))})
    for slot in scene.free_slots():
        words = [w for w in SIGN_WORDS if not _states(w, avoid)]
        actions.append({"op": "write_text", "slot": slot, "text": rng.choice(words)})
    return actions


def _worked(scene: Scene, query: dict[str, Any], value: int | str) -> dict[str, str]:
    """A count arithmetic question's worked solution for a sign ("3 + 4", then "= 7" when written): the
    sign shows the working ending in the answer, as a math board does, not the result alone."""
    if query["type"] != "count_arith":
        return {}
    first, second = (len(select(scene, f)) for f in query["filters"])
    if (first + second if query["op"] == "+" else first - second) != int(value):
        return {}
    return {"worked": f"{first} {query['op']} {second}"}


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
            obj = new_object(rng, avoid, color=ANSWER)
            actions.append({"op": "add", "object": obj, "cell": list(rng.choice(free))})
    elif kind == "shape" and free:
        obj = new_object(rng, avoid, shape=ANSWER)
        actions.append({"op": "add", "object": obj, "cell": list(rng.choice(free))})
    elif kind in ("number", "text"):
        if kind == "number" and query["type"] != "board":
            if 0 < int(value) < len(free):  # room for the answer and for one more (a wrong count shows)
                cells = [list(c) for c in rng.sample(free, len(free))]
                actions.append(
                    {"op": "add_count", "object": new_object(rng, avoid), "count": ANSWER, "cells": cells}
                )
        if query["type"] == "board":
            actions.append({"op": "write_text", "slot": query["slot"], "text": ANSWER})
        slots = scene.free_slots() or [  # a full wall: write over a sign the question is not about
            sign.slot for sign in scene.signs if sign.slot != query.get("slot")
        ]
        for slot in slots:
            actions.append({"op": "write_text", "slot": slot, "text": ANSWER, **_worked(scene, query, value)})
        if not actions and query["type"] == "count" and int(value) >= 2:
            # a crowded floor and a full wall: the count still decides the edit (remove all but one of them)
            actions.append({"op": "keep_one", "target": query["filter"]})
    return actions


def _transform_action(
    scene: Scene, query: dict[str, Any], rng: random.Random, avoid: tuple[str, ...]
) -> dict[str, Any] | None:
    """Act at the answered place: for "which side is X on", add an object in that half of the picture (a
    row with a free cell in both halves, so the other answer would put it elsewhere); otherwise turn the
    located object into a different one, keeping its place (the release's location style)."""
    ref = query.get("ref")
    if ref is None:
        return None
    if query["type"] == "side":
        taken = scene.occupied_cells()
        rows = [r for r in range(3) if any((c, r) not in taken for c in (0, 1)) and any((c, r) not in taken for c in (2, 3))]
        if rows:
            cell = {"side": ANSWER, "row": rng.choice(rows)}
            return {"op": "add", "object": new_object(rng, avoid), "cell": cell}
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
