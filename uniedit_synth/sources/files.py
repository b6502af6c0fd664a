"""Local file sources: JSONL / JSON / CSV row files, image folders with a `metadata.jsonl` sidecar, and
parquet (file, directory or glob) read one row group at a time."""

from __future__ import annotations

import glob as globlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.config import SourceSpec
from ..core.errors import SourceError, UniEditError
from ..core.records import VQARecord, content_key
from .arrange import PositionalSource, block_shuffled_positions, subject_of
from .opening import (
    FILE_OPTIONS,
    FORMS_LINE,
    check_options,
    common_dir,
    image_root_from,
    is_glob,
    label_for,
    list_columns_of,
    spec_text,
    table_mapper,
)
from .rowfiles import (
    BadRow,
    csv_header,
    iter_csv,
    iter_json_array,
    iter_jsonl,
    json_top_level,
    read_csv_at,
    read_json_value_at,
    read_jsonl_at,
)
from .rows import RowMapper, TableMapper, json_safe


def require_regular_file(path: Path, what: str, error: type[UniEditError] = SourceError) -> Path:
    """`path`, which must be a regular file: reading a FIFO, socket or device would block or never end."""
    if not path.is_file():
        raise error(f"{what} '{path}' is not a regular file (a FIFO, socket or device); give a file or a folder")
    return path


ROW_FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
JSON_LIST_KEYS = ("data", "questions", "annotations", "rows", "records", "items", "samples")


def row_file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".json":
        with path.open("rb") as fh:
            first = json_top_level(fh)
        if first == b"[":
            return "json"
        if first == b"{":
            return "json-object"
        raise SourceError(f"{path}: not a JSON array or object")
    raise SourceError(f"{path}: unsupported row file type '{suffix}'")


def first_row(path: Path, kind: str, options: Mapping[str, Any]) -> Any:
    """The first parsed row of a row file (for format detection), or None."""
    for _, row in _iter_rows(path, kind, options):
        return row
    return None


def leading_objects(path: Path, kind: str, options: Mapping[str, Any], limit: int = 50) -> list[Mapping[str, Any]]:
    """The rows among the first `limit` that parsed as objects: format detection and the column check look at
    these, so one malformed first row is that row's reject, not the whole source's error."""
    rows: list[Mapping[str, Any]] = []
    for position, (_, row) in enumerate(_iter_rows(path, kind, options)):
        if position >= limit:
            break
        if isinstance(row, Mapping) and not isinstance(row, BadRow):
            rows.append(row)
    return rows


def _iter_rows(path: Path, kind: str, options: Mapping[str, Any]) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as fh:
        if kind == "jsonl":
            yield from iter_jsonl(fh)
        elif kind == "json":
            yield from iter_json_array(fh)
        elif kind == "csv":
            yield from iter_csv(fh, _delimiter(path, options))
        else:  # a JSON object holding the rows under one key: parsed whole (documented limit)
            yield from enumerate(_rows_in_json_object(fh, path, options))


def _delimiter(path: Path, options: Mapping[str, Any]) -> str:
    return str(options.get("delimiter") or ("\t" if path.suffix.lower() == ".tsv" else ","))


def _rows_in_json_object(fh: IO[bytes], path: Path, options: Mapping[str, Any]) -> list[Any]:
    import json

    try:
        data = json.loads(fh.read().decode("utf-8", "surrogateescape"))
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}: malformed JSON: {exc.msg} at byte {exc.pos}") from None
    key = options.get("json_key")
    if key is None:
        key = next((k for k in JSON_LIST_KEYS if isinstance(data.get(k), list)), None)
    if key is None or not isinstance(data.get(key), list):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        raise SourceError(
            f"{path}: a JSON object source needs its rows in a list; set source.options.json_key "
            f"(lists found under: {', '.join(lists) or 'none'})"
        )
    return data[key]


def bad_row_record(label: str, bad: BadRow, position: int) -> VQARecord:
    key = content_key(bad.raw) if bad.raw else f"row-{position}"
    return VQARecord(id=f"{label}/{key}", source=label, invalid=bad.detail)


def map_row(
    mapper: RowMapper, label: str, row: Any, position: int, adapt: Callable[[Any], Any] | None = None
) -> list[VQARecord]:
    """The records of one raw row (after `adapt`, a source's own fix-up). Whatever goes wrong with this one
    row, it becomes one invalid record (an `invalid_input` reject), never an exception that ends the run."""
    if isinstance(row, BadRow):
        return [bad_row_record(label, row, position)]
    if not isinstance(row, Mapping):
        raw = repr(json_safe(row)).encode()
        return [bad_row_record(label, BadRow(f"row is not an object ({type(row).__name__})", raw), position)]
    try:
        return mapper.map(adapt(row) if adapt is not None else row)
    except Exception as exc:  # noqa: BLE001 - one row's odd values must not stop the source
        try:
            raw = repr(json_safe(row)).encode()
        except Exception:  # noqa: BLE001
            raw = b""
        detail = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {detail[0]}" if detail else type(exc).__name__
        return [bad_row_record(label, BadRow(f"row cannot be read: {reason[:300]}", raw), position)]


def light_reason(mapper: RowMapper, columns: Sequence[str], id_values: Callable[[str], Iterable[Any]]) -> str | None:
    """Why the rows of a table cannot be read without their image column (None: they can). Without the
    images a row's id must be its own: a row with no id of its own is keyed by a hash that includes its
    image bytes (rows.content_key), so only the whole row gives it. `id_values(column)` yields that column's
    Arrow chunks (ids only: a small read)."""
    import pyarrow.compute as pc

    image = getattr(mapper, "image_column", None)
    id_column = getattr(mapper, "id_column", None) or (getattr(mapper, "mapping", None) or {}).get("id")
    if not image or image not in columns:
        return "no image column to leave out"
    if not id_column or id_column not in columns:
        return "no id column: a row's id is a hash of its image, so the driver reads whole rows"
    for chunk in id_values(id_column):
        if chunk.null_count:
            return f"the id column '{id_column}' has empty values, keyed by image hashes: the driver reads whole rows"
        if pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type):
            if pc.any(pc.equal(pc.utf8_trim_whitespace(chunk), "")).as_py():
                return f"the id column '{id_column}' has empty values, keyed by image hashes: the driver reads whole rows"
    return None


class RowFileSource(PositionalSource):
    """Rows of one JSONL, JSON (array) or CSV file through a row mapper. Sequential reading streams the
    file; shuffling and caps use an index of row byte offsets (8 bytes a row) and seek."""

    def __init__(
        self,
        path: Path,
        *,
        mapper: RowMapper,
        label: str,
        image_root: Path,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.kind = row_file_kind(path)
        self.mapper = mapper
        self.label = label
        self.image_root = image_root
        self.options = dict(options or {})
        self._offsets: np.ndarray | None = None
        self._header: list[str] | None = None
        if self.kind == "csv":
            with path.open("rb") as fh:
                self._header = csv_header(fh, _delimiter(path, self.options))
            mapper.check_columns(self._header, str(path))
        elif self.kind == "json-object":
            with path.open("rb") as fh:
                self._rows = _rows_in_json_object(fh, path, self.options)

    def lighten(self) -> str | None:
        return ("rows hold image paths: the driver reads the rows' text (a shard at a time), the workers read "
                "the images")

    def _offset_index(self) -> np.ndarray:
        if self._offsets is None:
            if self.kind == "json-object":
                self._offsets = np.arange(len(self._rows), dtype=np.int64)
            else:
                self._offsets = np.fromiter(
                    (offset for offset, _ in _iter_rows(self.path, self.kind, self.options)), dtype=np.int64
                )
        return self._offsets

    def __len__(self) -> int:
        return len(self._offset_index())

    def __iter__(self) -> Iterator[VQARecord]:
        if self.kind == "json-object":
            for position, row in enumerate(self._rows):
                yield from map_row(self.mapper, self.label, row, position)
            return
        for position, (_, row) in enumerate(_iter_rows(self.path, self.kind, self.options)):
            yield from map_row(self.mapper, self.label, row, position)

    def _read_at(self, fh: IO[bytes], position: int) -> Any:
        offset = int(self._offset_index()[position])
        if self.kind == "jsonl":
            return read_jsonl_at(fh, offset)
        if self.kind == "json":
            return read_json_value_at(fh, offset)
        if self.kind == "csv":
            assert self._header is not None
            return read_csv_at(fh, offset, self._header, _delimiter(self.path, self.options))
        return self._rows[position]

    def records_at(self, positions: Iterable[int]) -> Iterator[VQARecord]:
        with self.path.open("rb") as fh:
            for position in positions:
                yield from map_row(self.mapper, self.label, self._read_at(fh, position), position)

    def subjects(self, key: str) -> Sequence[Any]:
        values: list[Any] = []
        if self.kind == "json-object":
            rows: Iterable[Any] = self._rows
        else:
            rows = (row for _, row in _iter_rows(self.path, self.kind, self.options))
        for position, row in enumerate(rows):
            if isinstance(row, Mapping) and key in row:
                values.append(row[key])
            else:
                records = map_row(self.mapper, self.label, row, position)
                values.append(subject_of(records[0], key) if records else None)
        return values

    def estimated_len(self) -> int | None:
        return len(self) if self._offsets is not None else None

    # -- the registry's side (sources/base.py) ---------------------------------------------------------------
    @classmethod
    def opens(cls, spec: str) -> bool:
        """A .jsonl / .json / .csv / .tsv file, or an image folder with a metadata.jsonl (or .csv) sidecar."""
        path = Path(spec).expanduser()
        if path.is_dir():
            return any((path / name).is_file() for name in METADATA_FILES)
        return path.is_file() and path.suffix.lower() in ROW_FILE_SUFFIXES

    @classmethod
    def open(cls, spec: SourceSpec, *, seed: int, limit: int | None, subject_key: str | None) -> RowFileSource:
        path = Path(spec_text(spec)).expanduser()
        if path.is_dir():
            metadata = next((path / name for name in METADATA_FILES if (path / name).is_file()), None)
            if metadata is None:
                raise SourceError(f"'{path}' is not an image folder: it has no {' or '.join(METADATA_FILES)}")
            return cls._open_image_folder(spec, metadata, subject_key)
        check_options(spec, FILE_OPTIONS, "row files")
        kind = row_file_kind(path)
        leading = leading_objects(path, kind, spec.options)
        first = leading[0] if leading else first_row(path, kind, spec.options)
        label = label_for(spec, path.stem)
        mapper = table_mapper(spec, label=label, available=None, subject_key=subject_key, first=first)
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
        return cls(path, mapper=mapper, label=label, image_root=image_root_from(spec, path.parent),
                   options=spec.options)

    @classmethod
    def _open_image_folder(cls, spec: SourceSpec, metadata: Path, subject_key: str | None) -> RowFileSource:
        check_options(spec, FILE_OPTIONS, "image folders")
        folder = metadata.parent
        columns = {"image": "file_name", **spec.columns}
        folder_spec = spec.model_copy(update={"columns": columns})
        label = label_for(spec, folder.name)
        mapper = table_mapper(folder_spec, label=label, available=None, subject_key=subject_key)
        return cls(metadata, mapper=mapper, label=label, image_root=image_root_from(spec, folder),
                   options=spec.options)

    @classmethod
    def raw_rows(cls, path: Path, options: Mapping[str, Any] | None = None) -> Iterator[Mapping[str, Any]]:
        options = options or {}
        kind = row_file_kind(path)
        for _, row in _iter_rows(path, kind, options):
            if isinstance(row, BadRow):
                raise SourceError(f"{path}: {row.detail}")
            if isinstance(row, Mapping):
                yield row

# ------------------------------------------------------------------------------------------ parquet


def parquet_paths(spec: str) -> list[Path]:
    """The parquet files named by a file, a directory (searched recursively) or a glob; sorted."""
    if is_glob(spec):
        paths = [Path(p) for p in globlib.glob(spec, recursive=True)]
    else:
        path = Path(spec)
        paths = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    return sorted(p for p in paths if p.is_file() and p.suffix.lower() == ".parquet")


class ParquetSource(PositionalSource):
    """Rows of one or more parquet files, read one row group at a time (memory: one row group).

    Image cells may be raw bytes, HF `Image` structs `{bytes, path}`, or path strings relative to the image
    root. Shuffling permutes row groups, then rows within each group, so each group is read once."""

    def __init__(self, paths: list[Path], *, mapper: RowMapper, label: str, image_root: Path) -> None:
        if not paths:
            raise SourceError("no parquet files found")
        self.paths = paths
        self.mapper = mapper
        self.label = label
        self.image_root = image_root
        sizes: list[int] = []
        self._groups: list[tuple[int, int]] = []
        columns: list[str] | None = None
        for file_index, path in enumerate(paths):
            try:
                meta = pq.ParquetFile(path)
            except (OSError, pa.ArrowException) as exc:
                raise SourceError(f"{path}: not a readable parquet file ({exc})") from None
            names = meta.schema_arrow.names
            if columns is None:
                columns = names
                mapper.check_columns(names, str(path))
            elif set(names) != set(columns):
                raise SourceError(f"{path}: columns differ from {paths[0].name} ({names} vs {columns})")
            for group in range(meta.metadata.num_row_groups):
                sizes.append(meta.metadata.row_group(group).num_rows)
                self._groups.append((file_index, group))
        self.columns = columns or []
        self._sizes = np.asarray(sizes, dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._sizes)]).astype(np.int64)
        self._cache: tuple[int, pa.Table] | None = None
        self._files: dict[int, pq.ParquetFile] = {}

    def __len__(self) -> int:
        return int(self._starts[-1])

    def lighten(self) -> str | None:
        def ids(column: str) -> Iterator[Any]:
            for path in self.paths:
                yield from pq.read_table(path, columns=[column]).column(column).chunks

        reason = light_reason(self.mapper, self.columns, ids)
        if reason is None:
            self.light = True
            self._cache = None
        return reason

    def _read_columns(self) -> list[str] | None:
        image = getattr(self.mapper, "image_column", None)
        return [c for c in self.columns if c != image] if self.light else None

    def _group_table(self, group: int) -> pa.Table:
        if self._cache is not None and self._cache[0] == group:
            return self._cache[1]
        file_index, row_group = self._groups[group]
        handle = self._files.get(file_index)
        if handle is None:
            self._files.clear()  # keep one file open at a time
            handle = self._files[file_index] = pq.ParquetFile(self.paths[file_index])
        table = handle.read_row_group(row_group, columns=self._read_columns())
        self._cache = (group, table)
        return table

    def records_at(self, positions: Iterable[int]) -> Iterator[VQARecord]:
        try:
            for position in positions:
                group = int(np.searchsorted(self._starts, position, side="right")) - 1
                table = self._group_table(group)
                row = table.slice(position - int(self._starts[group]), 1).to_pylist()[0]
                yield from self._tagged(map_row(self.mapper, self.label, row, position), position)
        finally:
            self._cache = None
            self._files.clear()

    def __iter__(self) -> Iterator[VQARecord]:
        position = 0
        for group in range(len(self._groups)):
            table = self._group_table(group)
            for batch in table.to_batches(max_chunksize=64):
                for row in batch.to_pylist():
                    yield from self._tagged(map_row(self.mapper, self.label, row, position), position)
                    position += 1
        self._cache = None
        self._files.clear()

    def shuffled_positions(self, seed: int) -> np.ndarray:
        return block_shuffled_positions(self._sizes.tolist(), seed)

    def subjects(self, key: str) -> Sequence[Any]:
        if key not in self.columns:
            return super().subjects(key)
        values: list[Any] = []
        for path in self.paths:
            values.extend(pq.read_table(path, columns=[key]).column(key).to_pylist())
        return values

    def estimated_len(self) -> int | None:
        return len(self)

    # -- the registry's side (sources/base.py) ---------------------------------------------------------------
    @classmethod
    def opens(cls, spec: str) -> bool:
        """A .parquet file, a folder holding .parquet files (searched recursively), or a glob."""
        if is_glob(spec):
            return True
        path = Path(spec).expanduser()
        if path.is_dir():  # the first file found answers (a worker asks this of a folder of thousands)
            return any(p.is_file() and p.suffix.lower() == ".parquet" for p in path.rglob("*.parquet"))
        return path.is_file() and path.suffix.lower() == ".parquet"

    @classmethod
    def open(cls, spec: SourceSpec, *, seed: int, limit: int | None, subject_key: str | None) -> ParquetSource:
        text = spec_text(spec)
        paths = parquet_paths(text if is_glob(text) else str(Path(text).expanduser()))
        if not paths:
            raise SourceError(f"no parquet files match '{text}'; {FORMS_LINE}")
        path = Path(text).expanduser()
        root = common_dir(paths) if is_glob(text) else path if path.is_dir() else path.parent
        check_options(spec, frozenset({"turns"}), "parquet sources")
        try:
            schema = pq.ParquetFile(paths[0]).schema_arrow
        except Exception as exc:  # noqa: BLE001
            raise SourceError(f"{paths[0]}: not a readable parquet file ({exc})") from None
        columns = schema.names
        default_label = paths[0].stem if len(paths) == 1 else root.name
        label = label_for(spec, default_label)
        mapper = table_mapper(spec, label=label, available=columns, subject_key=subject_key,
                              list_columns=list_columns_of(schema))
        return cls(paths, mapper=mapper, label=label, image_root=image_root_from(spec, root))

    @classmethod
    def image_root_of(cls, spec: SourceSpec) -> Path | None:
        text = spec_text(spec)
        if is_glob(text) and not spec.image_root:
            paths = parquet_paths(text)
            return common_dir(paths) if paths else Path.cwd().resolve()
        return super().image_root_of(spec)

    @classmethod
    def raw_rows(cls, path: Path, options: Mapping[str, Any] | None = None) -> Iterator[Mapping[str, Any]]:
        try:
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=64):
                yield from batch.to_pylist()
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{path}: not a readable parquet file ({exc})") from None
