"""Opening VQA sources: `open_source` turns a SourceSpec (`scenes`, `hf:…`, or a path) into a Source with
the deterministic order the engine shards on (caps, shuffle, limit applied)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.config import SourceSpec
from ..core.errors import SourceError
from .arrange import ArrangedSource, PositionalSource
from .base import Source
from .files import (
    METADATA_FILES,
    ROW_FILE_SUFFIXES,
    ParquetSource,
    RowFileSource,
    first_row,
    leading_objects,
    parquet_paths,
    require_regular_file,
    row_file_kind,
)
from .hf import HF_OPTIONS, HFSource, HFStreamingSource, ImageJoin, is_saved_dataset, load_hf, parse_hf_spec
from .llava import (
    LLAVA_ONEVISION_CAPS,
    LLAVA_ONEVISION_SUBJECT_KEY,
    ConversationMapper,
    looks_like_llava,
)
from .rows import PRESETS, TABLE_PRESETS, RowMapper, TableMapper, known_presets

__all__ = [
    "ACCEPTED_FORMS",
    "ArrangedSource",
    "PositionalSource",
    "Source",
    "describe_forms",
    "image_root_for",
    "open_source",
    "parse_hf_spec",
]

ACCEPTED_FORMS = """accepted --source forms:
  scenes                                     the built-in offline world
  hf:<name or saved-dataset dir>[:config][@split]
                                             a Hugging Face data set (load_dataset / load_from_disk)
  <file>.parquet | <dir> | '<glob>.parquet'  parquet files (image column: bytes, {bytes, path} or a path)
  <file>.jsonl | <file>.json | <file>.csv    rows with question, answer and an image path
  <LLaVA file>.json | .jsonl                 rows with "conversations" (or source.preset: llava)
  <image folder>                             images plus metadata.jsonl (file_name, question, answer)"""

COMMON_OPTIONS = frozenset({"label", "shuffle_buffer"})
FILE_OPTIONS = frozenset({"turns", "json_key", "delimiter"})
_LABEL_CHARS = re.compile(r"[^a-z0-9._-]+")
_BUILDER_NAMES = frozenset({"parquet", "json", "csv", "imagefolder", "arrow", "text", "webdataset"})


#: the same, on one line, for error messages (a user's mistake gets a one-line answer)
FORMS_LINE = ("accepted --source forms: scenes | hf:<name or saved-dataset dir>[:config][@split] | .parquet file, "
              "folder or glob | .jsonl/.json/.csv row file | LLaVA .json/.jsonl | image folder with metadata.jsonl")


def describe_forms() -> str:
    return ACCEPTED_FORMS


def open_source(spec: SourceSpec, *, seed: int, limit: int | None) -> Source:
    """The Source for `spec`, in the order the run shards on. Raises SourceError for anything unreadable.

    Records are validated later, in the engine's workers, with
    `validate_record(record, policy, image_root=source.image_root)`.
    """
    text = (spec.spec or "").strip()
    if not text:
        raise SourceError("empty source spec; " + FORMS_LINE)
    # `columns.subject` names the column to cap by; caps read it from the row (meta keeps every column)
    subject_key = spec.subject_key or spec.columns.get("subject") or None
    subject_caps = spec.subject_caps
    if spec.preset == "llava-onevision":  # the Uni-Edit release's source mix, unless the config says otherwise
        subject_key = subject_key or LLAVA_ONEVISION_SUBJECT_KEY
        subject_caps = subject_caps or dict(LLAVA_ONEVISION_CAPS)
    if text == "scenes":
        inner = _open_scenes(spec, seed=seed, limit=limit)
    elif text.startswith("hf:"):
        inner = _open_hf(spec, text, subject_key)
    else:
        inner = _open_path(spec, text, subject_key)
    return ArrangedSource(
        inner,
        seed=seed,
        limit=limit,
        shuffle=spec.shuffle,
        subject_key=subject_key,
        subject_caps=subject_caps,
        shuffle_buffer=_shuffle_buffer(spec),
    )


def _shuffle_buffer(spec: SourceSpec) -> int:
    value = spec.options.get("shuffle_buffer", 1000)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SourceError(f"source.options.shuffle_buffer must be a positive integer, got {value!r}")
    return value


def _open_scenes(spec: SourceSpec, *, seed: int, limit: int | None) -> Source:
    from .scenes import ScenesSource  # imported lazily: the other forms never need the offline world

    options = {k: v for k, v in spec.options.items() if k not in COMMON_OPTIONS}
    try:
        return ScenesSource(count=limit or 300, seed=seed, defer_render=True, **options)
    except TypeError as exc:
        raise SourceError(f"scenes: invalid source.options ({exc})") from None


def _check_options(spec: SourceSpec, allowed: frozenset[str], form: str) -> None:
    unknown = set(spec.options) - allowed - COMMON_OPTIONS
    if unknown:
        raise SourceError(
            f"unknown source.options for {form}: {sorted(unknown)}; "
            f"known: {', '.join(sorted(allowed | COMMON_OPTIONS))}"
        )


def _label(spec: SourceSpec, default: str) -> str:
    raw = str(spec.options.get("label") or default)
    label = _LABEL_CHARS.sub("-", raw.lower()).strip("-.") or "source"
    return label


def _image_root(spec: SourceSpec, default: Path) -> Path:
    return Path(spec.image_root).expanduser().resolve() if spec.image_root else default.resolve()


def image_root_for(spec: SourceSpec) -> Path | None:
    """The directory relative image paths of this source resolve against — `source.image_root` of the
    opened source — computed without opening it (for workers that only have the config): `image_root`
    when set, else the row file's directory, the image folder, the parquet directory (or the common
    directory of a glob's files), the saved data set's directory, or the working directory for hub data.
    None for `scenes`, whose records carry their image bytes."""
    text = (spec.spec or "").strip()
    if text == "scenes":
        return None
    if spec.image_root:
        return _image_root(spec, Path.cwd())
    if text.startswith("hf:"):
        local = Path(parse_hf_spec(text)[0]).expanduser()
        return (local if local.is_dir() else Path.cwd()).resolve()
    if any(ch in text for ch in "*?["):
        paths = parquet_paths(text)
        return _common_dir(paths) if paths else Path.cwd().resolve()
    path = Path(text).expanduser()
    return (path if path.is_dir() else path.parent).resolve()


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


def _table_mapper(
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


# ----------------------------------------------------------------------------------------------- hf


def _open_hf(spec: SourceSpec, text: str, subject_key: str | None) -> Source:
    _check_options(spec, HF_OPTIONS | {"turns"}, "hf sources")
    name, config, split = parse_hf_spec(text)
    options = spec.options
    dataset = load_hf(name, config, split, options)
    local = Path(name)
    if name in _BUILDER_NAMES and options.get("data_files"):
        default_label = _first_file(options["data_files"]).stem
    else:
        default_label = local.name if local.exists() else name.rstrip("/").split("/")[-1]
    label = _label(spec, default_label)
    image_root = _image_root(spec, local if local.is_dir() else Path.cwd())
    columns = list(dataset.column_names) if dataset.column_names is not None else None

    join = None
    preset = PRESETS.get(spec.preset or "")
    if options.get("images"):
        images_name, images_config, images_split = parse_hf_spec(str(options["images"]))
        images = load_hf(
            images_name,
            images_config,
            images_split,
            {k: v for k, v in options.items() if k in ("cache_dir", "revision")},
        )
        join_on = options.get("join_on") or (preset.join_on if preset else None)
        if not join_on:
            raise SourceError(
                "source.options.images needs source.options.join_on (the column holding the image key)"
            )
        join = ImageJoin(images, key_column=str(options.get("image_key", "id")), on=str(join_on))

    try:
        schema = dataset.features.arrow_schema if getattr(dataset, "features", None) is not None else None
    except Exception:  # noqa: BLE001 - features of an odd data set: no list columns declared
        schema = None
    mapper = _table_mapper(spec, label=label, available=columns, subject_key=subject_key,
                           list_columns=list_columns_of(schema))
    if columns is not None:
        visible = columns + ([mapper.image_column] if join and mapper.image_column not in columns else [])
        mapper.check_columns(visible, text)  # type: ignore[arg-type]
    if bool(options.get("streaming")):
        return HFStreamingSource(
            dataset, mapper=mapper, label=label, image_root=image_root, join=join
        )
    return HFSource(
        dataset, mapper=mapper, label=label, image_root=image_root, join=join
    )


# -------------------------------------------------------------------------------------------- paths


def _open_path(spec: SourceSpec, text: str, subject_key: str | None) -> Source:
    path = Path(text).expanduser()
    if any(ch in text for ch in "*?["):
        paths = parquet_paths(text)
        if not paths:
            raise SourceError(f"no parquet files match '{text}'; {FORMS_LINE}")
        return _open_parquet(spec, paths, _common_dir(paths), subject_key)
    if not path.exists():
        raise SourceError(f"source not found: '{text}'; {FORMS_LINE}")
    if path.is_dir():
        return _open_dir(spec, path, subject_key)
    require_regular_file(path, "source")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _open_parquet(spec, [path], path.parent, subject_key)
    if suffix in ROW_FILE_SUFFIXES:
        return _open_row_file(spec, path, path.parent, subject_key)
    raise SourceError(f"unsupported source file type '{suffix or path.name}'; {FORMS_LINE}")


def _open_dir(spec: SourceSpec, path: Path, subject_key: str | None) -> Source:
    if is_saved_dataset(path):
        return _open_hf(spec, f"hf:{path}", subject_key)
    for name in METADATA_FILES:
        if (path / name).is_file():
            return _open_image_folder(spec, path / name, subject_key)
    paths = parquet_paths(str(path))
    if paths:
        return _open_parquet(spec, paths, path, subject_key)
    raise SourceError(
        f"'{path}' is a directory but not a saved data set, an image folder with "
        f"{' or '.join(METADATA_FILES)}, or a directory of .parquet files; {FORMS_LINE}"
    )


def _open_parquet(spec: SourceSpec, paths: list[Path], root: Path, subject_key: str | None) -> Source:
    _check_options(spec, frozenset({"turns"}), "parquet sources")
    import pyarrow.parquet as pq

    try:
        schema = pq.ParquetFile(paths[0]).schema_arrow
    except Exception as exc:  # noqa: BLE001
        raise SourceError(f"{paths[0]}: not a readable parquet file ({exc})") from None
    columns = schema.names
    default_label = paths[0].stem if len(paths) == 1 else root.name
    label = _label(spec, default_label)
    mapper = _table_mapper(spec, label=label, available=columns, subject_key=subject_key,
                           list_columns=list_columns_of(schema))
    return ParquetSource(paths, mapper=mapper, label=label, image_root=_image_root(spec, root))


def _open_row_file(spec: SourceSpec, path: Path, root: Path, subject_key: str | None) -> Source:
    _check_options(spec, FILE_OPTIONS, "row files")
    kind = row_file_kind(path)
    leading = leading_objects(path, kind, spec.options)
    first = leading[0] if leading else first_row(path, kind, spec.options)
    label = _label(spec, path.stem)
    mapper = _table_mapper(spec, label=label, available=None, subject_key=subject_key, first=first)
    if isinstance(mapper, TableMapper) and leading:
        # the columns must fit some of the first rows; rows that lack them are rejects of their own
        problems: list[SourceError] = []
        for row in leading:
            try:
                mapper.check_columns(list(row), f"{path} (first rows)", required=("question", "answer"))
                break
            except SourceError as exc:
                problems.append(exc)
        else:
            raise problems[0]
    return RowFileSource(
        path, mapper=mapper, label=label, image_root=_image_root(spec, root), options=spec.options
    )


def _open_image_folder(spec: SourceSpec, metadata: Path, subject_key: str | None) -> Source:
    _check_options(spec, FILE_OPTIONS, "image folders")
    folder = metadata.parent
    columns = {"image": "file_name", **spec.columns}
    folder_spec = spec.model_copy(update={"columns": columns})
    label = _label(spec, folder.name)
    mapper = _table_mapper(folder_spec, label=label, available=None, subject_key=subject_key)
    return RowFileSource(
        metadata, mapper=mapper, label=label, image_root=_image_root(spec, folder), options=spec.options
    )


def _first_file(data_files: Any) -> Path:
    """The first path in a `data_files` option (a string, a list, or a {split: files} mapping)."""
    first = data_files
    while isinstance(first, (Mapping, list, tuple)) and first:
        first = next(iter(first.values())) if isinstance(first, Mapping) else first[0]
    return Path(str(first))


def _common_dir(paths: list[Path]) -> Path:
    parents = [p.resolve().parent for p in paths]
    common = parents[0]
    for parent in parents[1:]:
        while common != parent and common not in parent.parents:
            common = common.parent
    return common
