"""Drawing a Scene to PNG bytes with Pillow: a 2.5-D CLEVR-like floor of solids and a wall of signs and boards.

Rendering is a pure function of the scene (no randomness, no clock, no downloaded font: PIL's built-in
FreeType font), so the same scene always gives the same pixels, and with one encoding the same PNG bytes.

Three lossless encodings give those pixels (`encode_png`):
- `PNG_PILLOW`, Pillow at compress level 3, which every run made before `PNG_OPENCV` existed used;
- `PNG_OPENCV`, OpenCV's libpng, no row filter, zlib level 3: 2.3x faster than Pillow at 1024 px and twice as
  fast to decode, at about 8 % more bytes (Pillow spends most of its time choosing a filter for every row);
- `PNG_ISAL`, what a new run gets (`PNG_NEW`): no row filter, deflated by ISA-L at level 1 (python-isal), the
  container written here (core/png.py). zlib's deflate was most of OpenCV's time: 1.0 ms instead of 5.8 at
  1024 px (rows 0.6, deflate 0.4), at about 13 % more bytes than `PNG_OPENCV`; about the same decode cost.
The bytes differ, and cache keys hash the source image's bytes, so a run pins one encoding for life (run.json
`scene_png`, engine/run_info.py): a run made before keeps the one it has, and a run with the builtin editor
keeps Pillow's, as that editor draws its flaws from the source's bytes. The builtin judge compares pixels, never
bytes; the edits the builtin editor draws are always Pillow's.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..core.png import rgb_png
from .world import COLORS, GRID_COLS, Board, Scene, SceneObject, Sign

PNG_COMPRESS_LEVEL = 3
#: the encodings of a scene (values of run.json `scene_png`): runs made before `scene_png` existed are Pillow's
PNG_PILLOW = "pillow-3"
PNG_OPENCV = "opencv-none-3"
PNG_ISAL = "isal-none-1"
PNG_ENCODINGS = (PNG_PILLOW, PNG_OPENCV, PNG_ISAL)
#: the encoding a new run with a model editor pins (engine/run_info.scene_png)
PNG_NEW = PNG_ISAL
WALL_FRACTION = 0.36
SLOT_CENTERS = {"left": 1 / 6, "middle": 1 / 2, "right": 5 / 6}
SIGN_WIDTH = 0.29
SIGN_HEIGHT = 0.15
SIGN_CENTER_Y = 0.18
SIGN_TEXT_RGB = (20, 20, 20)
SIGN_FILL_RGB = (246, 246, 238)
BOARD_FILL_RGB = (35, 80, 55)
BOARD_FRAME_RGB = (125, 88, 52)
BOARD_TEXT_RGB = (240, 240, 228)


def object_anchor(obj: SceneObject, size: int) -> tuple[float, float, float]:
    """Pixel (x, y) where the object touches the floor, and its depth scale (back row smaller)."""
    scale = 0.72 + 0.14 * obj.row
    y = size * (0.56 + 0.16 * obj.row)
    x = size * 0.5 + (obj.col - (GRID_COLS - 1) / 2) * 0.23 * size * scale
    return x, y, scale


def object_width(obj: SceneObject, size: int) -> float:
    _, _, scale = object_anchor(obj, size)
    return (0.17 if obj.size == "large" else 0.11) * size * scale


def slot_box(slot: str, size: int) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1) of a wall slot's sign or board."""
    cx, cy = SLOT_CENTERS[slot] * size, SIGN_CENTER_Y * size
    half_w, half_h = SIGN_WIDTH * size / 2, SIGN_HEIGHT * size / 2
    return round(cx - half_w), round(cy - half_h), round(cx + half_w), round(cy + half_h)


@lru_cache(maxsize=64)
def font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


@lru_cache(maxsize=4096)
def fitted_font_size(text: str, max_w: int, max_h: int) -> int:
    """The largest font size (≤ max_h) at which `text` fits in max_w × max_h pixels."""
    px = max(6, max_h)
    while px > 6:
        left, top, right, bottom = font(px).getbbox(text)
        if right - left <= max_w and bottom - top <= max_h:
            break
        px -= 1
    return px


def draw_text_centered(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, rgb: tuple[int, int, int]
) -> None:
    """Write `text` as large as fits inside `box`, centred."""
    if not text:
        return
    x0, y0, x1, y1 = box
    pad = max(2, (x1 - x0) // 14)
    px = fitted_font_size(text, x1 - x0 - 2 * pad, round((y1 - y0) * 0.62))
    face = font(px)
    left, top, right, bottom = face.getbbox(text)
    tx = (x0 + x1) / 2 - (left + right) / 2
    ty = (y0 + y1) / 2 - (top + bottom) / 2
    draw.text((round(tx), round(ty)), text, fill=rgb, font=face)


def color_rgb(color: str) -> tuple[int, int, int]:
    """A named colour of the world, or "#rrggbb" (the editor's near-miss shades); unknown names are gray."""
    if color.startswith("#") and len(color) == 7:
        return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)
    return COLORS.get(color, (128, 128, 128))


def shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """Darken (factor < 1) or lighten towards white (factor > 1)."""
    if factor <= 1:
        return tuple(round(c * factor) for c in rgb)  # type: ignore[return-value]
    mix = factor - 1
    return tuple(round(c + (255 - c) * mix) for c in rgb)  # type: ignore[return-value]


@lru_cache(maxsize=8)
def background(size: int) -> Image.Image:
    """Wall and floor with soft vertical gradients (cached per size; callers copy it)."""
    y = np.arange(size, dtype=np.float32)[:, None] / size
    wall_top, wall_bottom = np.array([232, 226, 214]), np.array([214, 206, 192])
    floor_far, floor_near = np.array([168, 166, 160]), np.array([205, 203, 198])
    horizon = WALL_FRACTION
    t_wall = np.clip(y / horizon, 0, 1)
    t_floor = np.clip((y - horizon) / (1 - horizon), 0, 1)
    wall = wall_top + (wall_bottom - wall_top) * t_wall
    floor = floor_far + (floor_near - floor_far) * t_floor
    column = np.where(y < horizon, wall, floor)
    pixels = np.broadcast_to(column[:, None, :], (size, size, 3)).round().astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    draw = ImageDraw.Draw(image)
    line_y = round(horizon * size)
    draw.line([(0, line_y), (size, line_y)], fill=(150, 145, 135), width=max(1, size // 200))
    return image


def draw_shadow(draw: ImageDraw.ImageDraw, obj: SceneObject, size: int) -> None:
    x, y, _ = object_anchor(obj, size)
    w = object_width(obj, size)
    draw.ellipse(
        [x - w * 0.45, y - w * 0.14, x + w * 0.75, y + w * 0.14],
        fill=(135, 133, 128),
    )


def draw_highlight(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    draw.ellipse([cx - r, cy - r * 0.7, cx + r, cy + r * 0.7], fill=(255, 255, 255))


def draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, size: int) -> None:
    x, y, _ = object_anchor(obj, size)
    w = object_width(obj, size)
    rgb = color_rgb(obj.color)
    metal = obj.material == "metal"
    outline = shade(rgb, 0.45)
    if obj.shape == "cube":
        d = w * 0.32
        x0, x1, y1 = x - w / 2, x + w / 2, y
        y0 = y1 - w
        top = [(x0, y0), (x0 + d, y0 - d * 0.7), (x1 + d, y0 - d * 0.7), (x1, y0)]
        side = [(x1, y0), (x1 + d, y0 - d * 0.7), (x1 + d, y1 - d * 0.7), (x1, y1)]
        draw.polygon(side, fill=shade(rgb, 0.55 if metal else 0.68), outline=outline)
        draw.polygon(top, fill=shade(rgb, 1.35 if metal else 1.18), outline=outline)
        draw.rectangle([x0, y0, x1, y1], fill=shade(rgb, 0.92 if metal else 0.85), outline=outline)
        if metal:
            draw.polygon(
                [(x0 + w * 0.1, y0 + w * 0.1), (x0 + w * 0.35, y0 + w * 0.1), (x0 + w * 0.1, y0 + w * 0.35)],
                fill=shade(rgb, 1.7),
            )
    elif obj.shape == "sphere":
        r = w / 2
        cy = y - r
        draw.ellipse([x - r, cy - r, x + r, cy + r], fill=shade(rgb, 0.6 if metal else 0.72), outline=outline)
        steps = ((0.82, 0.85, 0.08), (0.6, 1.0, 0.18), (0.36, 1.2 if metal else 1.12, 0.28))
        for radius, factor, offset in steps:
            rr = r * radius
            ox, oy = x - r * offset, cy - r * offset
            draw.ellipse([ox - rr, oy - rr, ox + rr, oy + rr], fill=shade(rgb, factor))
        if metal:
            draw_highlight(draw, x - r * 0.38, cy - r * 0.42, r * 0.2)
    elif obj.shape == "cylinder":
        h = w * 0.95
        e = w * 0.16
        x0, x1 = x - w / 2, x + w / 2
        draw.ellipse([x0, y - e, x1, y + e], fill=shade(rgb, 0.6), outline=outline)
        draw.rectangle([x0, y - h, x1, y], fill=shade(rgb, 0.85))
        draw.rectangle([x + w * 0.18, y - h, x1, y], fill=shade(rgb, 0.68 if metal else 0.74))
        draw.line([(x0, y - h), (x0, y)], fill=outline)
        draw.line([(x1, y - h), (x1, y)], fill=outline)
        draw.ellipse([x0, y - h - e, x1, y - h + e], fill=shade(rgb, 1.3 if metal else 1.15), outline=outline)
        if metal:
            draw.rectangle([x0 + w * 0.12, y - h * 0.8, x0 + w * 0.24, y - h * 0.15], fill=shade(rgb, 1.7))
    else:  # cone
        h = w * 1.15
        e = w * 0.16
        x0, x1 = x - w / 2, x + w / 2
        draw.ellipse([x0, y - e, x1, y + e], fill=shade(rgb, 0.62), outline=outline)
        draw.polygon(
            [(x0, y), (x1, y), (x, y - h)], fill=shade(rgb, 0.72 if metal else 0.78), outline=outline
        )
        draw.polygon(
            [(x0, y), (x - w * 0.05, y + e * 0.5), (x, y - h)], fill=shade(rgb, 0.95 if metal else 0.9)
        )
        if metal:
            draw.polygon(
                [(x - w * 0.3, y - h * 0.2), (x - w * 0.2, y - h * 0.2), (x - w * 0.04, y - h * 0.8)],
                fill=shade(rgb, 1.7),
            )


def draw_wall_item(draw: ImageDraw.ImageDraw, item: Sign | Board, size: int) -> None:
    x0, y0, x1, y1 = slot_box(item.slot, size)
    line = max(1, size // 128)
    cx = (x0 + x1) // 2
    # two hanging strings, so signs read as objects in the scene rather than overlays
    draw.line([(cx - (x1 - x0) // 4, 0), (cx - (x1 - x0) // 4, y0)], fill=(110, 100, 90), width=line)
    draw.line([(cx + (x1 - x0) // 4, 0), (cx + (x1 - x0) // 4, y0)], fill=(110, 100, 90), width=line)
    if isinstance(item, Board):
        draw.rectangle([x0, y0, x1, y1], fill=BOARD_FRAME_RGB)
        frame = max(2, size // 64)
        inner = (x0 + frame, y0 + frame, x1 - frame, y1 - frame)
        draw.rectangle(inner, fill=BOARD_FILL_RGB)
        draw_text_centered(draw, inner, item.label(), BOARD_TEXT_RGB)
    else:
        draw.rectangle([x0, y0, x1, y1], fill=SIGN_FILL_RGB, outline=(60, 60, 60), width=line)
        draw_text_centered(draw, (x0, y0, x1, y1), item.text, SIGN_TEXT_RGB)


def render_image(scene: Scene) -> Image.Image:
    """The scene as an RGB PIL image."""
    size = scene.size
    image = background(size).copy()
    draw = ImageDraw.Draw(image)
    for item in sorted((*scene.signs, *scene.boards), key=lambda i: i.slot):
        draw_wall_item(draw, item, size)
    ordered = sorted(scene.objects, key=lambda o: (o.row, o.col, o.id))
    for obj in ordered:
        draw_shadow(draw, obj, size)
    for obj in ordered:
        draw_object(draw, obj, size)
    return image


def encode_png(image: Image.Image, encoding: str = PNG_PILLOW, pixels: np.ndarray | None = None) -> bytes:
    """`image` as PNG bytes in `encoding` (PNG_ENCODINGS); all are lossless, only the bytes differ (an image that
    is not RGB, which no scene is, is always Pillow's). `pixels`: np.asarray(image), when the caller has it."""
    if encoding == PNG_ISAL and image.mode == "RGB":
        from isal import isal_zlib

        rows = np.empty((image.height, 1 + 3 * image.width), np.uint8)
        rows[:, 0] = 0  # each scanline's filter type: None
        rows[:, 1:] = (np.asarray(image) if pixels is None else pixels).reshape(image.height, -1)
        return rgb_png(image.width, image.height, isal_zlib.compress(rows, 1))
    if encoding == PNG_OPENCV and image.mode == "RGB":
        import cv2

        # Pillow writes the pixels straight in OpenCV's channel order: one pass, no separate RGB→BGR copy
        bgr = np.frombuffer(image.tobytes("raw", "BGR"), np.uint8).reshape(image.height, image.width, 3)
        ok, png = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL,
                                             cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE])
        if not ok:
            raise ValueError("OpenCV could not encode the scene as PNG")
        return png.tobytes()
    if encoding not in PNG_ENCODINGS:
        raise ValueError(f"unknown scene PNG encoding {encoding!r} (known: {', '.join(PNG_ENCODINGS)})")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def render_png(scene: Scene, encoding: str = PNG_PILLOW) -> bytes:
    """The scene as PNG bytes (deterministic: same scene and encoding → same bytes)."""
    return encode_png(render_image(scene), encoding)
