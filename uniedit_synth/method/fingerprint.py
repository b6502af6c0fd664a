"""Image and text fingerprints for dedup and decontamination: a candidate hash, a verify signature, n-grams.

An image gets three things, computed once from one decode:

* `phash` — imagehash's 64-bit DCT perceptual hash: the *candidate* stage (indexed, searched by Hamming
  distance). It is not enough alone: distinct offline-world scenes can be 2 bits apart, while a re-encoded
  copy (JPEG q85, resized to 90 %) is 0–2 apart.
* `detail` — the 256-bit pHash (hash_size 16): the *verify* stage, within VERIFY_DETAIL_BITS (28). Measured:
  re-encoded copies of offline-world scenes (256 px) are at most 4 bits apart, of 128-px synthetic photos at
  most 20 and of 64-px ones 30 (99 % within 24); the closest distinct scenes among 1,200 are 38 bits apart.
* `colour` — the mean RGB of a 4 × 4 grid: pHash sees luminance only, so a recolour of equal luminance
  would otherwise pass as a copy.

Together they take 88 bytes per image; nothing keeps image pixels.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import imagehash
import numpy as np
from PIL import Image

from .answers import normalise_text

#: candidate stage: 64-bit pHash within this many bits
DEFAULT_MAX_DISTANCE = 4
#: verify stage: 256-bit pHash within this many bits, and no 4x4-grid colour mean further apart than this
VERIFY_DETAIL_BITS = 28
VERIFY_COLOUR_DELTA = 16
SHINGLE_WORDS = 3



class ImageUnreadable(ValueError):
    """The bytes are not an image PIL can decode."""


@dataclass(frozen=True)
class ImageFingerprint:
    phash: int  # 64-bit candidate hash (unsigned)
    detail: bytes  # 256-bit verify hash, 32 bytes
    colour: bytes  # 4x4 RGB means, 48 bytes

    def to_hex(self) -> str:
        return f"{self.phash:016x}{self.detail.hex()}{self.colour.hex()}"

    @classmethod
    def from_hex(cls, text: str) -> ImageFingerprint:
        return cls(int(text[:16], 16), bytes.fromhex(text[16:80]), bytes.fromhex(text[80:176]))


def _bits(hash_: imagehash.ImageHash) -> bytes:
    return np.packbits(hash_.hash.flatten()).tobytes()


def fingerprint_image(
    image: bytes | Image.Image | np.ndarray, max_pixels: int | None = None
) -> ImageFingerprint:
    """The fingerprint of an image given as encoded bytes, a PIL image or its HxWx3 uint8 RGB pixels;
    ImageUnreadable if undecodable, or (read from its header, before it is decoded) larger than `max_pixels`."""
    try:
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if isinstance(image, (bytes, bytearray, memoryview)):
            opened = Image.open(io.BytesIO(bytes(image)))
            _within(opened.size, max_pixels)
            opened.draft("RGB", (128, 128))  # JPEG: decode at reduced size, far cheaper
            image = opened
        else:
            _within(image.size, max_pixels)
        rgb = image.convert("RGB")
    except ImageUnreadable:
        raise
    except Exception as exc:  # PIL raises many types for bad data
        raise ImageUnreadable(f"not a readable image ({type(exc).__name__})") from None
    small = rgb.resize((64, 64), Image.Resampling.BOX)
    grey = small.convert("L")
    coarse = imagehash.phash(grey, hash_size=8)
    fine = imagehash.phash(grey, hash_size=16)
    colour = np.asarray(small.resize((4, 4), Image.Resampling.BOX), dtype=np.uint8).tobytes()
    return ImageFingerprint(int.from_bytes(_bits(coarse), "big"), _bits(fine), colour)


def _within(size: tuple[int, int], max_pixels: int | None) -> None:
    if max_pixels is not None and size[0] * size[1] > max_pixels:
        raise ImageUnreadable(f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, over input.max_pixels "
                              f"({max_pixels:,}); not decoded")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def detail_distance(a: bytes, b: bytes) -> int:
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def colour_delta(a: bytes, b: bytes) -> int:
    return int(np.abs(np.frombuffer(a, np.uint8).astype(np.int16) - np.frombuffer(b, np.uint8)).max())


def same_image(a: ImageFingerprint, b: ImageFingerprint) -> bool:
    """The verify stage: are two candidate images (near-)identical copies?"""
    return (
        detail_distance(a.detail, b.detail) <= VERIFY_DETAIL_BITS
        and colour_delta(a.colour, b.colour) <= VERIFY_COLOUR_DELTA
    )


def text_key(text: str) -> int:
    """A 64-bit key of the normalised text (same question in another case or punctuation → same key)."""
    return int.from_bytes(hashlib.blake2b(normalise_text(text).encode(), digest_size=8).digest(), "big")


def shingles(text: str, n: int = SHINGLE_WORDS) -> set[str]:
    """Word n-grams of the normalised text (a text shorter than n words is one shingle)."""
    return word_shingles(normalise_text(text).split(), n)


def word_shingles(words: list[str], n: int = SHINGLE_WORDS) -> set[str]:
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


@dataclass
class Benchmark:
    """A benchmark's fingerprints: per item its key, image fingerprint (or None) and text."""

    name: str
    spec: str
    content_key: str
    keys: list[str] = field(default_factory=list)
    images: list[ImageFingerprint | None] = field(default_factory=list)
    texts: list[str | None] = field(default_factory=list)
    skipped_images: int = 0
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.keys)
