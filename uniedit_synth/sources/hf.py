"""Hugging Face `datasets` sources: hub data sets, saved data sets (`save_to_disk`) and local builder data
(`hf:parquet` + `data_files`), map-style or streaming. Rows are read as Arrow, so images stay undecoded
bytes until validation."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.config import SourceSpec
from ..core.errors import SourceError
from ..core.records import VQARecord
from .arrange import PositionalSource
from .base import Source
from .files import light_reason, map_row
from .opening import check_options, image_root_from, label_for, list_columns_of, spec_text, table_mapper
from .rows import PRESETS, RowMapper

HF_OPTIONS = frozenset(
    {"streaming", "data_files", "data_dir", "revision", "cache_dir", "images", "image_key", "join_on"}
)
SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_BUILDER_NAMES = frozenset({"parquet", "json", "csv", "imagefolder", "arrow", "text", "webdataset"})
_BATCH = 64


def parse_hf_spec(text: str) -> tuple[str, str | None, str | None]:
    """`hf:<name or path>[:config][@split]` → (name, config, split)."""
    body = text[3:] if text.startswith("hf:") else text
    split: str | None = None
    if "@" in body:
        body, split = body.rsplit("@", 1)
        split = split or None
    config: str | None = None
    if ":" in body:
        head, tail = body.rsplit(":", 1)
        if tail and "/" not in tail and head:
            body, config = head, tail
    if not body:
        raise SourceError(f"'{text}': missing data set name; use hf:<name or path>[:config][@split]")
    return body, config, split


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / marker).exists() for marker in SAVED_DATASET_MARKERS)


def load_hf(name: str, config: str | None, split: str | None, options: Mapping[str, Any]) -> Any:
    """A `datasets.Dataset` (or `IterableDataset` when streaming) for one split."""
    import datasets

    streaming = bool(options.get("streaming", False))
    where = f"hf:{name}" + (f":{config}" if config else "") + (f"@{split}" if split else "")
    try:
        if is_saved_dataset(Path(name)):
            loaded = datasets.load_from_disk(name)
            if streaming:
                loaded = (
                    loaded.to_iterable_dataset()
                    if isinstance(loaded, datasets.Dataset)
                    else datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in loaded.items()})
                )
        else:
            kwargs: dict[str, Any] = {"streaming": streaming}
            for key in ("data_files", "data_dir", "revision", "cache_dir"):
                if options.get(key) is not None:
                    kwargs[key] = options[key]
            loaded = datasets.load_dataset(name, config, split=split, **kwargs)
    except SourceError:
        raise
    except FileNotFoundError as exc:
        raise SourceError(f"{where}: data set not found ({exc})") from None
    except Exception as exc:  # noqa: BLE001 — datasets raises many types (hub, builder, config errors)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"{where}: cannot load the data set: {message}") from None
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        splits = list(loaded.keys())
        if split is not None:
            if split not in loaded:
                raise SourceError(f"{where}: no split '{split}'; splits: {', '.join(splits)}")
            return loaded[split]
        if len(splits) == 1:
            return loaded[splits[0]]
        if "train" in loaded:
            return loaded["train"]
        raise SourceError(f"{where}: several splits ({', '.join(splits)}); pick one with @<split>")
    return loaded


def _class_label_names(features: Any) -> dict[str, list[str]]:
    from datasets import ClassLabel

    if not features:
        return {}
    return {name: list(f.names) for name, f in features.items() if isinstance(f, ClassLabel)}


class ImageJoin:
    """Images kept in a separate table (GQA's `*_images` configs), looked up by key for each row."""

    def __init__(self, images: Any, *, key_column: str, on: str, image_column: str = "image") -> None:
        missing = [c for c in (key_column, image_column) if c not in images.column_names]
        if missing:
            raise SourceError(
                f"images table lacks column(s) {missing}; it has {images.column_names} "
                "(set source.options.image_key to its key column)"
            )
        self.on = on
        self.image_column = image_column
        self._arrow = images.with_format("arrow")
        keys = images.select_columns([key_column]).with_format("arrow")[:].column(key_column).to_pylist()
        self._index = {str(key): position for position, key in enumerate(keys)}

    def image_for(self, key: Any) -> Any:
        position = self._index.get(str(key))
        if position is None:
            return None
        return self._arrow[position].column(self.image_column)[0].as_py()


class _RowAdapter:
    """Raw Arrow rows → the values a mapper expects: class labels as names, joined images filled in."""

    def __init__(self, features: Any, join: ImageJoin | None, image_column: str | None) -> None:
        self.class_labels = _class_label_names(features)
        self.join = join
        self.image_column = image_column

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        for column, names in self.class_labels.items():
            value = row.get(column)
            if isinstance(value, int) and 0 <= value < len(names):
                row[column] = names[value]
        if self.join is not None and self.image_column and row.get(self.image_column) is None:
            row[self.image_column] = self.join.image_for(row.get(self.join.on))
        return row


class HFSource(PositionalSource):
    """A map-style `datasets.Dataset`: random access by position, Arrow rows in batches of 64."""

    def __init__(
        self,
        dataset: Any,
        *,
        mapper: RowMapper,
        label: str,
        image_root: Path,
        join: ImageJoin | None = None,
    ) -> None:
        self.dataset = dataset
        self.mapper = mapper
        self.label = label
        self.image_root = image_root
        self._arrow = dataset.with_format("arrow")
        self._adapt = _RowAdapter(dataset.features, join, mapper.image_column)

    # -- the registry's side (sources/base.py) ---------------------------------------------------------------
    @classmethod
    def opens(cls, spec: str) -> bool:
        """`hf:<name or saved-dataset dir>[:config][@split]`, or the folder of a saved data set."""
        return spec.startswith("hf:") or is_saved_dataset(Path(spec).expanduser())

    @classmethod
    def open(cls, spec: SourceSpec, *, seed: int, limit: int | None, subject_key: str | None) -> Source:
        """An HFSource, or an HFStreamingSource with `source.options.streaming`."""
        text = spec_text(spec)
        text = text if text.startswith("hf:") else f"hf:{Path(text).expanduser()}"
        check_options(spec, HF_OPTIONS | {"turns"}, "hf sources")
        name, config, split = parse_hf_spec(text)
        options = spec.options
        dataset = load_hf(name, config, split, options)
        local = Path(name)
        if name in _BUILDER_NAMES and options.get("data_files"):
            default_label = _first_file(options["data_files"]).stem
        else:
            default_label = local.name if local.exists() else name.rstrip("/").split("/")[-1]
        label = label_for(spec, default_label)
        image_root = image_root_from(spec, local if local.is_dir() else Path.cwd())
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
        mapper = table_mapper(spec, label=label, available=columns, subject_key=subject_key,
                              list_columns=list_columns_of(schema))
        if columns is not None:
            visible = columns + ([mapper.image_column] if join and mapper.image_column not in columns else [])
            mapper.check_columns(visible, text)  # type: ignore[arg-type]
        if bool(options.get("streaming")):
            return HFStreamingSource(dataset, mapper=mapper, label=label, image_root=image_root, join=join)
        return cls(dataset, mapper=mapper, label=label, image_root=image_root, join=join)

    @classmethod
    def image_root_of(cls, spec: SourceSpec) -> Path | None:
        if spec.image_root:
            return super().image_root_of(spec)
        text = spec_text(spec)
        local = Path(parse_hf_spec(text)[0] if text.startswith("hf:") else text).expanduser()
        return (local if local.is_dir() else Path.cwd()).resolve()

    def __len__(self) -> int:
        return len(self.dataset)

    def lighten(self) -> str | None:
        if self._adapt.join is not None:
            return "images joined from another table: the driver reads whole rows"
        columns = list(self.dataset.column_names)

        def ids(column: str) -> Any:
            return self.dataset.select_columns([column]).with_format("arrow")[:].column(column).chunks

        reason = light_reason(self.mapper, columns, ids)
        if reason is None:
            image = getattr(self.mapper, "image_column", None)
            self._light_arrow = self.dataset.select_columns([c for c in columns if c != image]).with_format("arrow")
            self.light = True
        return reason

    def records_at(self, positions: Iterable[int]) -> Iterator[VQARecord]:
        iterator = iter(positions)
        table = self._light_arrow if self.light else self._arrow
        while True:
            chunk = list(itertools.islice(iterator, _BATCH))
            if not chunk:
                return
            rows = table[chunk].to_pylist()
            for position, row in zip(chunk, rows, strict=True):
                yield from self._tagged(map_row(self.mapper, self.label, row, position, adapt=self._adapt), position)

    def subjects(self, key: str) -> Sequence[Any]:
        if key not in self.dataset.column_names:
            return super().subjects(key)
        values = self.dataset.select_columns([key]).with_format("arrow")[:].column(key).to_pylist()
        names = self._adapt.class_labels.get(key)
        if names:
            values = [names[v] if isinstance(v, int) and 0 <= v < len(names) else v for v in values]
        return values

    def estimated_len(self) -> int | None:
        return len(self.dataset)

class HFStreamingSource(Source):
    """A streaming `datasets.IterableDataset` (read in order; shuffling uses a bounded buffer)."""

    def __init__(
        self,
        dataset: Any,
        *,
        mapper: RowMapper,
        label: str,
        image_root: Path,
        join: ImageJoin | None = None,
    ) -> None:
        self.dataset = dataset.decode(False) if hasattr(dataset, "decode") else dataset
        self.mapper = mapper
        self.label = label
        self.image_root = image_root
        self._adapt = _RowAdapter(getattr(dataset, "features", None), join, mapper.image_column)

    def __iter__(self) -> Iterator[VQARecord]:
        for position, row in enumerate(self.dataset):
            yield from map_row(self.mapper, self.label, dict(row), position, adapt=self._adapt)


def _first_file(data_files: Any) -> Path:
    """The first path in a `data_files` option (a string, a list, or a {split: files} mapping)."""
    first = data_files
    while isinstance(first, (Mapping, list, tuple)) and first:
        first = next(iter(first.values())) if isinstance(first, Mapping) else first[0]
    return Path(str(first))
