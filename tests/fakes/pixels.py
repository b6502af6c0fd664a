"""The fakes' edited image: the input with a coloured rectangle drawn on it, as a PNG, made with as little CPU
as the same pixels allow.

Why: the fakes run on the same cores as the tool they serve (benchmarks/peers.py), and this reply was most of
their CPU (Pillow decode + convert + level-6 encode: ~2.6 ms at 256 px, ~30 ms at 1024), a cost a real provider
does not put on the client. The pixels must stay exactly what `ImageDraw.rectangle` on Pillow's decode gave
(tests and the pixel gates depend on them): tests/unit/test_fake_pixels.py checks them against that code.

Where the CPU went, and what replaces it:
- decode: OpenCV for a plain 8-bit RGB PNG (lossless: the very values Pillow gives, without Pillow's
  4-byte-per-pixel buffer and its copies), Pillow for anything else (JPEG decoders differ between builds);
- filtering: Pillow's adaptive filter choice reads a row and the one above only, so the rows the rectangle
  leaves alone (and their neighbours) keep the input's filtered bytes when the client's encoder filtered
  adaptively too; Pillow filters the changed band (a quarter of the rows);
- deflate: zlib's run-length strategy, see `encode_png` for why that keeps the client's decode cost.
"""

from __future__ import annotations

import io
import zlib

import cv2
import numpy as np
from PIL import Image

from uniedit_synth.core.png import SIGNATURE as _SIGNATURE
from uniedit_synth.core.png import rgb_png

#: the rectangle's colours; an input whose box centre already has the turn's colour gets the next one
COLOURS = ((230, 57, 70), (42, 157, 143), (233, 196, 106), (69, 123, 157))

#: PNG chunks before the image data that say nothing about pixel values (anything else: Pillow decodes it)
_PLAIN_CHUNKS = frozenset({b"pHYs", b"tEXt", b"zTXt", b"iTXt", b"tIME"})


def edited_png(image_bytes: bytes, index: int = 0, size: tuple[int, int] | None = None) -> bytes:
    """The input image with a coloured rectangle drawn on it, as PNG: a real, visibly edited image; at `size`
    (stretched, as an image model re-renders to its output canvas) when given."""
    if _plain_png(image_bytes):
        width, height = int.from_bytes(image_bytes[16:20]), int.from_bytes(image_bytes[20:24])
        if size in (None, (width, height)) and image_bytes[28] == 0:  # not interlaced: reuse its filtered rows
            spliced = _spliced(image_bytes, width, height, index)
            if spliced is not None:
                return spliced
        pixels = _opencv_pixels(image_bytes)
    else:
        pixels = None
    if pixels is None:
        with Image.open(io.BytesIO(image_bytes)) as source:
            pixels = np.array(source.convert("RGB"))
    height, width = pixels.shape[:2]
    if size is not None and (width, height) != size:
        pixels = np.array(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC))
        width, height = size
    _paint(pixels, _box(width, height), index)
    return encode_png(pixels)


def _box(width: int, height: int) -> tuple[int, int, int, int]:
    """The rectangle (left, top, right, bottom, corners included, as ImageDraw.rectangle draws them): the middle
    quarter of each side, a local edit (1/16 of the picture), as the pixel gates expect of an honest one."""
    left, top = width * 3 // 8, height * 3 // 8
    return left, top, max(left + 1, width * 5 // 8), max(top + 1, height * 5 // 8)


def _paint(pixels: np.ndarray, box: tuple[int, int, int, int], index: int, first_row: int = 0) -> None:
    """Fill `box` in `pixels` (the image's rows from `first_row` on) with the turn's colour, or the next one
    where the box's centre already has it (a chain's next turn on this fake's own edit: still a visible edit)."""
    left, top, right, bottom = box
    if tuple(pixels[(top + bottom) // 2 - first_row, (left + right) // 2]) == COLOURS[index % len(COLOURS)]:
        index += 1
    pixels[top - first_row : bottom + 1 - first_row, left : right + 1] = COLOURS[index % len(COLOURS)]


def _spliced(png: bytes, width: int, height: int, index: int) -> bytes | None:
    """The edited PNG of a plain non-interlaced input whose encoder chose filters row by row: its filtered rows
    kept outside the band the rectangle changes (plus the row below it, whose Up/Avg/Paeth filters read the
    band), the band decoded, painted and filtered again by Pillow. Pillow's filter choice reads a row and the
    one above only, so for a Pillow-made input these are the very filtered rows `encode_png` writes for the
    whole edited image, for a quarter of its filtering and none of a full decode. None where that does not
    apply."""
    rows = _scanlines(png, width, height)
    stride = 1 + 3 * width
    if rows is None or len(set(rows[::stride])) < 2:
        return None  # one filter for every row (not an adaptive encoder): Pillow filters the whole reply
    box = _box(width, height)
    first, last = box[1], min(box[3] + 1, height - 1)
    above = 1 if first > 0 else 0  # the row above the band: what the filters of the band's first row read
    # decode from the nearest row at or above it that reads no row above (filter None or Sub)
    start = next((r for r in range(first - above, 0, -1) if rows[r * stride] <= 1), 0)
    view = memoryview(rows)  # slices without copies
    band = _opencv_pixels(_png(width, last + 1 - start, [view[start * stride : (last + 1) * stride]], level=0))
    if band is None:
        return None
    band = band[first - above - start :]
    _paint(band, box, index, first - above)
    refiltered = io.BytesIO()
    Image.fromarray(band, "RGB").save(refiltered, format="PNG", compress_level=0)
    filtered = _scanlines(refiltered.getvalue(), width, len(band))
    if filtered is None:
        return None
    return _png(width, height, [view[: first * stride], memoryview(filtered)[above * stride :], view[(last + 1) * stride :]])


def encode_png(pixels: np.ndarray) -> bytes:
    """HxWx3 uint8 pixels as an 8-bit RGB PNG (IHDR, IDAT, IEND), the way an ordinary encoder writes one.

    The choice: Pillow's adaptive per-row filters (as before), deflated with zlib's run-length strategy (Z_RLE,
    what `cv2.imwrite` uses for PNGs by default): a third of the deflate CPU of Pillow's default (level 6), and,
    unlike level 1, no cheaper for the client to decode, so a benchmark's client-side decode cost stays
    representative. cv2.imdecode (uniedit's decoder for plain PNGs) of the edits of one `openai` run's uploads,
    CPU per image: 256 px: level 6 0.46 ms, these bytes 0.60 ms (1.3x), level 1 0.35 ms (0.75x); 1024 px:
    level 6 7.8 ms, these bytes 8.7 ms (1.1x), level 1 3.6 ms (0.46x)."""
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG", compress_level=6, compress_type=zlib.Z_RLE)
    return out.getvalue()


def _png(width: int, height: int, rows: list[memoryview], level: int = 6) -> bytes:
    """An 8-bit RGB PNG of the filtered scanlines `rows` (in pieces), with encode_png's zlib settings and IDAT
    chunk size (the deflate blocks may still differ, as zlib's block choice depends on how input is fed to it);
    level 0: stored, for a decode of the band only."""
    packer = zlib.compressobj(level, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    data = b"".join([packer.compress(piece) for piece in rows] + [packer.flush()])
    # Pillow's ImageFile buffer: one IDAT chunk per buffer it writes
    return rgb_png(width, height, data, chunk_size=max(65536, width * 4))


def _scanlines(png: bytes, width: int, height: int) -> bytes | None:
    """The filtered scanlines (a filter-type byte, then the row's bytes) of a non-interlaced 8-bit RGB PNG of
    `width` x `height`: its IDAT chunks inflated; None when they are not that."""
    data, position, view = [], 8, memoryview(png)
    while position + 8 <= len(png):
        length = int.from_bytes(png[position : position + 4])
        kind = png[position + 4 : position + 8]
        if kind == b"IDAT":
            data.append(view[position + 8 : position + 8 + length])
        elif kind == b"IEND":
            break
        position += 12 + length
    stride = 1 + 3 * width
    try:  # into a buffer of the expected size: no growing and joining of blocks (a third of the time)
        rows = zlib.decompress(data[0] if len(data) == 1 else b"".join(data), 15, height * stride)
    except zlib.error:
        return None
    if len(rows) != height * stride or max(rows[::stride], default=5) > 4:
        return None
    return rows


def _plain_png(data: bytes) -> bool:
    """Whether `data` is an 8-bit RGB PNG with no chunk before its data that changes how its pixels read
    (transparency, gamma, colour profile, significant bits): OpenCV reads it to Pillow's very values (PNG is
    lossless), without Pillow's 4-byte-per-pixel buffer and its copies (4 ms instead of 10 at 1024 px)."""
    if data[:8] != _SIGNATURE or data[12:16] != b"IHDR" or data[24:26] != b"\x08\x02":
        return False
    if Image.MAX_IMAGE_PIXELS and int.from_bytes(data[16:20]) * int.from_bytes(data[20:24]) > Image.MAX_IMAGE_PIXELS:
        return False  # Pillow's decompression-bomb check decides
    position = 33  # after the signature and IHDR's 25 bytes (length, type, 13 bytes of data, CRC)
    while position + 8 <= len(data):
        kind = data[position + 4 : position + 8]
        if kind == b"IDAT":
            return True
        if kind not in _PLAIN_CHUNKS:
            return False
        position += 12 + int.from_bytes(data[position : position + 4])
    return False


def _opencv_pixels(png: bytes) -> np.ndarray | None:
    """A plain PNG's HxWx3 RGB pixels (writable), decoded by OpenCV; None where it cannot."""
    try:
        pixels = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:
        return None
    return pixels if pixels is not None and pixels.ndim == 3 else None
