"""Checking an edit against its program, as the offline judge does: 5/5/5 for the expected edit, a low
instruction-following score for the other branch, a wrong detail, a wrong place or no change."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel

from ..method.consistency import changed_mask
from .generic import apply_generic, corner_box, generic_branch_taken
from .program import (
    ProgramError,
    apply_branch,
    branch_taken,
    condition_value,
    decode_rgb,
    is_conditional,
    resolve,
    scene_of,
)
from .render import render_image

SCORE_NAMES = ("instruction_following", "visual_quality", "coherence")
# Share of pixels that may differ from the expected render for an edit to still count as exact. Tiny on
# purpose: one wrong digit on a board changes only a few dozen pixels of a 256x256 render.
SCENE_MISMATCH_SHARE = 0.0001


class VerifyResult(BaseModel):
    """A judge's verdict on one edit: scores 1–5 per criterion, and why."""

    ok: bool
    scores: dict[str, int]
    analysis: str



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
