"""Image files inside an export dir: safe names from sample ids, and writing image bytes without escaping the dir."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

from PIL import Image

from ..core.errors import ExportError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_PASSTHROUGH = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
MAX_STEM_CHARS = 80


def safe_stem(sample_id: str) -> str:
    """A file-name stem for an id: only [A-Za-z0-9._-], no leading dot, at most ~93 chars, unique per id.

    Ids may hold `/`, `..`, NUL or anything else; every run of other characters becomes `_`, and a hash of the
    full id is appended so that ids differing only in unsafe characters (`a/b`, `a_b`) never collide.
    """
    readable = _UNSAFE.sub("_", sample_id).strip("._-")[:MAX_STEM_CHARS] or "sample"
    digest = hashlib.sha256(sample_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{readable}-{digest}"


def image_suffix(data: bytes) -> str:
    """The file suffix for encoded image bytes ('.png', '.jpg', '.webp'), or '' when they must be re-encoded."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _PASSTHROUGH.get(image.format or "", "")
    except Exception:  # PIL raises several types for undecodable data
        return ""


def contained(root: Path, relative: str) -> Path:
    """root/relative, refusing any path that resolves outside root."""
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ExportError(f"refusing to write {relative!r}: it resolves outside the export dir {root}")
    return target


def write_image(root: Path, folder: str, stem: str, data: bytes) -> str:
    """Write image bytes as `<folder>/<stem><suffix>` under root (PNG, JPEG and WebP as they are, anything else
    re-encoded as PNG); return the path relative to root, with forward slashes."""
    suffix = image_suffix(data)
    if not suffix:
        with Image.open(io.BytesIO(data)) as image:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
        data, suffix = buffer.getvalue(), ".png"
    relative = f"{folder}/{stem}{suffix}"
    target = contained(root, relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return relative
