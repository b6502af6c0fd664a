"""Edit masks and region weights (UniWorld-V1 §3.5) on synthetic pairs whose edited region is known."""

from __future__ import annotations

import io
import math
import time
from collections import deque

import numpy as np
import pytest
from PIL import Image

from uniedit_synth.masks import (
    dilate,
    edit_mask,
    erode,
    label_components,
    mask_from_image,
    mask_to_png,
    max_pool,
    region_weight,
    region_weights,
    remove_small_components,
)


def flat(size: int = 64, colour: tuple[int, int, int] = (60, 120, 180)) -> np.ndarray:
    return np.full((size, size, 3), colour, dtype=np.uint8)


def recoloured(image: np.ndarray, box: tuple[int, int, int, int], colour=(250, 240, 10)) -> np.ndarray:
    out = image.copy()
    left, top, right, bottom = box
    out[top:bottom, left:right] = colour
    return out


def box_mask(shape: tuple[int, int], box: tuple[int, int, int, int], grow: int = 0) -> np.ndarray:
    left, top, right, bottom = box
    mask = np.zeros(shape, dtype=bool)
    mask[max(0, top - grow) : bottom + grow, max(0, left - grow) : right + grow] = True
    return mask


def as_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


BOX = (16, 20, 40, 36)


def test_mask_is_exactly_the_recoloured_rectangle_without_dilation() -> None:
    source = flat()
    mask = edit_mask(source, recoloured(source, BOX), dilation=0)
    assert mask.dtype == bool and mask.shape == (64, 64)
    np.testing.assert_array_equal(mask, box_mask((64, 64), BOX))


def test_dilation_grows_the_mask_by_its_radius_and_close_does_not() -> None:
    source = flat()
    edited = recoloured(source, BOX)
    np.testing.assert_array_equal(edit_mask(source, edited, dilation=3), box_mask((64, 64), BOX, grow=3))
    np.testing.assert_array_equal(edit_mask(source, edited, dilation=3, close=True), box_mask((64, 64), BOX))


def test_close_fills_holes_inside_the_edit() -> None:
    source = flat()
    edited = recoloured(source, BOX)
    edited[26:28, 25:27] = source[26:28, 25:27]  # a 2×2 unchanged hole inside the edit
    holed = edit_mask(source, edited, dilation=0)
    assert not holed[26:28, 25:27].any()
    np.testing.assert_array_equal(edit_mask(source, edited, dilation=2, close=True), box_mask((64, 64), BOX))


def test_region_touching_the_border_survives_close() -> None:
    source = flat()
    corner = (0, 0, 10, 12)
    mask = edit_mask(source, recoloured(source, corner), dilation=2, close=True)
    np.testing.assert_array_equal(mask, box_mask((64, 64), corner))


def test_isolated_noise_pixels_are_dropped() -> None:
    rng = np.random.default_rng(0)
    source = flat()
    edited = recoloured(source, BOX)
    noise = [
        (int(y), int(x)) for y, x in rng.integers(0, 64, size=(60, 2)) if not (14 <= y < 42 and 10 <= x < 46)
    ]
    assert len(noise) > 20
    for y, x in noise:
        edited[y, x] = 255 - edited[y, x]
    noisy = edit_mask(source, edited, dilation=1, min_component_frac=0.0)
    assert noisy.sum() > box_mask((64, 64), BOX, grow=1).sum()
    clean = edit_mask(source, edited, dilation=1, min_component_frac=0.05)
    np.testing.assert_array_equal(clean, box_mask((64, 64), BOX, grow=1))


def test_several_real_edits_are_all_kept() -> None:
    source = flat()
    second = (44, 4, 60, 14)
    edited = recoloured(recoloured(source, BOX), second, colour=(0, 0, 0))
    mask = edit_mask(source, edited, dilation=0, min_component_frac=0.05)
    np.testing.assert_array_equal(mask, box_mask((64, 64), BOX) | box_mask((64, 64), second))


def test_subthreshold_changes_are_ignored() -> None:
    source = flat()
    edited = source.copy()
    edited[:, :] += 5  # global re-encoding drift, below the threshold
    edited = recoloured(edited, BOX)
    np.testing.assert_array_equal(
        edit_mask(source, edited, dilation=0, threshold=12), box_mask((64, 64), BOX)
    )


def test_identical_images_give_an_all_ones_mask() -> None:
    source = flat()
    assert edit_mask(source, source).all()
    pooled = edit_mask(source, source, grid=(4, 8))
    assert pooled.shape == (4, 8) and pooled.all()
    assert region_weight(pooled) == 1.0


def test_grid_max_pool_marks_every_cell_the_edit_touches() -> None:
    source = flat()
    mask = edit_mask(source, recoloured(source, BOX), dilation=0, grid=8)
    expected = np.zeros((8, 8), dtype=bool)
    expected[20 // 8 : (36 - 1) // 8 + 1, 16 // 8 : (40 - 1) // 8 + 1] = True
    np.testing.assert_array_equal(mask, expected)


def test_max_pool_uneven_and_finer_grids() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[4, 7] = True
    pooled = max_pool(mask, 3)  # cells start at 0, 3, 6
    expected = np.zeros((3, 3), dtype=bool)
    expected[1, 2] = True
    np.testing.assert_array_equal(pooled, expected)
    assert max_pool(mask, (20, 20)).sum() == 4  # nearest-neighbour upsampling


def test_inputs_may_be_pil_bytes_or_arrays_and_sizes_may_differ() -> None:
    source = flat()
    edited = recoloured(source, BOX)
    reference = edit_mask(source, edited, dilation=0)
    np.testing.assert_array_equal(edit_mask(as_png(source), as_png(edited), dilation=0), reference)
    np.testing.assert_array_equal(
        edit_mask(Image.fromarray(source), Image.fromarray(edited), dilation=0), reference
    )
    bigger = Image.fromarray(edited).resize((128, 128), Image.Resampling.NEAREST)
    resized = edit_mask(source, bigger, dilation=0)
    assert resized.shape == (64, 64)
    assert resized[BOX[1] + 1 : BOX[3] - 1, BOX[0] + 1 : BOX[2] - 1].all()
    assert not resized[box_mask((64, 64), BOX, grow=2) == 0].any()


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        ("log", math.log2(4) + 1),
        ("linear", 4.0),
        ("exp_root", 2.0 ** (2 - 1)),
        ("quad_root", (2 - 1) ** 2 + 1),
    ],
)
def test_region_weights_are_exact(fn: str, expected: float) -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[:4, :4] = True  # a quarter of the area: x = 4
    weight_map, weight = region_weights(mask, fn)
    assert weight == pytest.approx(expected)
    assert weight_map.dtype == np.float32
    np.testing.assert_allclose(weight_map[mask], expected, rtol=1e-6)
    np.testing.assert_array_equal(weight_map[~mask], 1.0)
    full_map, full = region_weights(np.ones((8, 8), dtype=bool), fn)
    assert full == pytest.approx(1.0) and np.all(full_map == 1.0)


def test_paper_log_weight_for_the_synthetic_edit() -> None:
    source = flat()
    mask = edit_mask(source, recoloured(source, BOX), dilation=0)
    area = (BOX[2] - BOX[0]) * (BOX[3] - BOX[1])
    assert region_weight(mask) == pytest.approx(math.log2(64 * 64 / area) + 1)


def test_unknown_weight_function_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown weight function"):
        region_weight(np.ones((2, 2), dtype=bool), "cubic")  # type: ignore[arg-type]


def test_dilate_and_erode_are_duals_on_a_square() -> None:
    mask = np.zeros((20, 20), dtype=bool)
    mask[8:12, 8:12] = True
    grown = dilate(mask, 2)
    np.testing.assert_array_equal(grown, box_mask((20, 20), (6, 6, 14, 14)))
    np.testing.assert_array_equal(erode(grown, 2), mask)


def _bfs_labels(mask: np.ndarray) -> tuple[np.ndarray, int]:
    labels = np.zeros(mask.shape, dtype=int)
    count = 0
    for start in zip(*np.nonzero(mask), strict=True):
        if labels[start]:
            continue
        count += 1
        labels[start] = count
        queue = deque([start])
        while queue:
            y, x = queue.popleft()
            for ny in range(max(0, y - 1), min(mask.shape[0], y + 2)):
                for nx in range(max(0, x - 1), min(mask.shape[1], x + 2)):
                    if mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = count
                        queue.append((ny, nx))
    return labels, count


def test_component_labels_match_a_breadth_first_reference() -> None:
    rng = np.random.default_rng(7)
    for _ in range(60):
        height, width = rng.integers(1, 30, size=2)
        mask = rng.random((height, width)) < rng.random()
        labels, count = label_components(mask)
        reference, reference_count = _bfs_labels(mask)
        assert count == reference_count
        assert (labels[~mask] == 0).all()
        assert len(set(zip(labels[mask].tolist(), reference[mask].tolist(), strict=True))) == count


def test_remove_small_components_uses_a_fraction_of_the_foreground() -> None:
    mask = np.zeros((30, 30), dtype=bool)
    mask[0:10, 0:10] = True  # 100 px
    mask[20:23, 20:23] = True  # 9 px = 8.3 % of 109
    np.testing.assert_array_equal(remove_small_components(mask, 0.05), mask)
    kept = remove_small_components(mask, 0.10)
    assert kept.sum() == 100 and kept[0:10, 0:10].all()


def test_mask_png_round_trip() -> None:
    mask = box_mask((64, 64), BOX)
    np.testing.assert_array_equal(mask_from_image(mask_to_png(mask)), mask)


def test_a_512_pair_takes_milliseconds() -> None:
    rng = np.random.default_rng(1)
    source = rng.integers(0, 256, size=(512, 512, 3), dtype=np.uint8)
    edited = source.copy()
    edited[100:300, 60:260] = (250, 10, 10)
    flips = rng.integers(0, 512, size=(300, 2))
    edited[flips[:, 0], flips[:, 1]] ^= 0xFF
    src_image, edited_image = Image.fromarray(source), Image.fromarray(edited)
    edit_mask(src_image, edited_image)  # warm-up
    started = time.perf_counter()
    for _ in range(5):
        mask = edit_mask(src_image, edited_image, grid=32)
    per_call = (time.perf_counter() - started) / 5
    assert mask[100 // 16 : 300 // 16, 60 // 16 : 260 // 16].all()
    assert per_call < 0.1, f"edit_mask took {per_call * 1000:.1f} ms for 512×512 (target < 20 ms)"
