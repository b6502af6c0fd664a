"""Edit masks and region weights: UniWorld-V1's recipe (univa/utils/get_mask.py), its defaults, its weights."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from tests.uniworld_reference import close_small_holes, full_resolution_mask
from uniedit_synth.method.masks import (
    UNIWORLD,
    MaskParams,
    close,
    difference_mask,
    edit_mask,
    label_components,
    mask_from_image,
    mask_to_png,
    max_pool,
    pool_by_factor,
    region_weight,
    region_weights,
    remove_small_components,
)

GREY = (128, 128, 128)
PURPLE = (128, 0, 128)
RED = (177, 0, 0)


def flat(size: int = 64, colour: tuple[int, int, int] = (60, 120, 180)) -> np.ndarray:
    return np.full((size, size, 3), colour, dtype=np.uint8)


def recoloured(image: np.ndarray, box: tuple[int, int, int, int], colour=(250, 240, 10)) -> np.ndarray:
    out = image.copy()
    left, top, right, bottom = box
    out[top:bottom, left:right] = colour
    return out


def box_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def as_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


BOX = (16, 20, 40, 36)
FULL_RES = {"vae_factor": 1}


# -- the acceptance case: a recolour of equal luminance ----------------------------------------------------
def test_purple_to_red_square_gives_the_square_at_full_resolution() -> None:
    square = (64, 80, 176, 192)
    source = recoloured(flat(256, GREY), square, PURPLE)
    edited = recoloured(source, square, RED)
    # the two colours have the same grey level: a grey-level difference of each image sees nothing here
    assert abs(int(Image.new("RGB", (1, 1), PURPLE).convert("L").getpixel((0, 0)))
               - int(Image.new("RGB", (1, 1), RED).convert("L").getpixel((0, 0)))) <= 1
    truth = box_mask((256, 256), square)
    full = edit_mask(source, edited, **FULL_RES)
    assert full.shape == (256, 256) and iou(full, truth) >= 0.9
    pooled = edit_mask(source, edited)  # the authors' default: max-pooled by the VAE factor 8
    assert pooled.shape == (32, 32)
    assert iou(np.kron(pooled, np.ones((8, 8), dtype=bool)), truth) >= 0.9
    assert region_weight(pooled) == pytest.approx(round(math.log2(256 * 256 / truth.sum()) + 1, 6))


# -- each default parameter pinned, by value and by behaviour ----------------------------------------------
def test_the_defaults_are_uniworlds() -> None:
    assert UNIWORLD == MaskParams(
        threshold=18, close_kernel=5, min_component_frac=0.3, min_area_frac=0.001, vae_factor=8
    )
    assert edit_mask.__defaults__ == (UNIWORLD,)


def test_threshold_18_on_the_grey_level_of_the_difference() -> None:
    source = flat(64, (100, 100, 100))
    at = edit_mask(source, recoloured(source, BOX, (118, 118, 118)), **FULL_RES)
    below = edit_mask(source, recoloured(source, BOX, (117, 117, 117)), **FULL_RES)
    np.testing.assert_array_equal(at, box_mask((64, 64), BOX))
    assert below.all()  # nothing changed enough: all ones (uniform weights)


def test_close_kernel_5_fills_a_four_pixel_gap_and_smaller_kernels_do_not() -> None:
    mask = box_mask((64, 64), (10, 10, 40, 40))
    mask[23:27, 10:40] = False  # a four-pixel slit through the square
    assert close(mask, 5)[23:27, 12:38].all()
    assert not close(mask, 3)[23:27, 20].any()
    np.testing.assert_array_equal(close(mask, 0), mask)


def test_region_touching_the_border_survives_close() -> None:
    mask = box_mask((32, 32), (0, 0, 10, 32))
    np.testing.assert_array_equal(close(mask, 5), mask)


def test_components_below_30_percent_of_the_foreground_are_dropped() -> None:
    mask = box_mask((64, 64), (0, 0, 10, 10))  # 100 px
    small = mask | box_mask((64, 64), (40, 40, 48, 45))  # + 40 px: 40/140 = 0.286 < 0.3
    kept = mask | box_mask((64, 64), (40, 40, 49, 45))  # + 45 px: 45/145 = 0.310 ≥ 0.3
    np.testing.assert_array_equal(remove_small_components(small, 0.3), mask)
    np.testing.assert_array_equal(remove_small_components(kept, 0.3), kept)
    np.testing.assert_array_equal(
        edit_mask(flat(), recoloured(recoloured(flat(), (0, 0, 10, 10)), (40, 40, 48, 45)), **FULL_RES),
        mask,
    )


def test_a_mask_below_a_thousandth_of_the_image_is_not_trusted() -> None:
    source = flat(100)
    tiny = edit_mask(source, recoloured(source, (50, 50, 53, 53)), close_kernel=0, vae_factor=1)  # 9 px
    small = edit_mask(source, recoloured(source, (50, 50, 54, 54)), close_kernel=0, vae_factor=1)  # 16 px
    assert tiny.all()
    np.testing.assert_array_equal(small, box_mask((100, 100), (50, 50, 54, 54)))


def test_vae_factor_8_max_pools_like_torch_and_drops_the_remainder() -> None:
    mask = np.zeros((20, 19), dtype=bool)
    mask[9, 17] = True  # inside the second row of cells, in the dropped last columns (16..18)
    mask[3, 3] = True
    pooled = pool_by_factor(mask, 8)
    assert pooled.shape == (2, 2)
    np.testing.assert_array_equal(pooled, [[True, False], [False, False]])
    source = flat(64)
    assert edit_mask(source, recoloured(source, BOX)).shape == (8, 8)


def test_the_pooled_mask_is_closed_again_except_on_tiny_grids() -> None:
    source = flat(256)
    edited = recoloured(recoloured(source, (64, 64, 96, 96)), (112, 64, 144, 96))  # two squares, 16 px apart
    pooled = edit_mask(source, edited)  # 32×32 cells: the 2-cell gap between the squares is closed
    assert pooled.shape == (32, 32) and pooled[9:11, 12:14].all()  # (the ellipse rounds the corners)
    assert not edit_mask(source, edited, close_kernel=0)[8:12, 12:14].any()
    tiny = edit_mask(source, recoloured(source, (0, 0, 64, 64)), grid=4)  # no close on a 4×4 grid
    np.testing.assert_array_equal(tiny, [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_identical_images_give_an_all_ones_mask() -> None:
    source = flat()
    assert edit_mask(source, source.copy()).all()
    assert region_weight(edit_mask(source, source.copy())) == 1.0


# -- the authors' code, transcribed: same masks and weights on varied pairs --------------------------------
def _uniworld_reference(source: Image.Image, edited: Image.Image) -> tuple[np.ndarray, float]:
    """get_weight_mask([source, edited]) for one reference image, as univa/utils/get_mask.py writes it."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("cv2")
    functional = torch.nn.functional

    mask = full_resolution_mask(source, edited)
    ratio = np.array(mask).astype(np.float32).sum() / np.prod(np.array(mask).shape)
    if ratio == 0:
        mask = Image.fromarray(np.full(np.array(mask).shape, 255, dtype=np.uint8))
    tensor = torch.from_numpy(np.array(mask.convert("L"), dtype=np.uint8)).float().div(255)[None, None]
    pooled = (functional.max_pool2d(tensor, kernel_size=8, stride=8)[0, 0] > 0).to(torch.uint8).mul(255).numpy()
    final = np.array(close_small_holes(Image.fromarray(pooled, mode="L").convert("1"), 5)) > 127
    weight = float(torch.round(torch.log2(torch.tensor(final.size / final.sum())) + 1, decimals=6))
    return final, weight


@pytest.mark.parametrize("seed", range(6))
def test_masks_and_weights_equal_the_authors_code(seed: int) -> None:
    rng = np.random.default_rng(seed)
    source = rng.integers(0, 256, size=(172, 190, 3), dtype=np.uint8)  # a 21×23 latent grid
    edited = source.copy()
    for _ in range(int(rng.integers(1, 4))):  # a few recoloured blocks of varied size
        top, left = rng.integers(0, 150), rng.integers(0, 160)
        height, width = rng.integers(3, 50), rng.integers(3, 50)
        edited[top : top + height, left : left + width] = rng.integers(0, 256, size=3)
    noise = rng.integers(0, 172, size=(300, 2))
    edited[noise[:, 0], noise[:, 1]] ^= 0x40  # scattered noise: some of it crosses the threshold
    src_image, edited_image = Image.fromarray(source), Image.fromarray(edited)
    expected_mask, expected_weight = _uniworld_reference(src_image, edited_image)
    mask = edit_mask(src_image, edited_image)
    np.testing.assert_array_equal(mask, expected_mask)
    assert region_weight(mask) == expected_weight
    np.testing.assert_array_equal(edit_mask(source, edited), expected_mask)  # arrays: the path without PIL


def test_array_difference_is_pils_grey_level_bit_for_bit() -> None:
    """RGB arrays skip PIL (cv2.absdiff and PIL's integer grey weights): the same mask at every threshold,
    including differences that round to exactly the threshold."""
    rng = np.random.default_rng(11)
    source = rng.integers(0, 256, size=(96, 80, 3), dtype=np.uint8)
    edited = rng.integers(0, 256, size=(96, 80, 3), dtype=np.uint8)
    edited[:8] = source[:8]  # some identical pixels
    for threshold in (0, 1, 17, 18, 19, 128, 254, 255, 256):
        via_pil = difference_mask(Image.fromarray(source), Image.fromarray(edited), threshold)
        np.testing.assert_array_equal(difference_mask(source, edited, threshold), via_pil)


# -- weights, grids, inputs ----------------------------------------------------------------------------------
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


def test_weights_are_rounded_to_six_decimals_as_the_authors_do() -> None:
    mask = np.zeros((7, 7), dtype=bool)
    mask[0, :3] = True  # x = 49 / 3
    assert region_weight(mask) == round(math.log2(49 / 3) + 1, 6)


def test_unknown_weight_function_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown weight function"):
        region_weight(np.ones((2, 2), dtype=bool), "cubic")  # type: ignore[arg-type]


def test_grid_max_pool_marks_every_cell_the_edit_touches() -> None:
    source = flat()
    mask = edit_mask(source, recoloured(source, BOX), close_kernel=0, grid=8)
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
    reference = edit_mask(source, edited, **FULL_RES)
    np.testing.assert_array_equal(reference, box_mask((64, 64), BOX))
    np.testing.assert_array_equal(edit_mask(as_png(source), as_png(edited), **FULL_RES), reference)
    np.testing.assert_array_equal(edit_mask(Image.fromarray(source), Image.fromarray(edited), **FULL_RES), reference)
    bigger = Image.fromarray(edited).resize((128, 128), Image.Resampling.NEAREST)
    resized = edit_mask(source, bigger, **FULL_RES)
    assert resized.shape == (64, 64) and resized[BOX[1] + 1 : BOX[3] - 1, BOX[0] + 1 : BOX[2] - 1].all()
    assert iou(resized, reference) >= 0.8  # bilinear resizing blurs the edges


def test_component_labels() -> None:
    mask = box_mask((16, 16), (0, 0, 3, 3)) | box_mask((16, 16), (3, 3, 5, 5)) | box_mask((16, 16), (10, 10, 12, 12))
    labels, count = label_components(mask)
    assert count == 2  # the diagonal touch joins the first two (8-connectivity)
    assert labels[0, 0] == labels[4, 4] != labels[11, 11]


def test_mask_png_round_trip() -> None:
    mask = box_mask((64, 64), BOX)
    np.testing.assert_array_equal(mask_from_image(mask_to_png(mask)), mask)
