"""The builtin judge's observations: what an edit changed, which branch it shows, whether it changed anything
outside the target — measured in pixels against the edit program, so they are true by construction.

A model judge answers these before it scores (stages/schemas.py JUDGE_SCHEMA); the builtin judge is a pixel
oracle and fills them from the renders: the expected branch's render, the other branch's render, and
(when both branches can be applied one after the other) the render with both. `target` is where the
expected edit changes pixels, grown by TARGET_MARGIN_PX so anti-aliased edges of a wrong glyph or shade on
the right object still count as on the target.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..method.masks import changed_beyond
from .generic import apply_generic, corner_box, generic_branch_taken
from .program import (
    ProgramError,
    apply_action,
    apply_branch,
    branch_taken,
    condition_value,
    decode_rgb,
    is_conditional,
    resolve,
    scene_of,
)
from .render import render_image

Branch = Literal["expected", "other", "both", "none", "not_conditional"]
PIXEL_TOLERANCE = 24
TARGET_MARGIN_PX = 4
#: share of the image that may change outside the target before `changes_outside_target` (a few stray pixels
#: of anti-aliasing are not a change anyone would see)
OUTSIDE_SHARE = 0.0005
#: share of the image below which the edit counts as no visible change at all
UNCHANGED_SHARE = 0.0001


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return changed_beyond(a, b, PIXEL_TOLERANCE)


def _grow(mask: np.ndarray, px: int = TARGET_MARGIN_PX) -> np.ndarray:
    """`mask` grown by `px` in every direction (a square max filter; Pillow's MaxFilter gave the same mask at
    40x the time on 1024-px images)."""
    if not mask.any():
        return mask
    import cv2

    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def _box_text(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    return f"x {xs.min()}–{xs.max()}, y {ys.min()}–{ys.max()}"


def _verdict(
    edited: np.ndarray,
    source: np.ndarray,
    expected: np.ndarray,
    other: np.ndarray | None,
    both: np.ndarray | None,
) -> dict[str, Any]:
    changed = _changed(edited, source)
    total = changed.size
    target = _grow(_changed(expected, source))
    outside = (changed & ~target).sum() / total
    if changed.mean() <= UNCHANGED_SHARE:
        branch: Branch = "not_conditional" if other is None else "none"
        return {
            "observed_changes": "No visible change: the edited image matches the original.",
            "branch_observed": branch,
            "changes_outside_target": False,
        }
    text = f"Pixels changed on {changed.mean():.2%} of the image ({_box_text(changed)})"
    if other is None:
        branch = "not_conditional"
    else:
        region = target | _grow(_changed(other, source))
        off_expected = _changed(edited, expected)[region].mean() if region.any() else 1.0
        off_other = _changed(edited, other)[region].mean() if region.any() else 1.0
        distinct = both is not None and all(
            _changed(both, render).mean() > UNCHANGED_SHARE for render in (expected, other)
        )
        if distinct and _changed(edited, both).mean() <= UNCHANGED_SHARE:
            branch = "both"
        elif not changed[region].any():
            branch = "none"
        else:
            branch = "expected" if off_expected <= off_other else "other"
        text += (
            f"; in the branches' regions it is closer to the {branch} branch's edit"
            if branch
            in (
                "expected",
                "other",
            )
            else f"; branch observed: {branch}"
        )
    if outside > OUTSIDE_SHARE:
        text += f"; {outside:.2%} of the image changed outside the target"
    return {
        "observed_changes": text + ".",
        "branch_observed": branch,
        "changes_outside_target": bool(outside > OUTSIDE_SHARE),
    }


def _both_scene(scene: Any, program: dict[str, Any]) -> np.ndarray | None:
    """The scene with both top-level branches' actions applied, where they can be (else None)."""
    value = condition_value(scene, program)
    try:
        first = apply_action(scene, resolve(program["if_true"], value, scene), value)
        return np.asarray(
            render_image(apply_action(first, resolve(program["if_false"], value, first), value))
        )
    except (ProgramError, KeyError, ValueError):
        return None


def observe(
    source_png: bytes, edited_png: bytes, program: dict[str, Any], meta: dict[str, Any]
) -> dict[str, Any]:
    """The judge's observation fields for one edit (`observed_changes`, `branch_observed`,
    `changes_outside_target`), measured against the program's renders."""
    try:
        source = np.asarray(decode_rgb(source_png))
        edited = np.asarray(decode_rgb(edited_png))
    except ProgramError as exc:
        return {"observed_changes": str(exc), "branch_observed": "none", "changes_outside_target": False}
    if edited.shape != source.shape:
        return {
            "observed_changes": f"The edited image is {edited.shape[1]}x{edited.shape[0]}, the original "
            f"{source.shape[1]}x{source.shape[0]}: the whole image was redrawn.",
            "branch_observed": "none",
            "changes_outside_target": True,
        }
    try:
        if program.get("kind") == "scene":
            scene = scene_of(meta)
            taken = branch_taken(scene, program)
            expected = np.asarray(render_image(apply_branch(scene, program, taken)))
            other = both = None
            if is_conditional(program):
                other = np.asarray(render_image(apply_branch(scene, program, not taken)))
                both = _both_scene(scene, program)
            return _verdict(edited, source, expected, other, both)
        if program.get("kind") == "generic":
            return _generic(source_png, source, edited, program)
    except (ProgramError, KeyError, TypeError, ValueError) as exc:
        return {
            "observed_changes": f"cannot observe: {exc!r}",
            "branch_observed": "none",
            "changes_outside_target": False,
        }
    return {"observed_changes": "unknown program", "branch_observed": "none", "changes_outside_target": False}


def _generic(
    source_png: bytes, source: np.ndarray, edited: np.ndarray, program: dict[str, Any]
) -> dict[str, Any]:
    """Generic programs draw into corner boxes: the target is the expected branch's box."""
    taken = generic_branch_taken(program)
    expected = np.asarray(decode_rgb(apply_generic(source_png, program, taken)))
    conditional = program["condition"]["test"]["op"] != "always"
    if not conditional:
        return _verdict(edited, source, expected, None, None)
    other = np.asarray(decode_rgb(apply_generic(source_png, program, not taken)))
    height, width = source.shape[:2]
    boxes = []
    for name in ("if_true", "if_false"):
        mask = np.zeros((height, width), dtype=bool)
        x0, y0, x1, y1 = corner_box(program[name]["corner"], width, height)
        mask[y0:y1, x0:x1] = True
        boxes.append(mask)
    mine, theirs = (boxes[0], boxes[1]) if taken else (boxes[1], boxes[0])
    changed = _changed(edited, source)
    out = _verdict(edited, source, expected, other, None)
    # a box drawn into: the branches' boxes differ, so "both" is both boxes changed
    in_mine, in_theirs = changed[mine & ~theirs].mean(), changed[theirs & ~mine].mean()
    if in_mine > 0.05 and in_theirs > 0.05:
        out["branch_observed"] = "both"
    outside = (changed & ~mine).sum() / changed.size
    out["changes_outside_target"] = bool(outside > OUTSIDE_SHARE)
    return out
