"""The pixels of the realistic fake editors: honest local edits and the ways generative editors fail in pixels.

A generative editor never hands back the source bytes: it re-renders the whole picture at its own output size
and encodes it (JPEG-like noise everywhere, a resampling blur, sometimes a slight global drift). So an *honest*
edit here is a local change on the target plus that re-rendering; the failures are the source unchanged, the source re-encoded and resampled
(a no-op in disguise), a global colour cast or a re-framing on top of the edit, the whole floor repainted
with it, a speck instead of the edit,
the edit on the wrong object, and a square picture for a 4:3 source (a geometry fault, not a defect once the
pipeline brings it back to the source's size).

Boxes are fractions of the image `(x0, y0, x1, y1)`, so they apply to whatever size the request carried.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageEnhance

from uniedit_synth.offline.world import COLORS as WORLD_COLOURS

Box = tuple[float, float, float, float]

#: gpt-image-1's sizes and Gemini's 1K sizes per aspect ratio (ai.google.dev image generation docs)
OPENAI_SIZES: tuple[tuple[int, int], ...] = ((1024, 1024), (1536, 1024), (1024, 1536))
GEMINI_1K: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
    "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672),
}  # fmt: skip
SQUARE = (1024, 1024)

#: RGB of the colour words the fake rewriter uses in its edits: none is an offline-world colour, and all stand
#: out on its light wall and floor (an honest edit is a visible one)
PAINT: dict[str, tuple[int, int, int]] = {
    "gold": (212, 160, 30), "maroon": (120, 20, 40), "black": (20, 20, 20), "teal": (0, 120, 120),
    "navy": (20, 30, 110), "olive": (110, 120, 30),
}  # fmt: skip


@dataclass(frozen=True)
class Stroke:
    """One visible local edit: fill `box` (fractions) with `colour`, as an ellipse or a rectangle."""

    box: Box
    colour: str
    ellipse: bool = False


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def jpeg_round_trip(image: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return decode(out.getvalue())


def openai_size(field: str | None, source: tuple[int, int]) -> tuple[int, int]:
    """The size gpt-image-1 answers with for a `size` field ("auto" or missing: by the source's orientation)."""
    if field and "x" in field and field != "auto":
        width, _, height = field.partition("x")
        return int(width), int(height)
    width, height = source
    if width > height * 1.1:
        return OPENAI_SIZES[1]
    if height > width * 1.1:
        return OPENAI_SIZES[2]
    return OPENAI_SIZES[0]


def gemini_size(aspect: str | None, source: tuple[int, int]) -> tuple[int, int]:
    """The 1K size Gemini answers with for `image_config.aspect_ratio` (none: the closest to the source's)."""
    if aspect in GEMINI_1K:
        return GEMINI_1K[aspect]
    ratio = source[0] / source[1]
    closest = min(GEMINI_1K, key=lambda k: abs(GEMINI_1K[k][0] / GEMINI_1K[k][1] - ratio))
    return GEMINI_1K[closest]


def paint(image: Image.Image, strokes: list[Stroke]) -> Image.Image:
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width, height = out.size
    for stroke in strokes:
        x0, y0, x1, y1 = stroke.box
        xy = (round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height))
        rgb = PAINT.get(stroke.colour) or WORLD_COLOURS.get(stroke.colour, (255, 0, 255))
        if stroke.ellipse:
            draw.ellipse(xy, fill=rgb)
        else:
            draw.rectangle(xy, fill=rgb)
    return out


def rerender(image: Image.Image, size: tuple[int, int], quality: int = 92) -> Image.Image:
    """What a generative editor does to every picture: resample to its output size, then lossy encoding."""
    return jpeg_round_trip(image.resize(size, Image.Resampling.LANCZOS), quality)


def colour_cast(image: Image.Image) -> Image.Image:
    """A global re-render: warmer, brighter, more contrast — every pixel moves."""
    r, g, b = image.split()
    r = r.point(lambda v: min(255, round(v * 1.12 + 8)))
    b = b.point(lambda v: round(v * 0.86))
    warmed = Image.merge("RGB", (r, g, b))
    return ImageEnhance.Contrast(ImageEnhance.Brightness(warmed).enhance(1.08)).enhance(1.15)


def drift(image: Image.Image) -> Image.Image:
    """An honest editor's slight global drift: 2 % brighter, a touch warmer, the picture shifted by 0.6 px
    (generative editors never hand back the source's exact pixel grid)."""
    r, g, b = image.split()
    warmer = Image.merge(
        "RGB", (r.point(lambda v: min(255, round(v * 1.02 + 1))), g.point(lambda v: min(255, v + 1)), b)
    )
    return warmer.transform(warmer.size, Image.Transform.AFFINE, (1, 0, 0.6, 0, 1, 0.6), Image.Resampling.BILINEAR)


def reframe(image: Image.Image) -> Image.Image:
    """The editor zooms in and pans: the central 86 % of the picture, slightly right, scaled back up."""
    width, height = image.size
    box = (round(width * 0.10), round(height * 0.05), round(width * 0.96), round(height * 0.91))
    return image.crop(box).resize((width, height), Image.Resampling.BICUBIC)


def render_edit(
    source_png: bytes, play: str, strokes: list[Stroke], wrong: list[Stroke], size: tuple[int, int]
) -> bytes:
    """The edited image (PNG) an editor sends back for the pixel behaviour `play`.

    `strokes` is the edit the instruction asks for, `wrong` the same edit placed on another object (or the
    other branch); `size` the output size the request asked for (ignored by `square`)."""
    source = decode(source_png)
    if play == "unchanged":
        return png(source)
    if play == "reencoded":  # a no-op in disguise: resampled to the output size and lossy-encoded twice
        return png(jpeg_round_trip(rerender(source, size, 80), 85))
    if play == "speck":  # a 4x4-pixel dot far from anything the instruction names
        edited = source.copy()
        ImageDraw.Draw(edited).rectangle((3, 3, 6, 6), fill=PAINT["black"])
        return png(rerender(edited, size))
    if play == "wrong":
        return png(rerender(paint(source, wrong), size))
    if play == "oversized":  # the whole floor recoloured along with the edit
        strokes = [*strokes, Stroke((0.0, 0.62, 1.0, 1.0), strokes[0].colour if strokes else "gold")]
    edited = paint(source, strokes)
    if play == "drift":
        return png(rerender(drift(edited), size, 80))
    if play == "global":
        edited = colour_cast(edited)
    elif play == "reframed":
        edited = reframe(edited)
    elif play == "square":
        size = SQUARE
    return png(rerender(edited, size))
