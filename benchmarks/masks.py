"""Edit-mask speed and identity: uniedit_synth.method.masks.edit_mask (OpenCV) side by side with the same recipe on
scipy.ndimage and with a literal transcription of UniWorld-V1's get_weight_mask (univa/utils/get_mask.py: a
Python loop over component labels, PIL for the threshold, max-pooling via reshape like F.max_pool2d).

Each pair is a noisy random image with a few recoloured blocks and scattered noise, like tests/unit/test_masks.py.
Every implementation's mask is checked against the others (same array) before timing. Prints ms per pair and
the ratio to edit_mask, per image size.

    python benchmarks/masks.py                    # 512 and 1024 px, 20 pairs each
    python benchmarks/masks.py --sizes 256 2048 --pairs 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.uniworld_reference import close_small_holes, full_resolution_mask  # noqa: E402
from uniedit_synth.method.masks import UNIWORLD, edit_mask  # noqa: E402

ELLIPSE_5 = np.array(  # cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    [[0, 0, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0]], dtype=bool
)


def pair(size: int, seed: int) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(seed)
    source = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    edited = source.copy()
    for _ in range(3):
        top, left = rng.integers(0, size * 3 // 4, size=2)
        height, width = rng.integers(size // 16, size // 4, size=2)
        edited[top : top + height, left : left + width] = rng.integers(0, 256, size=3)
    noise = rng.integers(0, size, size=(size, 2))
    edited[noise[:, 0], noise[:, 1]] ^= 0x40
    return Image.fromarray(source), Image.fromarray(edited)


def scipy_mask(source: Image.Image, edited: Image.Image) -> np.ndarray:
    from scipy import ndimage

    def close(mask: np.ndarray) -> np.ndarray:
        grown = ndimage.binary_dilation(mask, ELLIPSE_5)
        return ndimage.binary_erosion(grown, ELLIPSE_5, border_value=1)  # OpenCV's border rule for erosion

    mask = np.asarray(ImageChops.difference(source, edited).convert("L")) >= UNIWORLD.threshold
    mask = close(mask)
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    areas = np.bincount(labels.ravel())
    keep = areas >= UNIWORLD.min_component_frac * mask.sum()
    keep[0] = False
    mask = keep[labels]
    if mask.mean() < UNIWORLD.min_area_frac:
        mask = np.ones_like(mask)
    f = UNIWORLD.vae_factor
    rows, cols = mask.shape[0] // f, mask.shape[1] // f
    mask = mask[: rows * f, : cols * f].reshape(rows, f, cols, f).any(axis=(1, 3))
    return close(mask)


def authors_mask(source: Image.Image, edited: Image.Image) -> np.ndarray:
    """get_weight_mask for one reference image, as the authors wrote it (minus torch: the reshape max-pool is
    F.max_pool2d(kernel=stride=8), and the raise on 0 < area < 0.001 becomes all ones as in masks.py)."""
    mask = full_resolution_mask(source, edited)
    array = np.array(mask) > 127
    if array.mean() < 0.001:
        array = np.ones_like(array)
    rows, cols = array.shape[0] // 8, array.shape[1] // 8
    pooled = array[: rows * 8, : cols * 8].reshape(rows, 8, cols, 8).any(axis=(1, 3))
    return np.array(close_small_holes(Image.fromarray(pooled.astype(np.uint8) * 255), 5)) > 127


def per_pair_ms(fn, pairs: list[tuple[Image.Image, Image.Image]]) -> float:
    fn(*pairs[0])  # warm-up (imports, first allocation)
    started = time.perf_counter()
    for source, edited in pairs:
        fn(source, edited)
    return (time.perf_counter() - started) / len(pairs) * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--pairs", type=int, default=20)
    args = parser.parse_args(argv)
    implementations = {"edit_mask (OpenCV)": edit_mask, "scipy.ndimage": scipy_mask, "authors' code": authors_mask}
    print(f"{'size':>5} {'implementation':<20} {'ms/pair':>8} {'÷ edit_mask':>11}  identical")
    for size in args.sizes:
        pairs = [pair(size, seed) for seed in range(args.pairs)]
        reference = [edit_mask(s, e) for s, e in pairs]
        base = None
        for name, fn in implementations.items():
            same = all(np.array_equal(fn(s, e), ref) for (s, e), ref in zip(pairs, reference, strict=True))
            ms = per_pair_ms(fn, pairs)
            base = base or ms
            print(f"{size:>5} {name:<20} {ms:>8.2f} {ms / base:>11.2f}  {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
