"""Where an edit program allows the image to change, and the non-edit consistency of an edit measured there.

The region of a `scene` program is where the offline world's expected re-render differs from the source, of a
`generic` program its branch's corner box; both are widened by REGION_MARGIN_PX. The score itself is the
method's (method/consistency.py), which knows no program.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ..method.consistency import changed_mask, comparable, consistency_score
from .generic import corner_box, generic_branch_taken
from .program import ProgramError, apply_program, scene_of
from .render import render_image

#: how far the known region is widened (pixels): anti-aliased outlines and shadows of the edited objects
REGION_MARGIN_PX = 4


def edit_region(
    source: np.ndarray, program: dict[str, Any] | None, meta: dict[str, Any]
) -> np.ndarray | None:
    """A boolean mask of where the expected edit is allowed to change the image, or None when unknown."""
    if not isinstance(program, dict):
        return None
    height, width = source.shape[:2]
    try:
        if program.get("kind") == "scene":
            expected = np.asarray(render_image(apply_program(scene_of(meta), program)))
            if expected.shape != source.shape:
                return None
            region = changed_mask(expected, source)
        elif program.get("kind") == "generic":
            action = program["if_true" if generic_branch_taken(program) else "if_false"]
            x0, y0, x1, y1 = corner_box(action["corner"], width, height)
            region = np.zeros((height, width), dtype=bool)
            region[y0:y1, x0:x1] = True
        else:
            return None
    except (ProgramError, KeyError, TypeError, ValueError):
        return None
    if REGION_MARGIN_PX:
        kernel = np.ones((2 * REGION_MARGIN_PX + 1, 2 * REGION_MARGIN_PX + 1), np.uint8)
        region = cv2.dilate(region.astype(np.uint8), kernel) > 0
    return region


def non_edit_consistency(
    source_png: bytes, edited_png: bytes | None, program: dict[str, Any] | None, meta: dict[str, Any]
) -> float | None:
    """The score for one edit, or None when the region is unknown or an image cannot be compared."""
    if not edited_png or not isinstance(program, dict):
        return None
    pair = comparable(source_png, edited_png)
    if pair is None:
        return None
    source, edited = pair
    region = edit_region(source, program, meta)
    if region is None:
        return None
    return consistency_score(source, edited, region)[0]
