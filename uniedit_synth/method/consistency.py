"""Non-edit consistency, measured not asked: how much of an image changed outside the region the edit was for.

Where the edit region is known — the offline world's program (the pixels where the expected re-render differs
from the source, widened a little) or a generic program's corner box — the score is the smaller of

* the share of pixels outside the region that did not change (a channel moved by more than the offline
  world's per-pixel tolerance counts as changed: the masked pixel difference), and
* 1 - the perceptual distance (64-bit pHash Hamming distance / 64) between the source and the edited image
  with the region pasted back from the source, so only what changed outside the region counts.

1.0 means nothing outside the region changed. A record without a known region gets no score (None).
"""

from __future__ import annotations

from typing import Any

import cv2
import imagehash
import numpy as np
from PIL import Image

from ..offline.program import (
    PIXEL_TOLERANCE,
    ProgramError,
    apply_program,
    corner_box,
    decode_rgb,
    generic_branch_taken,
    scene_of,
)
from ..offline.render import render_image

#: how far the known region is widened (pixels): anti-aliased outlines and shadows of the edited objects
REGION_MARGIN_PX = 4


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > PIXEL_TOLERANCE


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
            region = _changed(expected, source)
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


def consistency_score(
    source: np.ndarray, edited: np.ndarray, region: np.ndarray
) -> tuple[float, dict[str, float]]:
    """(score, its parts) for an edit whose allowed region is `region` (see the module docstring)."""
    outside = ~region
    changed = _changed(edited, source)
    share = float(changed[outside].mean()) if outside.any() else 0.0
    composite = np.where(region[..., None], source, edited).astype(np.uint8)
    distance = imagehash.phash(Image.fromarray(source)) - imagehash.phash(Image.fromarray(composite))
    perceptual = float(distance) / 64.0
    score = round(max(0.0, min(1.0 - share, 1.0 - perceptual)), 4)
    return score, {"changed_outside": round(share, 6), "perceptual_distance": round(perceptual, 4)}


def _comparable(source_png: bytes, edited_png: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """Both images as RGB arrays of one shape, or None when one cannot be decoded or the sizes differ."""
    try:
        source = np.asarray(decode_rgb(source_png))
        edited = np.asarray(decode_rgb(edited_png))
    except ProgramError:
        return None
    return (source, edited) if source.shape == edited.shape else None


def non_edit_consistency(
    source_png: bytes, edited_png: bytes | None, program: dict[str, Any] | None, meta: dict[str, Any]
) -> float | None:
    """The score for one edit, or None when the region is unknown or an image cannot be compared."""
    if not edited_png or not isinstance(program, dict):
        return None
    pair = _comparable(source_png, edited_png)
    if pair is None:
        return None
    source, edited = pair
    region = edit_region(source, program, meta)
    if region is None:
        return None
    return consistency_score(source, edited, region)[0]


def box_region_consistency(source_png: bytes, edited_png: bytes | None, box: list[float] | None) -> float | None:
    """The score with the region the judge localised (`[x0, y0, x1, y1]`, fractions of the image) as the
    allowed region: for records whose edit program (if any) gives no region."""
    if not edited_png or not box:
        return None
    pair = _comparable(source_png, edited_png)
    if pair is None:
        return None
    source, edited = pair
    height, width = source.shape[:2]
    x0, y0, x1, y1 = box
    region = np.zeros((height, width), dtype=bool)
    region[int(y0 * height) : int(np.ceil(y1 * height)), int(x0 * width) : int(np.ceil(x1 * width))] = True
    return consistency_score(source, edited, region)[0]
