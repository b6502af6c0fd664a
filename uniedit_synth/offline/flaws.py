"""What an editor returns for a program: the expected edit (the scene re-rendered, or the generic edit) and
edits that are wrong in a named way (FLAWS), for the offline editor's failure modes and the tests."""

from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..method.consistency import PIXEL_TOLERANCE
from .choose import new_object
from .generic import (
    CORNERS,
    GENERIC_COLORS,
    TINTS,
    apply_generic,
    corner_box,
    draw_generic_action,
    generic_branch_taken,
)
from .program import (
    ProgramError,
    apply_action,
    apply_branch,
    apply_program,
    branch_taken,
    condition_value,
    decode_rgb,
    is_conditional,
    resolve,
    resolve_count,
    resolve_field,
    scene_of,
)
from .questions import select as _select
from .render import encode_png, render_png
from .world import COLORS, Scene, SceneObject

FLAWS = ("wrong_branch", "wrong_detail", "unchanged", "wrong_digit", "near_miss_shade", "extra_object")
#: every flaw the editor can apply: FLAWS (the default draw) plus `collateral_change` (the right edit, and an
#: unrelated object recoloured: what non-edit consistency measures), chosen with the editor's `flaw_kinds`
FLAW_KINDS = (*FLAWS, "collateral_change")
#: probes of the plan's logic (benchmarks/data_quality.py, tests): the wrong leaf of a nested branch or switch
#: on the path's own first step (`wrong_path`), and the right edit with a count parameter off by one
#: (`wrong_parameter`)
LOGIC_PROBES = ("wrong_path", "wrong_parameter")


# ================================================================ expected edits, flaws, verification


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
    if flaw not in FLAW_KINDS and flaw not in LOGIC_PROBES:
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
    elif flaw == "wrong_path" and is_conditional(program):
        other = _other_leaf(program["if_true" if taken else "if_false"], action)
        wrong = apply_action(scene, other, value) if other is not None else None
    elif flaw == "wrong_parameter" and action["op"] in ("add_count", "keep_one"):
        if action["op"] == "add_count":
            count = resolve_count(action["count"], value, scene)
            wrong = apply_action(scene, {**action, "count": count + 1 if count + 1 <= len(action["cells"]) else count - 1}, value)
        else:  # two of the counted objects left instead of one
            found = sorted(o.id for o in scene.objects if o.id in {x.id for x in _select(scene, action["target"])})
            if len(found) >= 3:
                wrong = scene.model_copy(deep=True)
                wrong.objects = [o for o in wrong.objects if o.id not in found[2:]]
    elif flaw == "wrong_digit" and action["op"] in ("write_text", "add_count"):
        if action["op"] == "write_text":
            text = str(resolve_field(action["text"], value))
            if text.lstrip("-").isdigit():
                wrong = apply_action(scene, {**action, "text": str(int(text) + rng.choice((-1, 1)))}, value)
        else:
            count = resolve_count(action["count"], value, scene)
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
                SceneObject(id=wrong.next_object_id(), col=col, row=row, **new_object(rng, ()))
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


def _other_leaf(node: Any, taken: dict[str, Any]) -> dict[str, Any] | None:
    """Another action inside the branch the path takes (a nested condition's other side), if any."""
    leaves: list[dict[str, Any]] = []

    def collect(n: Any) -> None:
        if isinstance(n, dict) and "test" in n and "op" not in n:
            collect(n["if_true"])
            collect(n["if_false"])
        elif isinstance(n, dict):
            leaves.append(n)

    collect(node)
    others = [leaf for leaf in leaves if leaf != taken]
    return others[0] if others else None


def _changed_objects(before: Scene, after: Scene) -> set[int]:
    old = {o.id: o.model_dump() for o in before.objects}
    return {o.id for o in after.objects if old.get(o.id) != o.model_dump()}


def _wrong_detail(scene: Scene, program: dict[str, Any], taken: bool, rng: random.Random) -> Scene | None:
    value = condition_value(scene, program)
    action = dict(resolve(program["if_true" if taken else "if_false"], value, scene))
    if action["op"] == "recolor":
        intended = resolve_field(action["color"], value)
        action["color"] = rng.choice([c for c in COLORS if c != intended])
    elif action["op"] == "add":
        obj = {k: resolve_field(v, value) for k, v in action["object"].items()}
        obj["color"] = rng.choice([c for c in COLORS if c != obj["color"]])
        action["object"] = obj
    elif action["op"] == "transform":
        into = dict(action["into"])
        into["color"] = rng.choice([c for c in COLORS if c != into["color"]])
        action["into"] = into
    elif action["op"] == "add_count":
        count = resolve_count(action["count"], value, scene)
        action["count"] = count + 1 if count + 1 <= len(action["cells"]) else count - 1
    elif action["op"] == "write_text":
        text = str(resolve_field(action["text"], value))
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
