"""The cache pack file format: one final shard's cache entries (and its call index) in one file.

    [large entries back to back][zlib block: small entries back to back, then the call index lines]
    [footer: JSON][footer length: u64 little-endian][magic]

Large entries are the whole entries (header line + payload) whose payload is an image that no shard file holds
(an edit the pixel gates turned down); they are read with one seek. Small entries (text replies, and image
replies stored as a reference to the shard's parquet, run/cache.py) are JSON that compresses ~10× together and
not one by one, so they share one zlib block, inflated once per pack a process reads from.

The footer (magic UEPACK02): `{"v": 2, "entries": {key: [offset, length, whole, in_block]}, "block": [offset,
length], "calls": [offset, length]}`, where `whole` is the loose entry's length (the sweep compares it), offsets
of block entries and of the calls are into the inflated block. A UEPACK01 pack (every entry large, footer
`{key: [offset, length]}`) is still read.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"UEPACK02"
OLD_MAGIC = b"UEPACK01"
_TRAILER = struct.Struct("<Q")
_TAIL = _TRAILER.size + len(MAGIC)


@dataclass
class Slot:
    """Where one entry is: in the file (`in_block` False) or in the inflated block."""

    offset: int
    length: int
    whole: int
    in_block: bool = False


@dataclass
class PackIndex:
    entries: dict[str, Slot] = field(default_factory=dict)
    block: tuple[int, int] | None = None  # (offset, length) of the zlib block in the file
    calls: tuple[int, int] | None = None  # (offset, length) of the call index in the inflated block


def read_index(path: Path) -> PackIndex | None:
    """The footer of a pack, read from its end; None when the file is missing, torn or not a pack."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            if end < _TAIL:
                return None
            fh.seek(end - _TAIL)
            tail = fh.read()
            magic = tail[_TRAILER.size:]
            if magic not in (MAGIC, OLD_MAGIC):
                return None
            (length,) = _TRAILER.unpack(tail[:_TRAILER.size])
            if length > end - _TAIL:
                return None
            fh.seek(end - _TAIL - length)
            footer = json.loads(fh.read(length))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(footer, dict):
        return None
    try:
        if footer.get("v") != 2:  # UEPACK01: key -> [offset, length]
            return PackIndex({k: Slot(int(v[0]), int(v[1]), int(v[1])) for k, v in footer.items()})
        index = PackIndex({k: Slot(int(v[0]), int(v[1]), int(v[2]), bool(v[3]))
                           for k, v in dict(footer["entries"]).items()})
        if footer.get("block"):
            index.block = (int(footer["block"][0]), int(footer["block"][1]))
        if footer.get("calls"):
            index.calls = (int(footer["calls"][0]), int(footer["calls"][1]))
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return index


def read_block(path: Path, index: PackIndex) -> bytes | None:
    """The inflated block of a pack (b"" when it has none); None when it cannot be read."""
    if index.block is None:
        return b""
    try:
        with open(path, "rb") as fh:
            fh.seek(index.block[0])
            return zlib.decompress(fh.read(index.block[1]))
    except (OSError, zlib.error):
        return None


def read_large(path: Path, slot: Slot) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(slot.offset)
            return fh.read(slot.length)
    except OSError:
        return None


def read_entry(path: Path, slot: Slot, block: bytes) -> bytes | None:
    """One entry as stored: a slice of the inflated `block` (read_block), or read from the file."""
    return block[slot.offset: slot.offset + slot.length] if slot.in_block else read_large(path, slot)


def calls_of(index: PackIndex, block: bytes) -> bytes:
    """The call index lines the inflated `block` holds (b"" when the pack has none)."""
    return block[index.calls[0]: index.calls[0] + index.calls[1]] if index.calls else b""


def build(entries: dict[str, tuple[bytes, int]], calls: bytes = b"", small_below: int = 4096) -> bytes:
    """A pack's bytes from key → (stored blob, whole length), with the call index lines `calls`."""
    large: list[bytes] = []
    small: list[bytes] = []
    slots: dict[str, list[int]] = {}
    offset = small_offset = 0
    for key, (blob, whole) in entries.items():
        if len(blob) < small_below:
            slots[key] = [small_offset, len(blob), whole, 1]
            small.append(blob)
            small_offset += len(blob)
        else:
            slots[key] = [offset, len(blob), whole, 0]
            large.append(blob)
            offset += len(blob)
    footer: dict[str, object] = {"v": 2, "entries": slots}
    parts = large
    if small or calls:
        block = zlib.compress(b"".join(small) + calls, 6)
        footer["block"] = [offset, len(block)]
        if calls:
            footer["calls"] = [small_offset, len(calls)]
        parts = [*large, block]
    data = json.dumps(footer, separators=(",", ":")).encode()
    return b"".join(parts) + data + _TRAILER.pack(len(data)) + MAGIC
