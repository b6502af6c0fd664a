"""The fakes' edited image (tests/fakes/pixels.py) has exactly the pixels of the Pillow code it replaced (kept
here as the reference) for every kind of input, and comes back as a plain, adaptively filtered 8-bit RGB PNG."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw, PngImagePlugin

from tests.fakes import pixels
from tests.fakes.base import edited_png
from uniedit_synth.sources.scenes import ScenesSource

RNG = np.random.default_rng(3131)


def reference_edited_png(image_bytes: bytes, index: int = 0, size: tuple[int, int] | None = None) -> bytes:
    """edited_png as it was before issue 31's rewrite (Pillow decode, ImageDraw, Pillow's default PNG)."""
    with Image.open(io.BytesIO(image_bytes)) as source:
        image = source.convert("RGB")
    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    width, height = image.size
    colours = [(230, 57, 70), (42, 157, 143), (233, 196, 106), (69, 123, 157)]
    draw = ImageDraw.Draw(image)
    box = (
        width * 3 // 8,
        height * 3 // 8,
        max(width * 3 // 8 + 1, width * 5 // 8),
        max(height * 3 // 8 + 1, height * 5 // 8),
    )
    if image.getpixel(((box[0] + box[2]) // 2, (box[1] + box[3]) // 2)) == colours[index % len(colours)]:
        index += 1
    draw.rectangle(box, fill=colours[index % len(colours)])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out, position = [], 8
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        out.append((png[position + 4 : position + 8], png[position + 8 : position + 8 + length]))
        position += 12 + length
    return out


def noise(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Random pixels, the same for the same size whichever test asks first."""
    image = Image.fromarray(np.random.default_rng([width, height]).integers(0, 256, (height, width, 3), dtype=np.uint8))
    return image if mode == "RGB" else image.convert(mode)


def inputs() -> list[tuple[str, bytes]]:
    out = [(f"scene{size}-{i}", r.image) for size in (64, 256, 333) for i, r in enumerate(ScenesSource(count=2, image_size=size))]
    out += [(f"noise{w}x{h}", encoded(noise(w, h))) for w, h in ((1, 1), (2, 3), (3, 2), (7, 5), (8, 8), (31, 45), (100, 37))]
    base = noise(40, 30)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.fromarray(RNG.integers(0, 256, (30, 40), dtype=np.uint8)))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a text chunk")
    gamma = PngImagePlugin.PngInfo()
    gamma.add(b"gAMA", struct.pack(">I", 100000))  # a gamma the decoders must not apply
    out += [
        ("rgba", encoded(rgba)),
        ("palette", encoded(base.quantize(17))),
        ("palette-transparent", encoded(base.quantize(5), transparency=2)),
        ("gray", encoded(base.convert("L"))),
        ("gray-alpha", encoded(base.convert("LA"))),
        ("rgb16", encoded(Image.fromarray(RNG.integers(0, 65536, (30, 40), dtype=np.uint16)))),
        ("rgb-transparent", encoded(base, transparency=(1, 2, 3))),
        ("rgb-text-dpi", encoded(base, pnginfo=info, dpi=(300, 300))),
        ("rgb-gamma", encoded(base, pnginfo=gamma)),
        ("rgb-icc", encoded(base, icc_profile=b"\x00" * 128)),
        ("rgb-level0", encoded(base, compress_level=0)),
        ("rgb-two-idat-chunks", encoded(noise(200, 120), compress_level=0)),  # Pillow writes 64 KiB per IDAT
        ("interlaced", encoded(noise(33, 21), interlace=1) if _pillow_interlaces() else encoded(noise(33, 21))),
        ("jpeg", encoded(noise(48, 40), "JPEG", quality=80)),
        ("jpeg-gray", encoded(noise(48, 40, "L"), "JPEG")),
        ("jpeg-cmyk", encoded(noise(24, 16, "CMYK"), "JPEG")),
        ("webp", encoded(noise(24, 16), "WEBP", lossless=True)),
        ("bmp", encoded(noise(24, 16), "BMP")),
    ]
    return out


def _pillow_interlaces() -> bool:
    try:
        encoded(noise(4, 4), interlace=1)
    except Exception:  # noqa: BLE001 - an older Pillow cannot write Adam7: the case is then a plain PNG
        return False
    return True


@pytest.mark.parametrize(("name", "data"), inputs(), ids=lambda value: value if isinstance(value, str) else "")
def test_edited_pixels_are_the_reference_pixels(name: str, data: bytes) -> None:
    for index in (0, 1, 3):
        assert np.array_equal(rgb(edited_png(data, index)), rgb(reference_edited_png(data, index))), (name, index)
    for size in ((64, 48), (5, 9)):
        assert np.array_equal(rgb(edited_png(data, 2, size)), rgb(reference_edited_png(data, 2, size))), (name, size)


def test_a_chain_of_edits_changes_colour_each_turn_as_before() -> None:
    ours = reference = ScenesSource(count=1, image_size=96).record(0).image
    assert ours is not None
    for turn in range(5):
        ours, reference = edited_png(ours), reference_edited_png(reference)
        assert np.array_equal(rgb(ours), rgb(reference)), turn
    # the rectangle's own colour at the box centre: the next colour, so every turn is a visible edit
    assert tuple(rgb(edited_png(ours))[48, 48]) != tuple(rgb(ours)[48, 48])


def test_every_small_geometry_matches_the_reference() -> None:
    for width in range(1, 19):
        for height in range(1, 19):
            data = encoded(noise(width, height))
            assert np.array_equal(rgb(edited_png(data)), rgb(reference_edited_png(data))), (width, height)


def test_the_reply_is_a_plain_adaptively_filtered_8bit_rgb_png() -> None:
    source = ScenesSource(count=1, image_size=256).record(0).image
    assert source is not None
    png = edited_png(source)
    parts = chunks(png)
    assert [kind for kind, _ in parts] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", parts[0][1])
    assert (width, height, depth, colour, interlace) == (256, 256, 8, 2, 0)
    rows = zlib.decompress(b"".join(data for kind, data in parts if kind == b"IDAT"))
    filters = set(rows[:: 1 + 3 * width])
    assert len(filters) >= 2 and filters <= {0, 1, 2, 3, 4}  # adaptive: not one filter for every row
    # the same per-row filters Pillow's default encoder picks; only the deflate strategy differs
    reference = chunks(reference_edited_png(source))
    assert rows == zlib.decompress(b"".join(data for kind, data in reference if kind == b"IDAT"))


def test_an_undecodable_upload_still_raises() -> None:
    for data in (b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, encoded(noise(20, 20))[:60]):
        with pytest.raises(Exception):  # noqa: B017, PT011 - the servers turn any failure into a 400
            edited_png(data)


def test_opencv_decodes_only_plain_rgb_pngs() -> None:
    base = noise(12, 10)
    assert pixels._plain_png(encoded(base))
    assert pixels._plain_png(encoded(base, dpi=(72, 72)))
    for other in (encoded(base, transparency=(1, 2, 3)), encoded(base.convert("RGBA")), encoded(base, "JPEG"),
                  encoded(base.quantize(8)), encoded(base, icc_profile=b"\x00" * 128)):
        assert not pixels._plain_png(other)


def scanlines(png: bytes) -> bytes:
    return zlib.decompress(b"".join(data for kind, data in chunks(png) if kind == b"IDAT"))


def test_a_pillow_png_gets_the_filtered_rows_pillow_writes_for_the_edited_pixels() -> None:
    """The reply reuses the input's filtered rows outside the rectangle's band: for a Pillow-made input (the
    client's encoder), those are the rows Pillow's encoder writes for the whole edited image (for a compressible
    image, such as every scene, the very same bytes)."""
    scenes = [r.image for size in (64, 256, 301) for r in ScenesSource(count=2, image_size=size)]
    cases = scenes + [encoded(noise(w, h), compress_level=level)
                      for w, h, level in ((1, 1, 6), (3, 2, 1), (17, 29, 9), (64, 9, 3), (200, 120, 0))]
    for data in cases:
        assert data is not None
        for index in (0, 2):
            reply = edited_png(data, index)
            expected = pixels.encode_png(np.array(rgb(reference_edited_png(data, index))))
            assert chunks(reply)[0] == chunks(expected)[0]  # IHDR
            assert scanlines(reply) == scanlines(expected)
            assert reply == expected or data not in scenes


def test_an_input_filtered_one_way_gets_pillows_adaptive_filters() -> None:
    import cv2

    source = rgb(ScenesSource(count=1, image_size=128).record(0).image or b"")
    data = cv2.imencode(".png", source[:, :, ::-1], [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB])[1].tobytes()
    assert set(scanlines(data)[:: 1 + 3 * 128]) == {1}  # every row Sub-filtered
    reply = edited_png(data)
    assert reply == pixels.encode_png(np.array(rgb(reference_edited_png(data))))
    assert len(set(scanlines(reply)[:: 1 + 3 * 128])) >= 2
