"""What the real (network) backends share: JSON reply parsing and validation, the repair prompt, Retry-After
parsing and image MIME sniffing (API keys are redacted by core/redact.py Redactor). Nothing here imports a
provider SDK."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from .base import MalformedReply

_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}
# Shapes of provider keys, redacted even when they are not the configured key (e.g. echoed by a proxy).


def strip_fences(text: str) -> str:
    """Remove a Markdown code fence around a reply (```json ... ```), which many models add."""
    match = _FENCE.match(text)
    return match.group(1).strip() if match else text.strip()


def parse_json_object(text: str) -> dict[str, Any]:
    """Parse a reply as one JSON object; raises ValueError with a short reason the repair prompt can quote."""
    body = strip_fences(text)
    if not body:
        raise ValueError("the reply was empty")
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        start, end = body.find("{"), body.rfind("}")
        if start == -1 or end <= start:
            raise ValueError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
        try:
            value = json.loads(body[start : end + 1])  # prose around an object: keep the object
        except json.JSONDecodeError as inner:
            raise ValueError(f"not valid JSON ({inner.msg} at position {inner.pos + start})") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def schema_problems(data: Mapping[str, Any], schema: Mapping[str, Any] | None) -> list[str]:
    """A light check of a reply against its schema: required keys, enums and basic types of the top level."""
    if not schema:
        return []
    problems: list[str] = []
    properties: Mapping[str, Any] = schema.get("properties") or {}
    for key in schema.get("required") or []:
        if key not in data:
            problems.append(f"missing required key '{key}'")
    for key, sub in properties.items():
        if key not in data or not isinstance(sub, Mapping):
            continue
        value = data[key]
        if "enum" in sub and value not in sub["enum"]:
            problems.append(f"'{key}' must be one of {list(sub['enum'])}, got {value!r}")
            continue
        kinds = sub.get("type")
        if kinds is None:
            continue
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if value is None:
            if "null" not in kinds:
                problems.append(f"'{key}' must not be null")
            continue
        allowed = tuple(t for kind in kinds for t in _JSON_TYPES.get(kind, ()))
        if not allowed:
            continue
        bad_bool = isinstance(value, bool) and "boolean" not in kinds
        if bad_bool or not isinstance(value, allowed):
            problems.append(f"'{key}' must be {' or '.join(kinds)}, got {type(value).__name__}")
    return problems


def parse_reply(text: str, schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """Parse and validate; raises MalformedReply (with the raw text) on any problem."""
    try:
        data = parse_json_object(text)
    except ValueError as exc:
        raise MalformedReply(f"reply is {exc}", raw=text) from None
    problems = schema_problems(data, schema)
    if problems:
        raise MalformedReply("reply does not match the schema: " + "; ".join(problems), raw=text)
    return data


def json_instructions(schema: Mapping[str, Any] | None) -> str:
    """What a model without structured outputs is told about the reply format (appended to the system text)."""
    text = (
        "Reply with exactly one JSON object and nothing else: no Markdown fences, no prose before or after."
    )
    if schema:
        text += " The object must match this JSON Schema:\n" + json.dumps(schema, ensure_ascii=False)
    return text


def repair_message(error: str, schema: Mapping[str, Any] | None) -> str:
    """The follow-up user message of the one repair attempt, quoting what was wrong."""
    required = ", ".join((schema or {}).get("required") or [])
    hint = f" with the keys {required}" if required else ""
    return (
        f"Your previous reply could not be used: {error}. Reply again with only one valid JSON object{hint}, "
        "no Markdown fences and no other text."
    )


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (delta seconds or an HTTP date); None if absent/invalid."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def duration_seconds(value: Any) -> float | None:
    """A protobuf Duration as JSON ("23s", "1.5s") → seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.endswith("s"):
        try:
            return float(value[:-1])
        except ValueError:
            return None
    return None


def image_mime(data: bytes) -> str:
    """The MIME type of image bytes from their magic number (PNG when unknown)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "image/png"


HINT_LINE = (
    "Reference answer (private hint for the reasoning step; do not render it unless the instruction asks "
    "for the answer to be shown): {answer}"
)


def with_reference_hint(instruction: str, reference_answer: str | None) -> str:
    """The editor's prompt: the instruction plus the reference answer as a hidden hint line (added once:
    not when the instruction, e.g. rendered from prompts/edit.txt, already has a "Reference answer" line)."""
    if not reference_answer or "reference answer" in instruction.lower():
        return instruction
    return instruction.rstrip() + "\n\n" + HINT_LINE.format(answer=reference_answer)


SYSTEM_PREFIX_SEPARATOR = "\n\n"


def with_system_prefix(system: str, prompt: str) -> str:
    """For endpoints without a system role (OpenAI `images.edit`): the system text, a blank line, then the
    prompt. Gemini gets the same system text as `system_instruction` instead."""
    system = system.strip()
    return f"{system}{SYSTEM_PREFIX_SEPARATOR}{prompt}" if system else prompt


def truncate(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
