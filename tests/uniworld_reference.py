"""The UniWorld-V1 authors' mask helpers (univa/utils/get_mask.py), transcribed once: the mask test checks
masks.py against them and benchmarks/masks.py times them. Needs OpenCV, as the authors' code does."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageChops


def close_small_holes(pil_mask: Image.Image, kernel_size: int = 5) -> Image.Image:
    import cv2

    array = np.array(pil_mask.convert("L"))
    _, binary = cv2.threshold(array, 127, 255, cv2.THRESH_BINARY)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_size, kernel_size))
    return Image.fromarray(cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel))


def filter_small_components(pil_mask: Image.Image, area_threshold: float) -> Image.Image:
    import cv2

    array = np.array(pil_mask.convert("L"))
    _, binary = cv2.threshold(array, 127, 255, cv2.THRESH_BINARY)
    count, labels = cv2.connectedComponents(binary, connectivity=8)
    total = np.count_nonzero(binary)
    output = np.zeros_like(binary)
    for label in range(1, count):
        component = labels == label
        if component.sum() >= area_threshold * total:
            output[component] = 255
    return Image.fromarray(output)


def full_resolution_mask(source: Image.Image, edited: Image.Image) -> Image.Image:
    """The authors' mask before pooling: difference → grey → ≥ 18 → close (5-px ellipse) → components ≥ 0.3."""
    diff = ImageChops.difference(source, edited).convert("L")
    mask = diff.point(lambda x: 255 if x >= 18 else 0).convert("1")
    return filter_small_components(close_small_holes(mask, 5), 0.3)
