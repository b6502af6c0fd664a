"""Record validation: the gate between a source and any model — clean text, a safe, decodable RGB image,
or `InvalidInput` with a short reason (which becomes the `invalid_input` reject detail)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.config import InputPolicy
from ..core.records import VQARecord
from .images import ImageRejected, load_image_bytes, normalise_image
from .scenes import PNG_META_KEY, render_record

_SURROGATES = re.compile("[\ud800-\udfff]")
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HORIZONTAL_SPACE = re.compile("[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class InvalidInput(Exception):
    """A record that must not reach any model; `detail` is a short human-readable reason."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def validate_record(
    record: VQARecord,
    policy: InputPolicy,
    image_root: Path | str | None = None,
    on_image: Callable[[Image.Image | np.ndarray], None] | None = None,
) -> VQARecord:
    """A cleaned copy of `record` (normalised image bytes, cleaned text) or InvalidInput.

    Image paths (`record.image` is None, `record.image_path` set) are read here, resolved against
    `image_root` and refused when they leave it; http(s) URLs only when the policy allows remote images.
    """
    if record.invalid:
        raise InvalidInput(record.invalid)
    question = clean_text(record.question, "question", policy)
    answer = clean_text(record.answer, "answer", policy)
    clean = {"question": question, "answer": answer}
    if PNG_META_KEY in record.meta:  # the run's scene encoding, used here: the stages see the record as before it
        clean["meta"] = {k: v for k, v in record.meta.items() if k != PNG_META_KEY}
    try:
        if record.image is not None:
            raw = record.image
        elif record.image_path:
            raw = load_image_bytes(record.image_path, image_root=image_root, policy=policy)
        elif (rendered := render_record(record.meta)) is not None:
            # the offline world renders in the worker (ScenesSource defer_render): an RGB PNG within the
            # policy's limits is what normalise_image passes through unchanged, so the drawn image stands for
            # its decode
            raw, drawn, pixels = rendered
            if drawn.mode == "RGB" and max(drawn.size) <= policy.max_side and (
                drawn.width * drawn.height <= policy.max_pixels
            ):
                if on_image is not None:
                    on_image(drawn if pixels is None else pixels)
                return record.model_copy(update={"image": raw, **clean})
        else:
            raise InvalidInput("no image")
        image = normalise_image(raw, policy, on_image)
    except ImageRejected as exc:
        raise InvalidInput(exc.detail) from None
    return record.model_copy(update={"image": image, **clean})


def clean_text(value: object, field: str, policy: InputPolicy) -> str:
    """NFC-normalised text without control characters or runs of spaces; InvalidInput when empty,
    not valid Unicode (sources decode with `surrogateescape`, so undecodable bytes show up as lone
    surrogates), or longer than `policy.max_text_chars` (unless the policy truncates)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} is not text ({type(value).__name__})")
    if _SURROGATES.search(value):
        raise InvalidInput(f"{field} is not valid UTF-8 text")
    text = unicodedata.normalize("NFC", value).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL_CHARS.sub("", text)
    text = _HORIZONTAL_SPACE.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _BLANK_LINES.sub("\n\n", text).strip()
    if not text:
        raise InvalidInput(f"empty {field}")
    if len(text) > policy.max_text_chars:
        if not policy.truncate_long_text:
            raise InvalidInput(
                f"{field} too long ({len(text)} chars > max_text_chars {policy.max_text_chars})"
            )
        text = text[: policy.max_text_chars].rstrip()
    return text
