"""Opening VQA sources: `open_source` turns a SourceSpec (`scenes`, `hf:…`, a path, or what a plugin class opens)
into a Source with the deterministic order the engine shards on (caps, shuffle, limit applied). Which class
opens a spec is the registry's answer (registry.py)."""

from __future__ import annotations

from pathlib import Path

from ..core.config import SourceSpec
from ..core.errors import SourceError
from .arrange import ArrangedSource, PositionalSource
from .base import Source
from .files import METADATA_FILES
from .hf import parse_hf_spec
from .llava import LLAVA_ONEVISION_CAPS, LLAVA_ONEVISION_SUBJECT_KEY
from .opening import FORMS_LINE, spec_text
from .registry import register_source, source_class

__all__ = [
    "ACCEPTED_FORMS",
    "ArrangedSource",
    "PositionalSource",
    "Source",
    "describe_forms",
    "image_root_for",
    "open_source",
    "parse_hf_spec",
    "register_source",
    "source_class",
]

ACCEPTED_FORMS = """accepted --source forms:
  scenes                                     the built-in offline world
  hf:<name or saved-dataset dir>[:config][@split]
                                             a Hugging Face data set (load_dataset / load_from_disk)
  <file>.parquet | <dir> | '<glob>.parquet'  parquet files (image column: bytes, {bytes, path} or a path)
  <file>.jsonl | <file>.json | <file>.csv    rows with question, answer and an image path
  <LLaVA file>.json | .jsonl                 rows with "conversations" (or source.preset: llava)
  <image folder>                             images plus metadata.jsonl (file_name, question, answer)
  a plugin's own form                        with source.type: package.module:Class (sources/registry.py)"""


def describe_forms() -> str:
    return ACCEPTED_FORMS


def open_source(spec: SourceSpec, *, seed: int, limit: int | None) -> Source:
    """The Source for `spec`, in the order the run shards on. Raises SourceError for anything unreadable.

    Records are validated later, in the engine's workers, with
    `validate_record(record, policy, image_root=source.image_root)`.
    """
    text = spec_text(spec)
    if not text and not spec.type:
        raise SourceError("empty source spec; " + FORMS_LINE)
    # `columns.subject` names the column to cap by; caps read it from the row (meta keeps every column)
    subject_key = spec.subject_key or spec.columns.get("subject") or None
    subject_caps = spec.subject_caps
    if spec.preset == "llava-onevision":  # the Uni-Edit release's source mix, unless the config says otherwise
        subject_key = subject_key or LLAVA_ONEVISION_SUBJECT_KEY
        subject_caps = subject_caps or dict(LLAVA_ONEVISION_CAPS)
    cls = source_class(spec)
    if cls is None:
        raise _unclaimed(text)
    try:
        inner = cls.open(spec, seed=seed, limit=limit, subject_key=subject_key)
    except OSError as exc:
        raise SourceError(f"source '{text}' cannot be read: {exc.strerror or exc}") from None
    return ArrangedSource(
        inner,
        seed=seed,
        limit=limit,
        shuffle=spec.shuffle,
        subject_key=subject_key,
        subject_caps=subject_caps,
        shuffle_buffer=_shuffle_buffer(spec),
    )


def _unclaimed(text: str) -> SourceError:
    """Why no source class opens `text`, in words that say what to give instead."""
    path = Path(text).expanduser()
    if not path.exists():
        return SourceError(f"source not found: '{text}'; {FORMS_LINE}")
    if path.is_dir():
        return SourceError(
            f"'{path}' is a directory but not a saved data set, an image folder with "
            f"{' or '.join(METADATA_FILES)}, or a directory of .parquet files; {FORMS_LINE}"
        )
    if not path.is_file():  # reading a FIFO, socket or device would block or never end
        return SourceError(f"source '{text}' is not a regular file (a FIFO, socket or device); give a file or a folder")
    return SourceError(f"unsupported source file type '{path.suffix.lower() or path.name}'; {FORMS_LINE}")


def _shuffle_buffer(spec: SourceSpec) -> int:
    value = spec.options.get("shuffle_buffer", 1000)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SourceError(f"source.options.shuffle_buffer must be a positive integer, got {value!r}")
    return value


def image_root_for(spec: SourceSpec) -> Path | None:
    """The directory relative image paths of this source resolve against — `source.image_root` of the
    opened source — computed without opening it (for workers that only have the config): the class's
    `image_root_of` (sources/base.py): `image_root` when set, else the row file's directory, the image
    folder, the parquet directory (or the common directory of a glob's files), the saved data set's
    directory, or the working directory for hub data. None for `scenes`, whose records carry their scene."""
    cls = source_class(spec)
    return (cls or Source).image_root_of(spec)
