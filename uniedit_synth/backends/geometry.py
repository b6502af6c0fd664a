"""The editors' output geometries: which supported aspect ratio or size is closest to a source's.

`stages.edit.keep_geometry` asks each editor for the source's geometry (EditRequest.source_size); an editor
supports only some, so the closest one is asked for (closest in log aspect ratio: 4:3 and 3:4 are equally far
from 1:1) and the edit stage resizes the reply to the source's exact size.
"""

from __future__ import annotations

import math

#: google-genai `types.ImageConfig.aspect_ratio`: "Supported values are "1:1", "2:3", "3:2", "3:4", "4:3",
#: "9:16", "16:9", and "21:9"." (tests/unit/test_geometry.py reads the SDK's own text)
GEMINI_ASPECT_RATIOS: tuple[str, ...] = ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9")
#: gpt-image-1 `images.edit` sizes besides "auto"
GPT_IMAGE_SIZES: tuple[str, ...] = ("1024x1024", "1536x1024", "1024x1536")
#: diffusers editors: both sides a multiple of this (the VAE factor 8 times the 2x2 latent packing of FLUX,
#: Qwen-Image and SD3; a multiple of 8 is enough for SD 1.x/SDXL-based editors)
DIFFUSERS_MULTIPLE = 16


def _ratio(text: str, sep: str) -> float:
    first, second = text.split(sep)
    return float(first) / float(second)


def _closest(width: int, height: int, options: tuple[str, ...], sep: str) -> str:
    target = math.log(width / height)
    return min(options, key=lambda option: abs(math.log(_ratio(option, sep)) - target))


def gemini_aspect_ratio(size: tuple[int, int]) -> str:
    """The Gemini `image_config.aspect_ratio` closest to a (width, height)."""
    return _closest(size[0], size[1], GEMINI_ASPECT_RATIOS, ":")


def gpt_image_size(size: tuple[int, int]) -> str:
    """The gpt-image-1 `size` closest to a (width, height)'s aspect ratio."""
    return _closest(size[0], size[1], GPT_IMAGE_SIZES, "x")


def rounded_size(
    size: tuple[int, int], multiple: int = DIFFUSERS_MULTIPLE, long_side: int | None = None
) -> tuple[int, int]:
    """(width, height) scaled so the long side is `long_side` (None: as is), each rounded to `multiple`."""
    width, height = size
    scale = 1.0 if long_side is None else long_side / max(width, height)
    return (
        max(multiple, round(width * scale / multiple) * multiple),
        max(multiple, round(height * scale / multiple) * multiple),
    )
