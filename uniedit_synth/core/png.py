"""The PNG container: its header read without opening the image (png_size), and written around image data that
is already filtered and deflated (rgb_png: signature, IHDR, IDAT, IEND).

The writer is for an encoder that picks its own deflater (offline/render.py: ISA-L, several times faster than
zlib at the same size): libpng and Pillow deflate with the zlib they were built with, and that is most of their
encoding time."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, what Pillow reads too, without opening the image; None for anything
    else (another format, a header cut short, a zero side)."""
    if len(data) < 24 or data[:8] != SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return (width, height) if width and height else None


def rgb_png(width: int, height: int, idat: bytes | Sequence[bytes | memoryview], chunk_size: int = 0) -> bytes:
    """An 8-bit RGB, non-interlaced PNG whose image data is the zlib stream `idat` (one piece, or pieces in
    order), in IDAT chunks of `chunk_size` bytes (0: one chunk)."""
    data = idat if isinstance(idat, bytes) else b"".join(idat)
    view = memoryview(data)
    step = chunk_size or max(1, len(data))
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))]
    chunks += [(b"IDAT", view[i : i + step]) for i in range(0, len(data), step)] + [(b"IEND", b"")]
    out: list[bytes | memoryview] = [SIGNATURE]
    for kind, body in chunks:
        out += (struct.pack(">I", len(body)), kind, body, struct.pack(">I", zlib.crc32(body, zlib.crc32(kind))))
    return b"".join(out)
