"""Pixel gates: whether an edited image is a no-op or an over-edit of its source, measured before a judge is paid.

Both images are compared in the source's geometry (the edited one resized to the source's size), at a working
resolution of ``WORK_SIDE`` pixels on the long side (the figures below are in that scale, whatever the source's
size). The measures:

* **local change** ``peak``: the largest per-channel difference of the two images after a Gaussian low-pass
  (sigma ``SIGMA`` px), the source first blurred as much as the edited image looks blurred, less an allowance
  along the edges both images keep (``local_change``). Re-encoding and mild resampling or blur move values along
  kept edges; an edit draws, removes or recolours something. On the offline world's sharp 256-px renders a
  re-encoded copy stays below 22 grey levels, an honest edit (even "?" replaced by "1" on a board, resampled)
  reaches 29 and more (benchmarks/pixel_gates.py). Below ``no_op_delta``: ``no_op_edit``.
* **changed area** ``changed_share``: the UniWorld-V1 edit mask of method/masks.py (per-channel difference,
  grey >= 18, 5-px close, small components dropped) without its empty/tiny-mask fallback to all ones, as a
  share of the image. Above the style's ``max_changed_share``: ``over_edited``.
* **changed pixels** ``changed_px``: how many working pixels the local change reaches ``no_op_delta`` at, counted
  before anything is dropped (the UniWorld mask drops pieces small relative to the whole change, so a lone
  speck's share there says nothing, and resampling along edges inflates its raw difference pieces). Below
  the style's ``min_changed_px``: ``no_op_edit`` (a speck instead of the edit: a 4x4-px dot reaches 16-44
  working px through the re-encodings of benchmarks/pixel_gates.py; honest offline edits of the conditional,
  synthesis and transform styles reach 250 and more). Not for `render`: one digit written on a board is as
  small as a speck (7 px at the least), so there a speck is left to the judge.
* **change everywhere**: ``shift``, the 25th percentile of the low-passed difference (a colour cast or tone shift of
  the whole image, which a threshold of 18 misses), and ``spread``, the share of cells of an 8x8 grid where
  the local change reaches ``no_op_delta``, among the cells where the source has structure (a gradient of that
  size: where a shifted or re-rendered picture shows), for a whole-image re-render. Either above its limit: ``over_edited``.

Where the region the edit may touch is known (an offline-world edit program: method/consistency.py), a local
change of ``outside_delta`` or more outside that region (widened by 2 sigma) is ``over_edited`` too: an
unrelated object changed beside the right edit.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from ..core.png import png_size
from . import masks

#: the long side both images are compared at (a 1024-px source and a 256-px one give the same figures)
WORK_SIDE = 256
#: the low-pass's standard deviation, in working pixels
SIGMA = 1.0
#: blurs of the source tried to match the edited image's own softness (a resampled or re-rendered reply)
MATCH_BLURS = (0.0, 0.5, 0.8, 1.1, 1.5)
#: how much of the source's local gradient a re-encoding may move a value by (benchmarks/pixel_gates.py)
EDGE_ALLOWANCE = 0.5
#: the tone-shift measure: this percentile of the change after a wider low-pass (an edit covering up to
#: 100 - SHIFT_PERCENTILE % of the image does not move it; a colour cast or tone change of the whole does)
SHIFT_SIGMA = 3.0
SHIFT_PERCENTILE = 25
#: the grid whose cells `spread` counts, and how many of them must have structure for it to count at all
#: (12: at 8, a flat photo with 9 structured cells made one honest re-encoded edit "8 of 9 cells changed")
GRID = 8
MIN_STRUCTURED_CELLS = 12

NO_OP = "no_op_edit"
OVER_EDITED = "over_edited"

#: per style, the largest share of the image an edit may change (UniWorld mask); `default` for other styles
#: (calibrated in benchmarks/pixel_gates.py: the largest honest offline edit of each style plus a margin)
DEFAULT_MAX_CHANGED_SHARE: dict[str, float] = {
    "conditional": 0.2,
    "synthesis": 0.3,
    "render": 0.25,
    "transform": 0.15,
    "default": 0.3,
}
#: per style, the fewest working pixels (at WORK_SIDE) whose local change reaches no_op_delta: fewer is a
#: speck, not an edit; 0 turns the check off (render: a written digit is as small as a speck)
DEFAULT_MIN_CHANGED_PX: dict[str, int] = {
    "conditional": 96,
    "synthesis": 96,
    "render": 0,
    "transform": 96,
    "default": 96,
}


@dataclass(frozen=True)
class GateLimits:
    """The thresholds of the gates (stages.edit.gates in the YAML; docs/incoming/pixel-gates.md)."""

    no_op_delta: float = 25.0
    max_changed_share: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MAX_CHANGED_SHARE))
    shift_delta: float = 6.0
    spread_share: float = 0.75
    outside_delta: float = 30.0
    min_changed_px: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MIN_CHANGED_PX))

    def area_limit(self, style: str | None) -> float:
        shares = self.max_changed_share
        return float(shares.get(style or "default", shares.get("default", 1.0)))

    def speck_limit(self, style: str | None) -> int:
        counts = self.min_changed_px
        return int(counts.get(style or "default", counts.get("default", 0)))


@dataclass(frozen=True)
class PixelMeasures:
    peak: float
    changed_share: float
    shift: float
    spread: float
    #: working pixels whose local change reaches no_op_delta (nothing dropped)
    changed_px: int = 0
    #: the largest local change outside the known edit region (None: no region known)
    outside: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def aspect_error(first: tuple[int, int], second: tuple[int, int]) -> float:
    """How far two (width, height) sizes' aspect ratios are apart, relative and symmetric: the larger ratio over
    the smaller, less 1 (0.0: the same; 0.03: 3 %; 4:3 against 1:1 is 0.333 either way)."""
    ratio = (first[0] / first[1]) / (second[0] / second[1])
    return max(ratio, 1.0 / ratio) - 1.0


def decode_rgb(image: bytes | Image.Image) -> Image.Image:
    return masks.to_rgb(image if isinstance(image, Image.Image) else Image.open(io.BytesIO(image)))


def in_geometry(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` at `size` (Lanczos), as it is brought back to the source's geometry."""
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


class SourceView(NamedTuple):
    """What the gates read of a source image: its size and its pixels at the working resolution. A record's
    source is the same for every edit attempt, so the edit stage decodes it once (source_view) and measures
    each attempt against this (a 1024-px PNG takes ~4 ms to decode, its working copy 0.2 MB to keep)."""

    size: tuple[int, int]
    work: np.ndarray


def source_view(image: bytes | Image.Image | np.ndarray) -> SourceView:
    """The gates' view of a source image (decoded from bytes, or an already decoded image or its RGB pixels)."""
    array = rgb_pixels(image)
    return SourceView((array.shape[1], array.shape[0]), _working(array))


def rgb_pixels(image: bytes | Image.Image | np.ndarray) -> np.ndarray:
    """An image's HxWx3 uint8 RGB pixels, decoded once: by OpenCV for a plain PNG, else by Pillow (decode_rgb);
    an HxWx3 uint8 array is taken as those pixels."""
    if isinstance(image, np.ndarray):
        return image
    array = plain_png_pixels(image) if isinstance(image, bytes) else None
    return array if array is not None else np.asarray(decode_rgb(image), dtype=np.uint8)


#: PNG chunks that say nothing about pixel values (anything else before the image data: Pillow decodes it)
_PLAIN_PNG_CHUNKS = frozenset({b"pHYs", b"tEXt", b"zTXt", b"iTXt", b"tIME"})


def plain_png_pixels(data: bytes) -> np.ndarray | None:
    """The HxWx3 RGB pixels of an 8-bit RGB PNG with nothing that changes how its pixels read (no transparency,
    palette, gamma or colour profile), decoded by OpenCV straight into an array: the same values as Pillow's
    (PNG is lossless), without Pillow's 4-byte-per-pixel buffer and the copy out of it (2 ms of the 10 of a
    1024-px edit). None for any other image (Pillow's decoding then)."""
    size = png_size(data)
    if size is None or data[24:26] != b"\x08\x02":
        return None
    if Image.MAX_IMAGE_PIXELS and size[0] * size[1] > Image.MAX_IMAGE_PIXELS:
        return None  # Pillow's decompression-bomb check decides
    position = 33  # after the signature and IHDR's 25 bytes (length, type, 13 bytes of data, CRC)
    while position + 8 <= len(data):
        kind = data[position + 4 : position + 8]
        if kind == b"IDAT":
            break
        if kind not in _PLAIN_PNG_CHUNKS:
            return None
        position += 12 + int.from_bytes(data[position : position + 4], "big")
    else:
        return None
    import cv2

    rgb = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV 4.10 and later: no BGR pass
    try:
        pixels = cv2.imdecode(
            np.frombuffer(data, np.uint8), (rgb or cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
        )
    except cv2.error:
        return None
    if pixels is None or pixels.ndim != 3:
        return None
    return pixels if rgb is not None else cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def _working(image: Image.Image | np.ndarray) -> np.ndarray:
    import cv2

    array = np.asarray(image, dtype=np.uint8)
    height, width = array.shape[:2]
    scale = WORK_SIDE / max(width, height)
    if scale >= 1.0:
        return array
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA)


class _Scratch:
    """The float32 planes one pair's measures are computed in, at one working shape: reused from pair to pair.
    Fresh ones for every pair (a dozen 0.8-MB arrays at 256 px) went back to the kernel when freed and were
    faulted in again page by page, which cost as much CPU as the arithmetic itself."""

    COLOUR, GREY = 8, 4

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.colour = [np.empty(shape, np.float32) for _ in range(self.COLOUR)]
        self.grey = [np.empty(shape[:2], np.float32) for _ in range(self.GREY)]
        #: one plane per channel, for _channel_max
        self.planes = [np.empty(shape[:2], np.float32) for _ in range(shape[2] if len(shape) == 3 else 0)]


#: scratch sets not in use (one per pair measured at a time, by any thread), the most recent last
_SCRATCH: list[_Scratch] = []
_SCRATCH_LOCK = threading.Lock()
#: at most this many kept (other working shapes are dropped first): 10 MB each at 256 px
_SCRATCH_KEPT = 4


@contextmanager
def _scratch(shape: tuple[int, ...]) -> Iterator[_Scratch]:
    with _SCRATCH_LOCK:
        found = next((i for i in range(len(_SCRATCH) - 1, -1, -1) if _SCRATCH[i].shape == shape), None)
        scratch = _SCRATCH.pop(found) if found is not None else None
    scratch = scratch or _Scratch(shape)
    try:
        yield scratch
    finally:
        with _SCRATCH_LOCK:
            _SCRATCH.append(scratch)
            del _SCRATCH[: max(0, len(_SCRATCH) - _SCRATCH_KEPT)]


def _blur(array: np.ndarray, sigma: float, into: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(array, (0, 0), sigma, dst=into) if sigma > 0 else array


def _channel_max(array: np.ndarray, scratch: _Scratch, into: np.ndarray) -> np.ndarray:
    """masks.channel_max of an HxWx3 float32 plane, written `into`: the channels split into the scratch's planes
    and OpenCV's maximum of those (the same values; twice as fast as numpy's maximum over strided views)."""
    import cv2

    first, *rest = cv2.split(array, scratch.planes)
    cv2.max(first, rest[0], dst=into)
    for plane in rest[1:]:
        cv2.max(into, plane, dst=into)
    return into


def _gradient(array: np.ndarray, scratch: _Scratch, into: np.ndarray) -> np.ndarray:
    """Per-pixel gradient magnitude (grey levels per pixel), the largest over the channels, written `into`."""
    import cv2

    # Sobel's own scale (1/8, a power of two: exact), squares in place and the channel maximum before the root
    # (a root is monotonic): one root per pixel instead of three, the same float32 values as
    # sqrt((Sobel/8)**2 + ...) and 6x faster
    dx = cv2.Sobel(array, cv2.CV_32F, 1, 0, ksize=3, scale=0.125, dst=scratch.colour[6])
    dy = cv2.Sobel(array, cv2.CV_32F, 0, 1, ksize=3, scale=0.125, dst=scratch.colour[7])
    np.multiply(dx, dx, out=dx)
    np.multiply(dy, dy, out=dy)
    np.add(dx, dy, out=dx)
    squared = _channel_max(dx, scratch, into)
    return np.sqrt(squared, out=squared)


#: match_blur stops at the first blur whose difference exceeds the best so far by more than this share of it
MATCH_RISE = 0.01


def match_blur(source: np.ndarray, edited: np.ndarray, spare: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """The source (float32) blurred as much as the edited image (float32) looks blurred: the first of MATCH_BLURS
    (in order) whose L1 difference to the edited image is the least. The difference falls while the source is
    blurred towards the edit's softness and rises past it, so the search stops at the first clear rise (more
    than MATCH_RISE over the best): an unblurred edit, the most common, costs one blur instead of four. Where
    the differences are all but equal (a colour cast much larger than what a blur moves, a flat picture) they
    wander up and down by rounding, and the search goes on through them. It picked the full search's blur on
    every pair of benchmarks/pixel_gates.py, the fake editors' plays and tests/unit/test_pixel_gates_shortcuts.py.
    Returns `source` itself, or one of `spare` and `kept`."""
    import cv2

    matched, best = source, None
    for sigma in MATCH_BLURS:
        candidate = _blur(source, sigma, spare)
        # the L1 norm (a float64 sum) orders the candidates as their mean difference does (the first of equals
        # kept), without np.abs(candidate - out).mean()'s two full-size temporaries
        error = cv2.norm(candidate, edited, cv2.NORM_L1)
        if best is None or error < best:
            matched, best = candidate, error
            if candidate is spare:
                spare, kept = kept, spare
        elif error > best * (1 + MATCH_RISE):
            break
    return matched


def local_change(source: np.ndarray, edited: np.ndarray, scratch: _Scratch) -> tuple[np.ndarray, np.ndarray]:
    """The map of how much each place changed, with what re-encoding and resampling do explained away: the
    source blurred as much as the edited image looks blurred (match_blur), both low-passed (SIGMA), their
    per-channel difference less EDGE_ALLOWANCE x the local gradient of the edges both images have there
    (resampling moves values only along edges it keeps; an edit changes flat places, or draws or removes an
    edge). Also returns the source's gradient map (where the source has structure). Both maps live in
    `scratch` (read them before it is used again)."""
    import cv2

    colour, grey = scratch.colour, scratch.grey
    src, out = colour[0], colour[1]
    src[...] = source
    out[...] = edited
    matched = match_blur(src, out, colour[2], colour[3])
    low_src, low_out = _blur(matched, SIGMA, colour[4]), _blur(out, SIGMA, colour[5])
    kernel = np.ones((3, 3), np.uint8)
    gradient = cv2.dilate(_gradient(low_src, scratch, grey[0]), kernel, dst=grey[1])
    # an edge both images have where they have it: a stroke drawn or removed is no edge of the other image
    shared = cv2.dilate(_gradient(low_out, scratch, grey[0]), kernel, dst=grey[2])
    np.minimum(gradient, shared, out=shared)
    # absdiff: np.abs of the difference in one pass (the same float32 values); the allowance taken in place
    local = _channel_max(cv2.absdiff(low_src, low_out, dst=colour[6]), scratch, grey[3])
    shared *= EDGE_ALLOWANCE
    local -= shared
    return local, gradient


def _percentile(values: np.ndarray, q: float) -> float:
    """np.percentile(values, q) (its default, linear method), the same float: the two values at the ranks it
    interpolates between (_neighbours), then numpy's own interpolation in the values' dtype."""
    flat = values.ravel()
    index = q / 100 * (flat.size - 1)
    lower = int(index)
    fraction = index - lower
    below, above = _neighbours(flat, lower, values.shape[-1] if values.ndim else 1)
    step = above - below  # numpy's _lerp, step for step (the same rounding)
    return float(above - step * (1 - fraction) if fraction >= 0.5 else below + step * fraction)


#: _neighbours brackets the ranks from a sample of about this many values, this many sample ranks either side
_SAMPLE, _SAMPLE_MARGIN = 1024, 48


def _stride(size: int, width: int) -> int:
    """_neighbours' sampling stride: about size / _SAMPLE, prime to the width."""
    stride = max(1, size // _SAMPLE)
    while math.gcd(stride, width) != 1:
        stride += 1
    return stride


def _neighbours(flat: np.ndarray, rank: int, width: int) -> tuple[Any, Any]:
    """The values of rank `rank` and `rank` + 1 (the same one at the last rank) in ascending order of `flat`, a
    map `width` values wide. A sample of every so many values (a stride prime to the width: each column is
    sampled, not the same few) about that rank brackets them: counting what lies below the bracket and
    partitioning only what lies within it gives the very same values as partitioning all of `flat` (4x faster
    at 256 px). A bracket that misses them falls back to the whole."""
    size = flat.size
    upper = min(rank + 1, size - 1)
    if size >= 8 * _SAMPLE and upper > rank:
        sample = np.sort(flat[:: _stride(size, width)])
        centre = rank * sample.size // size
        low = sample[max(0, centre - _SAMPLE_MARGIN)]
        high = sample[min(sample.size - 1, centre + _SAMPLE_MARGIN)]
        below = int(np.count_nonzero(flat < low))
        if below <= rank:
            if low == high:
                if below + int(np.count_nonzero(flat == low)) > upper:
                    return low, low
            else:
                inside = flat[(flat >= low) & (flat <= high)]
                if below + inside.size > upper:
                    # both ranks at once, as numpy's percentile partitions (one rank alone can be several
                    # times slower on a map of many near-equal values)
                    part = np.partition(inside, [rank - below, upper - below])
                    return part[rank - below], part[upper - below]
    part = np.partition(flat, [rank, upper] if upper > rank else rank)
    return part[rank], part[upper]


def measure(
    source: bytes | Image.Image | SourceView,
    edited: bytes | Image.Image,
    region: np.ndarray | None = None,
    limits: GateLimits | None = None,
) -> PixelMeasures:
    """The gates' measures of one pair; `edited` is first brought to the source's size, `region` is a boolean
    mask at the source's size of where the edit may change the image (or None). `spread` counts cells whose
    local change reaches the limits' `no_op_delta`."""
    import cv2

    view = source if isinstance(source, SourceView) else source_view(source)
    pixels = rgb_pixels(edited)
    if (pixels.shape[1], pixels.shape[0]) != view.size:  # resized from the one decode, not decoded again
        pixels = np.asarray(in_geometry(Image.fromarray(pixels), view.size))
    out = _working(pixels)
    src = view.work
    level = (limits or GateLimits()).no_op_delta
    with _scratch(src.shape) as scratch:
        local, gradient = local_change(src, out, scratch)
        # the low-pass is linear: one blur of the difference instead of the difference of two blurs (the same
        # figure up to float rounding, 1e-4 of a grey level)
        difference = cv2.subtract(src, out, dst=scratch.colour[7], dtype=cv2.CV_32F)
        tone = _blur(difference, SHIFT_SIGMA, scratch.colour[6])
        np.abs(tone, out=tone)
        shift = _percentile(_channel_max(tone, scratch, scratch.grey[0]), SHIFT_PERCENTILE)
        peak = float(local.max())
        spread = _cell_share(local, gradient, level)
        changed_px = int(np.count_nonzero(local >= level))
        outside = _outside(local, region)
    return PixelMeasures(
        peak=peak,
        changed_share=masks.changed_area(src, out) / (src.shape[0] * src.shape[1]),
        shift=shift,
        spread=spread,
        changed_px=changed_px,
        outside=outside,
    )


def _cell_share(local: np.ndarray, gradient: np.ndarray, level: float) -> float:
    """The share of the grid's structured cells (a source gradient of `level` or more somewhere in them: where
    a shift or re-render of the picture shows) whose local change reaches `level`; 0.0 with fewer than
    MIN_STRUCTURED_CELLS of them (a picture too flat to tell)."""
    height, width = local.shape
    # the cells' maxima over array_split's bounds: the same cells as a loop over np.ix_ blocks, 200x faster
    row_starts = _split_starts(height, min(GRID, height))
    row_ends = [*row_starts[1:], height]
    col_starts = _split_starts(width, min(GRID, width))

    def cell_max(values: np.ndarray) -> np.ndarray:
        # each band of rows reduced down its columns (whole rows at a time: 4x faster than reduceat along axis 0)
        bands = np.stack([values[start:end].max(axis=0) for start, end in zip(row_starts, row_ends, strict=True)])
        return np.maximum.reduceat(bands, col_starts, axis=1)

    structured_cells = cell_max(gradient) >= level
    structured = int(structured_cells.sum())
    changed = int((structured_cells & (cell_max(local) >= level)).sum())
    return changed / structured if structured >= MIN_STRUCTURED_CELLS else 0.0


def _split_starts(length: int, parts: int) -> np.ndarray:
    """Where np.array_split(range(length), parts) starts each part."""
    size, extra = divmod(length, parts)
    sizes = [size + 1] * extra + [size] * (parts - extra)
    return np.cumsum([0, *sizes[:-1]])


def _outside(local: np.ndarray, region: np.ndarray | None) -> float | None:
    if region is None:
        return None
    import cv2

    height, width = local.shape
    mask = cv2.resize(np.asarray(region, dtype=np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    reach = int(round(2 * SIGMA))
    mask = cv2.dilate(mask, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)) > 0
    return float(local[~mask].max()) if (~mask).any() else 0.0


class GateFailure(NamedTuple):
    """A failed gate: the reject reason, which measure decided (no_op, area, shift, spread, outside), why."""

    reason: str
    gate: str
    detail: str


def verdict(measures: PixelMeasures, limits: GateLimits, style: str | None) -> GateFailure | None:
    """The gate an edit fails (the first, in the order below), or None when it passes them all. A shift of
    the whole image comes first: it is an over-edit even where no local edit shows."""
    m, lim = measures, limits
    if m.shift >= lim.shift_delta:
        detail = (
            f"the whole image shifted: {SHIFT_PERCENTILE}th-percentile change {m.shift:.1f} >= shift_delta {lim.shift_delta:g} "
            "(a global colour or tone change)"
        )
        return GateFailure(OVER_EDITED, "shift", detail)
    if m.peak < lim.no_op_delta:
        detail = (
            f"the edited image is the source up to re-encoding: largest local change {m.peak:.1f} "
            f"< no_op_delta {lim.no_op_delta:g}"
        )
        return GateFailure(NO_OP, "no_op", detail)
    speck = lim.speck_limit(style)
    if m.changed_px < speck:
        detail = (
            f"only a speck changed: {m.changed_px} px (at {WORK_SIDE} px on the long side) changed by "
            f"no_op_delta or more < min_changed_px {speck} for style {style or 'default'} (a dot, not the edit)"
        )
        return GateFailure(NO_OP, "speck", detail)
    area = lim.area_limit(style)
    if m.changed_share > area:
        detail = f"changed area {m.changed_share:.1%} of the image > {area:.0%} allowed for style {style or 'default'}"
        return GateFailure(OVER_EDITED, "area", detail)
    if m.spread >= lim.spread_share:
        detail = (
            f"changes everywhere: {m.spread:.0%} of the image's cells changed >= spread_share "
            f"{lim.spread_share:.0%} (a global re-render)"
        )
        return GateFailure(OVER_EDITED, "spread", detail)
    if m.outside is not None and m.outside >= lim.outside_delta:
        detail = f"a change outside the edit's region: {m.outside:.1f} >= outside_delta {lim.outside_delta:g}"
        return GateFailure(OVER_EDITED, "outside", detail)
    return None
