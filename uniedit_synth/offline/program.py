"""The machine-checkable edit program: what one means and does (conditions, branches, actions on a scene).

Choosing one for a question is choose.py (scene programs) and generic.py (any image); what a perfect or a
flawed editor returns for one is flaws.py; checking an edit against one is verify.py.

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
from typing import Any

from PIL import Image

from ..method.answers import same_answer
from ..method.logic import holds as logic_holds
from .questions import (
    FLAT_TOP_SHAPES,
    POINTED_SHAPES,
    ROLLING_SHAPES,
    WARM_COLORS,
    QueryError,
    answer_query,
    possible_answers,
    select,
)
from .world import Board, Scene, SceneObject, Sign

PROGRAM_VERSION = 2
ANSWER = "$answer"


class ProgramError(ValueError):
    """The program is malformed or does not fit the scene / image it is applied to."""



# ================================================================ scene programs: semantics


#: the plan's operators (method/logic.py), written {"op": ..., "operands": [...]} in a program
LOGIC_OPS = frozenset({"ne", "between", "parity", "one_of", "statement"})


def condition_holds(test: dict[str, Any], value: int | str, scene: Scene) -> bool:
    """Does the condition's `test` hold for the query `value`? A test with its own `query` (another question
    about the scene) tests that question's value; `and` / `or` join the `tests` they hold."""
    op = test["op"]
    if op == "always":
        return True
    if op in ("and", "or"):
        results = [condition_holds(t, value, scene) for t in test["tests"]]
        return all(results) if op == "and" else any(results)
    if "query" in test:
        value = answer_query(scene, test["query"])
        test = {k: v for k, v in test.items() if k != "query"}
    if op in LOGIC_OPS:
        return logic_holds(op, [str(o) for o in test.get("operands", [])], str(value))
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


def resolve_field(field: Any, value: int | str) -> Any:
    return str(value) if field == ANSWER else field


def add_cell(scene: Scene, cell: Any, value: int | str) -> tuple[int, int]:
    """Where an `add` puts its object: a [col, row], or {"side": left | right | "$answer", "row": r} (the
    answered half of the picture: its first free cell in that row, nearest the middle first)."""
    if not isinstance(cell, dict):
        col, row = cell
        return int(col), int(row)
    side, row = str(resolve_field(cell["side"], value)), int(cell["row"])
    columns = (1, 0) if side == "left" else (2, 3)
    free = [c for c in columns if (c, row) not in scene.occupied_cells()]
    if not free:
        raise ProgramError(f"add: no free cell in the {side} half of row {row}")
    return free[0], row


#: formulas of a count parameter (method/logic.py draw_parameter)
COUNT_FORMULAS = {"same": 0, "plus_one": 1}


def resolve_count(field: Any, value: int | str, scene: Scene) -> int:
    """How many objects an `add_count` adds: a number, `"$answer"` (the condition's value), or
    {"query": <another question or null>, "formula": same | plus_one} (that question's count, plus one)."""
    if isinstance(field, dict):
        base = answer_query(scene, field["query"]) if field.get("query") else value
        return int(base) + COUNT_FORMULAS[field.get("formula", "same")]
    return int(resolve_field(field, value))


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
                obj.color = resolve_field(action["color"], value)
            elif obj.id in targets and op == "resize":
                obj.size = action["size"]
            elif obj.id in targets and op == "transform":
                for key, new in action["into"].items():
                    setattr(obj, key, resolve_field(new, value))
        return out
    if op == "add":
        col, row = add_cell(out, action["cell"], value)
        if (col, row) in out.occupied_cells():
            raise ProgramError(f"add: cell {col},{row} is taken")
        spec = {k: resolve_field(v, value) for k, v in action["object"].items()}
        out.objects.append(SceneObject(id=out.next_object_id(), col=col, row=row, **spec))
        return out
    if op == "add_count":  # as many copies of an object as the answer says, in the listed cells in order
        count = resolve_count(action["count"], value, scene)
        cells = action["cells"]
        if not 0 <= count <= len(cells):
            raise ProgramError(f"add_count: {count} objects do not fit in {len(cells)} cells")
        for col, row in cells[:count]:
            if (col, row) in out.occupied_cells():
                raise ProgramError(f"add_count: cell {col},{row} is taken")
            spec = {k: resolve_field(v, value) for k, v in action["object"].items()}  # "of that colour"
            out.objects.append(SceneObject(id=out.next_object_id(), col=col, row=row, **spec))
        return out
    if op == "keep_one":  # remove all but one of the counted objects (the first one stays)
        found = sorted(o.id for o in select(out, action["target"]))
        if len(found) < 2:
            raise ProgramError(f"keep_one: target {action['target']} matches {len(found)} objects, needs 2 or more")
        out.objects = [o for o in out.objects if o.id not in found[1:]]
        return out
    if op == "write_text":
        text = str(resolve_field(action["text"], value))
        if action.get("worked"):  # a count arithmetic's working, ending in the answer: "3 + 4 = 7"
            text = f"{action['worked']} = {text}"
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

    def own(test: dict[str, Any], reaching: list[int | str]) -> None:
        """A joined test, or one on another question (decided over that question's own answers)."""
        if test["op"] in ("and", "or"):
            for part in test["tests"]:
                own(part, reaching)
            return
        space, bare = reaching, test
        if "query" in test:
            space = possible_answers(scene, test["query"])
            bare = {k: v for k, v in test.items() if k != "query"}
        if len({_holds(bare, v, scene) for v in space}) < 2:
            decided.append(f"{test} over {space}")

    def walk(test: dict[str, Any], if_true: Any, if_false: Any, reaching: list[int | str]) -> None:
        if test["op"] in ("and", "or") or "query" in test:
            own(test, reaching)
            for node in (if_true, if_false):
                if is_nested(node):
                    walk(node["test"], node["if_true"], node["if_false"], reaching)
            return
        outcomes = [_holds(test, v, scene) for v in reaching]
        if len(set(outcomes)) < 2:
            decided.append(f"{test} over {reaching}")
        for node, truth in ((if_true, True), (if_false, False)):
            if is_nested(node):
                sub = [v for v, o in zip(reaching, outcomes, strict=True) if o == truth]
                walk(node["test"], node["if_true"], node["if_false"], sub)

    walk(program["condition"]["test"], program["if_true"], program["if_false"], space)
    return decided



def scene_of(meta: dict[str, Any]) -> Scene:
    try:
        return Scene.model_validate(meta["scene"])
    except (KeyError, ValueError) as exc:
        raise ProgramError(f"meta has no valid scene: {exc}") from None



def decode_rgb(png: bytes) -> Image.Image:
    try:
        with Image.open(io.BytesIO(png)) as image:
            return image.convert("RGB")
    except Exception as exc:  # PIL raises many types for bad data
        raise ProgramError(f"image cannot be decoded: {exc}") from None
