"""The pixel gates' shortcuts give what the full computations give: the matched-blur search that stops at its
minimum picks the blur the search over every MATCH_BLURS picks, the percentile from a bracketing sample is
np.percentile's, the UniWorld area counted without its mask is the mask's, the channel maximum through split
planes is numpy's (method/pixel_gates.py, method/masks.py)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from tests.fakes import real_edits
from tests.fakes.base import edited_png
from uniedit_synth.method import masks, pixel_gates
from uniedit_synth.sources.scenes import ScenesSource

RNG = np.random.default_rng(3107)


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def full_search(source: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """The matched blur as the search over every MATCH_BLURS finds it (the least mean difference, the first of
    equals): the reference of pixel_gates.match_blur."""
    candidates = [cv2.GaussianBlur(source, (0, 0), s) if s > 0 else source for s in pixel_gates.MATCH_BLURS]
    errors = [float(np.abs(c.astype(np.float64) - edited).mean()) for c in candidates]
    return candidates[errors.index(min(errors))]


def edit_variants(picture: Image.Image, edited: Image.Image) -> list[Image.Image]:
    """The edit as editors return it: exact, blurred from barely to more than the largest MATCH_BLURS,
    resampled, re-encoded, re-rendered at an editor's size; and the source itself, blurred and re-encoded."""
    size = picture.size
    out = [edited, picture]
    out += [edited.filter(ImageFilter.GaussianBlur(r)) for r in (0.2, 0.4, 0.6, 0.8, 1.0, 1.3, 1.7, 2.5)]
    for factor in (0.4, 0.5, 0.75, 0.9):
        small = edited.resize((max(1, round(size[0] * factor)), max(1, round(size[1] * factor))))
        out.append(small.resize(size, Image.Resampling.LANCZOS))
    out += [real_edits.jpeg_round_trip(edited, q) for q in (95, 75, 40)]
    out.append(real_edits.rerender(edited, (1024, 1024)).resize(size, Image.Resampling.LANCZOS))
    out.append(real_edits.drift(edited))
    out.append(real_edits.colour_cast(edited).filter(ImageFilter.GaussianBlur(0.7)))
    out.append(real_edits.jpeg_round_trip(picture.filter(ImageFilter.GaussianBlur(0.9)), 85))
    return out


def pictures() -> list[Image.Image]:
    out = [decoded(r.image) for r in ScenesSource(count=6, image_size=256)]
    out += [decoded(r.image).resize((192, 256)) for r in ScenesSource(count=2, seed=5, image_size=512)]
    noise = Image.fromarray(RNG.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    smooth = noise.resize((16, 12)).resize((200, 150), Image.Resampling.BICUBIC)
    flat = Image.new("RGB", (64, 48), (120, 130, 140))
    return [*out, noise, smooth, flat]


def test_the_early_stopped_search_picks_the_full_searchs_blur() -> None:
    cases = 0
    for picture in pictures():
        edited = decoded(edited_png(png_of(picture)))
        source = np.asarray(picture, dtype=np.float32)
        for variant in edit_variants(picture, edited):
            out = np.asarray(variant, dtype=np.float32)
            spare, kept = np.empty_like(source), np.empty_like(source)
            got = pixel_gates.match_blur(source, out, spare, kept)
            assert np.array_equal(got, full_search(source, out))
            cases += 1
    assert cases > 200


def test_the_search_stops_early_on_an_unblurred_edit() -> None:
    """An exact edit's best is the unblurred source: one blur tried, not four (the search is lazy)."""
    tried: list[float] = []
    original = pixel_gates._blur

    def counting(array: np.ndarray, sigma: float, into: np.ndarray) -> np.ndarray:
        tried.append(sigma)
        return original(array, sigma, into)

    picture = decoded(next(iter(ScenesSource(count=1))).image)
    source = np.asarray(picture, dtype=np.float32)
    out = np.asarray(decoded(edited_png(png_of(picture))), dtype=np.float32)
    pixel_gates._blur, saved = counting, pixel_gates._blur
    try:
        got = pixel_gates.match_blur(source, out, np.empty_like(source), np.empty_like(source))
    finally:
        pixel_gates._blur = saved
    assert got is source
    assert tried == list(pixel_gates.MATCH_BLURS[:2])


def png_of(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def tone_maps() -> list[np.ndarray]:
    smooth = np.abs(cv2.GaussianBlur(RNG.normal(0, 5, (256, 256)).astype(np.float32), (0, 0), 3.0))
    skewed = (RNG.random((171, 256)) ** 4).astype(np.float32)
    edge = np.zeros((256, 256), np.float32)
    edge[:, 200:] = 40.0  # a step: the bracket sits on one value
    return [
        smooth,
        skewed,
        edge,
        np.zeros((256, 256), np.float32),
        RNG.integers(0, 3, (256, 256)).astype(np.float32),
        RNG.random((1, 9000)).astype(np.float32),
        RNG.random((7, 5)).astype(np.float32),
        np.array([[3.5]], np.float32),
    ]


@pytest.mark.parametrize("q", [0, 1, 25, 50, 62.5, 99.9, 100])
def test_the_percentile_is_numpys(q: float) -> None:
    for values in tone_maps():
        assert pixel_gates._percentile(values, q) == float(np.percentile(values, q))


def test_the_percentile_falls_back_when_the_sample_misses() -> None:
    """A map whose sample sees none of its low values (they sit between the sampled positions): the bracket
    misses the rank and the whole map is partitioned, with the same result."""
    values = np.full(65536, 50.0, np.float32)
    sampled = np.arange(0, values.size, pixel_gates._stride(values.size, 256))
    hidden = np.setdiff1d(np.arange(values.size), sampled)[:20000]
    values[hidden] = RNG.random(hidden.size).astype(np.float32)
    assert pixel_gates._percentile(values.reshape(256, 256), 25) == float(np.percentile(values, 25))


def test_the_sample_strides_across_the_columns() -> None:
    """Every column of a 256-wide map is sampled (a stride of 64 would see four of them: a biased bracket)."""
    stride = pixel_gates._stride(256 * 256, 256)
    assert len({(i * stride) % 256 for i in range(256 * 256 // stride)}) == 256


def reference_area(source: np.ndarray, edited: np.ndarray, params: masks.MaskParams) -> int:
    mask = masks.difference_mask(source, edited, params.threshold)
    mask = masks.close(mask, params.close_kernel)
    return int(masks.remove_small_components(mask, params.min_component_frac).sum())


def test_changed_area_counts_the_uniworld_mask() -> None:
    pairs = []
    for record in ScenesSource(count=3, image_size=256):
        source = np.asarray(decoded(record.image))
        edited = np.asarray(decoded(edited_png(record.image)))
        pairs += [(source, edited), (source, source)]
        specks = decoded(record.image)
        draw = ImageDraw.Draw(specks)
        for x in range(10, 250, 37):  # one large region and many small pieces (dropped by the 0.3 rule)
            draw.rectangle((x, 5, x + 1 + x % 3, 7), fill=(0, 0, 0))
        draw.rectangle((60, 60, 160, 160), fill=(255, 0, 0))
        pairs.append((source, np.asarray(specks)))
    for shape in ((40, 64, 3), (300, 7, 3)):
        a = RNG.integers(0, 256, shape, dtype=np.uint8)
        pairs.append((a, RNG.integers(0, 256, shape, dtype=np.uint8)))
        pairs.append((a, np.clip(a.astype(np.int16) + RNG.integers(-30, 30, shape), 0, 255).astype(np.uint8)))
    kinds = [
        masks.UNIWORLD,
        masks.MaskParams(close_kernel=0),
        masks.MaskParams(min_component_frac=0.0),
        masks.MaskParams(threshold=40, close_kernel=3, min_component_frac=0.6),
    ]
    for source, edited in pairs:
        for params in kinds:
            assert masks.changed_area(source, edited, params) == reference_area(source, edited, params)


def test_channel_max_through_planes_is_numpys() -> None:
    array = RNG.normal(0, 9, (37, 23, 3)).astype(np.float32)
    scratch = pixel_gates._Scratch(array.shape)
    into = np.empty(array.shape[:2], np.float32)
    assert pixel_gates._channel_max(array, scratch, into) is into
    assert np.array_equal(into, array.max(axis=2))


def test_png_size_reads_the_header_and_refuses_what_it_cannot_read() -> None:
    import io as _io

    from PIL import Image as _Image

    from uniedit_synth.core.png import png_size
    from uniedit_synth.stages.edit import image_size

    def encoded(fmt: str) -> bytes:
        out = _io.BytesIO()
        _Image.new("RGB", (37, 21), (9, 8, 7)).save(out, format=fmt)
        return out.getvalue()

    png, jpeg = encoded("PNG"), encoded("JPEG")
    assert png_size(png) == (37, 21) == image_size(png)
    assert png_size(jpeg) is None and image_size(jpeg) == (37, 21)  # Pillow reads what is not a PNG
    cut = png[:20]  # signature and IHDR's type, the sides cut off
    assert png_size(cut) is None and image_size(cut) is None  # was struct.error in the edit stage
    zero = png[:16] + (0).to_bytes(4, "big") + png[20:]
    assert png_size(zero) is None
