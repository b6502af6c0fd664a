"""The cheaper per-record paths of issue 31 (second round) give what the code before them gave: the pixel gates'
reused planes and the algebra that replaced their temporaries, the PNG pixels OpenCV decodes, the token streams
kept per text, the prompts and pools parsed once per file version and the edit upload sent as one piece."""

from __future__ import annotations

import asyncio
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from tests.fakes.base import edited_png
from uniedit_synth.core.errors import ConfigError
from uniedit_synth.core.prompts import load_examples, load_prompt
from uniedit_synth.method import answers, masks, pixel_gates
from uniedit_synth.sources.scenes import ScenesSource

RNG = np.random.default_rng(3131)


# -- the gates: the formulas before this change, as the reference -------------------------------------------------
def reference_measure(source: np.ndarray, edited: np.ndarray, level: float = 25.0) -> pixel_gates.PixelMeasures:
    """pixel_gates.measure of two working-size uint8 arrays as it was computed before (fresh arrays for every
    step, np.abs(...).mean() for the matched blur, the difference of two blurs for the tone shift)."""
    import cv2

    def blur(array: np.ndarray, sigma: float) -> np.ndarray:
        return cv2.GaussianBlur(array, (0, 0), sigma) if sigma > 0 else array

    def gradient_of(array: np.ndarray) -> np.ndarray:
        dx = cv2.Sobel(array, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        dy = cv2.Sobel(array, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        return np.sqrt(dx * dx + dy * dy).max(axis=2)

    src, out = source.astype(np.float32), edited.astype(np.float32)
    matched = min((blur(src, b) for b in pixel_gates.MATCH_BLURS), key=lambda c: float(np.abs(c - out).mean()))
    low_src, low_out = blur(matched, pixel_gates.SIGMA), blur(out, pixel_gates.SIGMA)
    kernel = np.ones((3, 3), np.uint8)
    gradient = cv2.dilate(gradient_of(low_src), kernel)
    shared = np.minimum(gradient, cv2.dilate(gradient_of(low_out), kernel))
    local = np.abs(low_src - low_out).max(axis=2) - pixel_gates.EDGE_ALLOWANCE * shared
    tone = np.abs(blur(src, pixel_gates.SHIFT_SIGMA) - blur(out, pixel_gates.SHIFT_SIGMA))
    uniworld = masks.remove_small_components(
        masks.close(masks.difference_mask(source, edited, 18), 5), masks.UNIWORLD.min_component_frac
    )
    return pixel_gates.PixelMeasures(
        peak=float(local.max()),
        changed_share=float(uniworld.mean()),
        shift=float(np.percentile(tone.max(axis=2), pixel_gates.SHIFT_PERCENTILE)),
        spread=pixel_gates._cell_share(local, gradient, level),
        changed_px=int((local >= level).sum()),
    )


def pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Working-size pairs: offline-world scenes with an honest edit, a blurred and a shifted copy, and noise."""
    out = []
    for record in ScenesSource(count=4, image_size=256):
        source = np.asarray(Image.open(io.BytesIO(record.image)).convert("RGB"))
        edited = np.asarray(Image.open(io.BytesIO(edited_png(record.image))).convert("RGB"))
        soft = np.asarray(Image.fromarray(edited).resize((200, 200)).resize((256, 256), Image.Resampling.LANCZOS))
        shifted = np.clip(source.astype(np.int16) + 9, 0, 255).astype(np.uint8)
        out += [(source, edited), (source, soft), (source, shifted), (source, source)]
    for shape in ((256, 192, 3), (40, 64, 3)):
        a = RNG.integers(0, 256, shape, dtype=np.uint8)
        b = a.copy()
        b[5:20, 10:30] = 200
        out.append((a, b))
    return out


def test_measures_equal_the_formulas_they_replaced() -> None:
    for source, edited in pairs():
        view = pixel_gates.SourceView((source.shape[1], source.shape[0]), source)
        got = pixel_gates.measure(view, Image.fromarray(edited))
        want = reference_measure(source, edited)
        # every measure the same float, but the tone shift: one blur of the difference instead of the difference
        # of two blurs rounds differently (1e-4 of a grey level; the gate's limit is 6)
        assert (got.peak, got.changed_share, got.spread, got.changed_px) == (
            want.peak, want.changed_share, want.spread, want.changed_px,
        )
        assert got.shift == pytest.approx(want.shift, abs=1e-3)


def test_measures_from_many_threads_at_once_equal_one_at_a_time() -> None:
    work = pairs()
    views = [pixel_gates.SourceView((s.shape[1], s.shape[0]), s) for s, _ in work]
    alone = [pixel_gates.measure(v, Image.fromarray(e)) for v, (_, e) in zip(views, work, strict=True)]
    start = threading.Barrier(4)

    def run(index: int) -> pixel_gates.PixelMeasures:
        if index < 4:
            start.wait()  # four pairs in flight together: each must get its own planes
        return pixel_gates.measure(views[index], Image.fromarray(work[index][1]))

    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(run, range(len(work))))
    assert together == alone


def test_the_planes_are_reused_and_their_pool_stays_small() -> None:
    source, edited = pairs()[0]
    view = pixel_gates.SourceView((256, 256), source)
    pixel_gates.measure(view, Image.fromarray(edited))
    kept = [s for s in pixel_gates._SCRATCH if s.shape == source.shape]
    assert kept
    pixel_gates.measure(view, Image.fromarray(edited))
    assert [s for s in pixel_gates._SCRATCH if s.shape == source.shape][-1] is kept[-1]
    for side in range(20, 20 + 2 * pixel_gates._SCRATCH_KEPT):  # other working shapes
        small = RNG.integers(0, 256, (side, side, 3), dtype=np.uint8)
        pixel_gates.measure(pixel_gates.SourceView((side, side), small), Image.fromarray(small))
    assert len(pixel_gates._SCRATCH) <= pixel_gates._SCRATCH_KEPT


def test_channel_max_into_a_given_array() -> None:
    array = RNG.normal(0, 9, (17, 23, 3)).astype(np.float32)
    into = np.empty((17, 23), np.float32)
    assert masks.channel_max(array, out=into) is into and np.array_equal(into, array.max(axis=2))


# -- PNG pixels through OpenCV ------------------------------------------------------------------------------------
def png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def test_plain_png_pixels_are_pillows_pixels() -> None:
    for size in (64, 256, 333):
        for record in ScenesSource(count=2, image_size=size):
            for data in (record.image, edited_png(record.image), edited_png(record.image, 1, (size + 7, size // 2))):
                pixels = pixel_gates.plain_png_pixels(data)
                assert pixels is not None
                assert np.array_equal(pixels, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    noise = Image.fromarray(RNG.integers(0, 256, (31, 45, 3), dtype=np.uint8))
    for options in ({"dpi": (300, 300)}, {"optimize": True}, {"compress_level": 0}):
        data = png(noise, **options)
        assert np.array_equal(pixel_gates.plain_png_pixels(data), np.asarray(noise))


def test_other_images_are_left_to_pillow() -> None:
    rgb = Image.fromarray(RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    gamma = PngImagePlugin.PngInfo()
    gamma.add(b"gAMA", (45455).to_bytes(4, "big"))
    jpeg = io.BytesIO()
    rgb.save(jpeg, format="JPEG")
    for data in (
        png(rgb.convert("RGBA")), png(rgb.convert("P")), png(rgb.convert("L")), png(rgb, transparency=(0, 0, 0)),
        png(rgb, pnginfo=gamma), png(rgb, icc_profile=b"not really a profile"), jpeg.getvalue(), b"", b"\x89PNG",
    ):
        assert pixel_gates.plain_png_pixels(data) is None
    # and the gates measure such an image as before (Pillow decodes it)
    view = pixel_gates.source_view(png(rgb))
    assert pixel_gates.measure(view, png(rgb.convert("RGBA"))) == pixel_gates.measure(view, png(rgb))


# -- token streams ------------------------------------------------------------------------------------------------
def slow_fold(text: str) -> str:
    import unicodedata

    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')


def test_folding_and_token_streams_are_as_before_and_callers_get_their_own_lists() -> None:
    for text in ("If the Cube is RED, paint it blue.", "Café \u201cnaïve\u201d \u2018one\u2019", "twenty-one cubes"):
        assert answers._fold(text) == slow_fold(text)
    tokens = answers.canonical_tokens("If the cube is red, paint it twenty-one times.")
    assert tokens == ["if", "the", "cube", "is", "red", "|", "paint", "it", "n:21", "times", "|"]
    tokens.append("changed by a caller")
    assert answers.canonical_tokens("If the cube is red, paint it twenty-one times.")[-1] == "|"
    raw = answers._raw_tokens("Café, naïve.")
    raw.clear()
    assert answers._raw_tokens("Café, naïve.") == ["cafe", "|", "naive", "|"]
    assert answers.normalise_answer("The 21st") == answers.normalise_answer("twenty-first") == "21st"


# -- prompts and pools --------------------------------------------------------------------------------------------
def test_an_edited_prompt_or_pool_is_read_again_and_a_broken_one_still_says_where(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("system\n=== USER ===\nfirst $question\n")
    first = load_prompt(tmp_path, "p.txt")
    assert first.user == "first $question\n" and load_prompt(tmp_path, "p.txt") is first  # parsed once
    (tmp_path / "p.txt").write_text("system\n=== USER ===\nsecond $question\n")
    os.utime(tmp_path / "p.txt", (2_000_000_000, 2_000_000_000))  # a new version whatever the clock's grain
    again = load_prompt(tmp_path, "p.txt")
    assert again.user == "second $question\n" and again.sha != first.sha
    with pytest.raises(ConfigError, match="prompt template not found"):
        load_prompt(tmp_path, "missing.txt")
    with pytest.raises(ConfigError, match="prompt template not found"):
        load_prompt(tmp_path, ".")  # a folder is no template
    line = '{"question": "q", "answer": "a", "plan": "p", "instruction": "i"}\n'
    (tmp_path / "pool.jsonl").write_text(line)
    assert len(load_examples(tmp_path, "pool.jsonl").examples) == 1
    (tmp_path / "pool.jsonl").write_text(line + '{"question": "q"}\n')
    os.utime(tmp_path / "pool.jsonl", (2_000_000_001, 2_000_000_001))
    with pytest.raises(ConfigError, match=r"pool.jsonl:2: an example"):
        load_examples(tmp_path, "pool.jsonl")


# -- the edit upload ----------------------------------------------------------------------------------------------
def test_the_edit_clients_request_body_goes_as_one_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx2

    from uniedit_synth.backends.openai_backend import OpenAIEditor, OpenAIText, _read_body
    from uniedit_synth.core.config import BackendSpec

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    spec = BackendSpec(type="openai", model="gpt-image-1", base_url="http://127.0.0.1:9/v1")
    editor = OpenAIEditor(spec)._make_client()
    assert _read_body in editor._client.event_hooks["request"]
    assert _read_body not in OpenAIText(spec)._make_client()._client.event_hooks["request"]

    request = httpx2.Request(
        "POST", "http://127.0.0.1:9/v1/images/edits",
        data={"model": "gpt-image-1", "prompt": "paint it red"}, files={"image": ("image.png", b"\x89PNG" * 40000)},
    )
    whole = b"".join(request.stream)  # the form as httpx writes it, piece by piece

    async def pieces() -> list[bytes]:
        await _read_body(request)
        return [chunk async for chunk in request.stream]

    assert asyncio.run(pieces()) == [whole]
    assert int(request.headers["Content-Length"]) == len(whole)
