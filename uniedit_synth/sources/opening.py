"""What opening any built-in source shares: option checks, labels, image roots and the choice of row mapper."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..core.config import SourceSpec
from ..core.errors import SourceError
from .llava import ConversationMapper, looks_like_llava
from .rows import TABLE_PRESETS, RowMapper, TableMapper, known_presets

COMMON_OPTIONS = frozenset({"label", "shuffle_buffer"})
FILE_OPTIONS = frozenset({"turns", "json_key", "delimiter"})
_LABEL_CHARS = re.compile(r"[^a-z0-9._-]+")

#: the accepted forms on one line, for error messages (a user's mistake gets a one-line answer)
FORMS_LINE = ("accepted --source forms: scenes | hf:<name or saved-dataset dir>[:config][@split] | .parquet file, "
              "folder or glob | .jsonl/.json/.csv row file | LLaVA .json/.jsonl | image folder with metadata.jsonl")


def spec_text(spec: SourceSpec) -> str:
    return (spec.spec or "").strip()


def is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def check_options(spec: SourceSpec, allowed: frozenset[str], form: str) -> None:
    unknown = set(spec.options) - allowed - COMMON_OPTIONS
    if unknown:
        raise SourceError(
            f"unknown source.options for {form}: {sorted(unknown)}; "
            f"known: {', '.join(sorted(allowed | COMMON_OPTIONS))}"
        )


def label_for(spec: SourceSpec, default: str) -> str:
    raw = str(spec.options.get("label") or default)
    label = _LABEL_CHARS.sub("-", raw.lower()).strip("-.") or "source"
    return label


def image_root_from(spec: SourceSpec, default: Path) -> Path:
    """`source.image_root` when set, else `default` (resolved)."""
    return Path(spec.image_root).expanduser().resolve() if spec.image_root else default.resolve()


def common_dir(paths: list[Path]) -> Path:
    parents = [p.resolve().parent for p in paths]
    common = parents[0]
    for parent in parents[1:]:
        while common != parent and common not in parent.parents:
            common = common.parent
    return common


def _check_preset(spec: SourceSpec) -> None:
    if spec.preset is not None and spec.preset not in TABLE_PRESETS:
        raise SourceError(f"unknown source preset '{spec.preset}'; known presets: {known_presets()}")


def list_columns_of(schema: Any) -> frozenset[str]:
    """The columns an Arrow schema declares as lists (for answer lists declared by the data set's schema)."""
    import pyarrow as pa

    if schema is None:
        return frozenset()
    return frozenset(
        f.name for f in schema
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type) or pa.types.is_fixed_size_list(f.type)
    )


def table_mapper(
    spec: SourceSpec,
    *,
    label: str,
    available: list[str] | None,
    subject_key: str | None,
    first: Any = None,
    list_columns: frozenset[str] = frozenset(),
) -> RowMapper:
    """ConversationMapper for LLaVA rows (preset `llava`, or a `conversations` column and no question
    mapping), TableMapper otherwise."""
    _check_preset(spec)
    has_conversations = (available is not None and "conversations" in available) or looks_like_llava(first)
    if spec.preset == "llava-onevision":
        columns = set(available or []) | (set(first) if isinstance(first, dict) else set())
        return ConversationMapper(
            label=label,
            turns=spec.options.get("turns", "first"),  # the release keeps the first turn
            image_column=spec.columns.get("image", "images" if "images" in columns else "image"),
            conversations_column=spec.columns.get(
                "conversations", "messages" if "messages" in columns else "conversations"
            ),
            id_column=spec.columns.get("id", "id"),
            subject_key=subject_key,
        )
    if spec.preset == "llava" or (
        spec.preset is None and "question" not in spec.columns and has_conversations
    ):
        turns = spec.options.get("turns", "all")
        return ConversationMapper(
            label=label,
            turns=turns,
            image_column=spec.columns.get("image", "image"),
            id_column=spec.columns.get("id", "id"),
            subject_key=subject_key,
        )
    return TableMapper(
        label=label, columns=spec.columns, preset=spec.preset, subject_key=subject_key, available=available,
        list_columns=list_columns,
    )
