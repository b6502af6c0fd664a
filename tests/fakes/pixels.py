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
import struct
import zlib

import numpy as np
from PIL import Image

#: the rectangle's colours; an input whose box centre already has the turn's colour gets the next one
COLOURS = ((230, 57, 70), (42, 157, 143), (233, 196, 106), (69, 123, 157))

#: PNG chunks before the image data that say nothing about pixel values (anything else: Pillow decodes it)
_PLAIN_CHUNKS = frozenset({b"pHYs", b"tEXt", b"zTXt", b"iTXt", b"tIME"})
_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def edited_png(image_bytes: bytes, index: int = 0, size: tuple[int, int] | None = None) -> bytes:
    """The input image with a coloured rectangle drawn on it, as PNG: a real, visibly edited image; at `size`
    (stretched, as an image model re-renders to its output canvas) when given."""
    pixels = _plain_png_pixels(image_bytes)
    rows = None  # the input's filtered scanlines, where the reply can reuse them
    if pixels is None:
        with Image.open(io.BytesIO(image_bytes)) as source:
            pixels = np.array(source.convert("RGB"))
    elif image_bytes[28] == 0 and (size is None or size == (pixels.shape[1], pixels.shape[0])):  # not interlaced
        rows = _scanlines(image_bytes, pixels.shape[1], pixels.shape[0])
        if rows is not None and len(set(rows[:: 1 + 3 * pixels.shape[1]])) < 2:
            rows = None  # one filter for every row (not an adaptive encoder): Pillow filters the whole reply
    height, width = pixels.shape[:2]
    if size is not None and (width, height) != size:
        pixels = np.array(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC))
        width, height = size
    # the middle quarter of each side: a local edit (1/16 of the picture), as the pixel gates expect of an honest
    # one; corners included, as ImageDraw.rectangle draws them
    left, top = width * 3 // 8, height * 3 // 8
    right, bottom = max(left + 1, width * 5 // 8), max(top + 1, height * 5 // 8)
    # an image this fake already edited (a chain's next turn) gets the next colour: still a visible edit
    if tuple(pixels[(top + bottom) // 2, (left + right) // 2]) == COLOURS[index % len(COLOURS)]:
        index += 1
    pixels[top : bottom + 1, left : right + 1] = COLOURS[index % len(COLOURS)]
    if rows is not None:
        rows = _refiltered(rows, pixels, top, min(bottom + 1, height - 1))
    return encode_png(pixels) if rows is None else _png(width, height, rows)


def encode_png(pixels: np.ndarray) -> bytes:
    """HxWx3 uint8 pixels as an 8-bit RGB PNG (IHDR, IDAT, IEND), the way an ordinary encoder writes one.

    Pillow's adaptive per-row filters, deflated with zlib's run-length strategy (Z_RLE, OpenCV's default for
    `cv2.imwrite` PNGs): a third of the deflate CPU of Pillow's default (level 6) and, unlike level 1, no
    cheaper for the client to decode: cv2.imdecode of these bytes takes as long as of Pillow's level-6 bytes or
    a little longer (256 px: 0.58 vs 0.43 ms; 1024 px: 8.7 vs 7.9 ms; level 1's would take 0.30 / 3.8 ms), so
    a benchmark's client-side decode cost stays representative."""
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG", compress_level=6, compress_type=zlib.Z_RLE)
    return out.getvalue()


def _png(width: int, height: int, rows: bytes) -> bytes:
    """An 8-bit RGB PNG of filtered scanlines `rows`, byte for byte as `encode_png` writes those rows."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    data = packer.compress(rows) + packer.flush()
    step = max(65536, width * 4)  # Pillow's ImageFile buffer: one IDAT chunk per buffer it writes
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))]
    chunks += [(b"IDAT", data[i : i + step]) for i in range(0, len(data), step)] + [(b"IEND", b"")]
    return _SIGNATURE + b"".join(
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)) for kind, body in chunks
    )


def _refiltered(rows: bytes, pixels: np.ndarray, first: int, last: int) -> bytes | None:
    """`rows` with rows first..last (the changed ones and the one below, whose Up/Avg/Paeth filters read them)
    filtered again from `pixels` by Pillow's encoder: the bytes Pillow writes for the whole image, when `rows`
    came from Pillow too, at a quarter of its filtering CPU. None if Pillow's band is not what was expected."""
    width = pixels.shape[1]
    stride = 1 + 3 * width
    above = 1 if first > 0 else 0  # the row above the band: what Pillow's filters for the band's first row read
    band = io.BytesIO()
    Image.fromarray(pixels[first - above : last + 1], "RGB").save(band, format="PNG", compress_level=0)
    filtered = _scanlines(band.getvalue(), width, last + 1 - first + above)
    if filtered is None:
        return None
    return b"".join((rows[: first * stride], filtered[above * stride :], rows[(last + 1) * stride :]))


def _scanlines(png: bytes, width: int, height: int) -> bytes | None:
    """The filtered scanlines (a filter-type byte, then the row's bytes) of a non-interlaced 8-bit RGB PNG of
    `width` x `height`: its IDAT chunks inflated; None when they are not that."""
    data, position = [], 8
    while position + 8 <= len(png):
        length = int.from_bytes(png[position : position + 4])
        kind = png[position + 4 : position + 8]
        if kind == b"IDAT":
            data.append(png[position + 8 : position + 8 + length])
        elif kind == b"IEND":
            break
        position += 12 + length
    try:
        rows = zlib.decompress(b"".join(data))
    except zlib.error:
        return None
    stride = 1 + 3 * width
    if len(rows) != height * stride or max(rows[::stride], default=5) > 4:
        return None
    return rows


def _plain_png_pixels(data: bytes) -> np.ndarray | None:
    """The HxWx3 RGB pixels (writable) of an 8-bit RGB PNG with no chunk before its data that changes how its
    pixels read (transparency, gamma, colour profile, significant bits), decoded by OpenCV: 4 ms instead of
    Pillow's 10 at 1024 px. None for any other image."""
    if data[:8] != _SIGNATURE or data[12:16] != b"IHDR" or data[24:26] != b"\x08\x02":
        return None
    if Image.MAX_IMAGE_PIXELS and int.from_bytes(data[16:20]) * int.from_bytes(data[20:24]) > Image.MAX_IMAGE_PIXELS:
        return None  # Pillow's decompression-bomb check decides
    position = 33  # after the signature and IHDR's 25 bytes (length, type, 13 bytes of data, CRC)
    while position + 8 <= len(data):
        kind = data[position + 4 : position + 8]
        if kind == b"IDAT":
            break
        if kind not in _PLAIN_CHUNKS:
            return None
        position += 12 + int.from_bytes(data[position : position + 4])
    else:
        return None
    import cv2  # only here: a fake that never sees a PNG does not pay for the import

    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:
        return None
    return pixels if pixels is not None and pixels.ndim == 3 else None
