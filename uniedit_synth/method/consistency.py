"""Non-edit consistency, measured not asked: how much of an image changed outside the region the edit was for.

Where the edit region is known — from an edit program (offline/regions.py: the pixels where the offline world's
expected re-render differs from the source, or a generic program's corner box) or the box the judge localised —
the score is the smaller of

* the share of pixels outside the region that did not change (a channel moved by more than PIXEL_TOLERANCE
  counts as changed: the masked pixel difference), and
* 1 - the perceptual distance (64-bit pHash Hamming distance / 64) between the source and the edited image
  with the region pasted back from the source, so only what changed outside the region counts.

1.0 means nothing outside the region changed. A record without a known region gets no score (None).
"""

from __future__ import annotations

import io

import imagehash
import numpy as np
from PIL import Image

from .masks import changed_beyond

#: a pixel "changed" when some channel moved by more than this (absorbs mild re-encoding noise); the offline
#: world's judge uses the same tolerance
PIXEL_TOLERANCE = 24


def changed_mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Where two RGB arrays of one shape differ by more than PIXEL_TOLERANCE on some channel."""
    return changed_beyond(a, b, PIXEL_TOLERANCE)


def consistency_score(
    source: np.ndarray, edited: np.ndarray, region: np.ndarray
) -> tuple[float, dict[str, float]]:
    """(score, its parts) for an edit whose allowed region is `region` (see the module docstring)."""
    outside = ~region
    changed = changed_mask(edited, source)
    share = float(changed[outside].mean()) if outside.any() else 0.0
    composite = np.where(region[..., None], source, edited).astype(np.uint8)
    distance = imagehash.phash(Image.fromarray(source)) - imagehash.phash(Image.fromarray(composite))
    perceptual = float(distance) / 64.0
    score = round(max(0.0, min(1.0 - share, 1.0 - perceptual)), 4)
    return score, {"changed_outside": round(share, 6), "perceptual_distance": round(perceptual, 4)}


def comparable(source_png: bytes, edited_png: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """Both images as RGB arrays of one shape, or None when one cannot be decoded or the sizes differ."""
    try:
        with Image.open(io.BytesIO(source_png)) as image:
            source = np.asarray(image.convert("RGB"))
        with Image.open(io.BytesIO(edited_png)) as image:
            edited = np.asarray(image.convert("RGB"))
    except Exception:  # noqa: BLE001 - PIL raises many types for bad data
        return None
    return (source, edited) if source.shape == edited.shape else None


def box_region_consistency(source_png: bytes, edited_png: bytes | None, box: list[float] | None) -> float | None:
    """The score with the region the judge localised (`[x0, y0, x1, y1]`, fractions of the image) as the
    allowed region: for records whose edit program (if any) gives no region."""
    if not edited_png or not box:
        return None
    pair = comparable(source_png, edited_png)
    if pair is None:
        return None
    source, edited = pair
    height, width = source.shape[:2]
    x0, y0, x1, y1 = box
    region = np.zeros((height, width), dtype=bool)
    region[int(y0 * height) : int(np.ceil(y1 * height)), int(x0 * width) : int(np.ceil(x1 * width))] = True
    return consistency_score(source, edited, region)[0]
