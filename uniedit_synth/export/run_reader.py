"""Reading a finished run directory: checking it is a run, listing its shards, streaming its rows as Samples."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ExportError
from ..core.records import SAMPLE_SCHEMA, Sample, row_to_sample
from ..run.fs import is_uri
from ..run.store import RunDir

#: columns an export cannot do without; anything else in SAMPLE_SCHEMA is optional for older runs
REQUIRED_COLUMNS = ("id", "task_category", "edit_instruction", "source_image", "edited_image", "accepted")


@dataclass(frozen=True)
class RowRef:
    """Where a row lives: a shard file (relative to the run) and the row's index in it (to read it again later)."""

    path: str
    index: int


class RunReader:
    """A run directory as store.RunDir lays it out (`data/shard-*.parquet`, `rejects/shard-*.parquet`, `run.json`,
    the manifest), opened read-only: no lock is taken, so a run can be exported while it goes on (only its
    finished shards are seen). The run may be a local directory or a pyarrow filesystem URI (s3://…); `root`
    is its local Path, or None for a URI, and `label` says where it is in messages."""

    def __init__(self, run_dir: str | Path) -> None:
        remote = is_uri(run_dir)
        self.root: Path | None = None if remote else Path(run_dir).expanduser()
        if self.root is not None:
            if not self.root.exists():
                raise ExportError(
                    f"run directory {self.root} does not exist; pass the --out directory of `uniedit synth`"
                )
            if not self.root.is_dir():
                raise ExportError(f"{self.root} is a file, not a run directory")
        self.run_dir = RunDir(self.root if self.root is not None else str(run_dir))
        self.fs = self.run_dir.fs
        self.label = str(self.root.resolve()) if self.root is not None else self.run_dir.display
        if not (self.fs.exists("data") or self.run_dir.is_run()):
            raise ExportError(
                f"{self.label} is not a uniedit run (no data/, run.json or manifest); "
                "pass the --out directory of `uniedit synth`"
            )
        # shard files appear whole (store.write_shard_table): whatever is listed is complete
        self.data_files = self.run_dir.shard_files("data")
        # failed attempts of records accepted later are the natural preference negatives
        self.reject_files = self.run_dir.shard_files("rejects") + self.run_dir.shard_files("attempts")
        if not self.data_files and not self.reject_files:
            raise ExportError(
                f"run {self.label} has no finished shards yet (data/shard-*.parquet); nothing to export"
            )
        for path in [*self.data_files, *self.reject_files]:
            self._check_schema(path)

    def _check_schema(self, path: str) -> None:
        try:
            names = set(self.fs.parquet_file(path).schema_arrow.names)
        except Exception as exc:  # pyarrow raises several types for unreadable files
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(
                f"shard file {self.fs.display_path(path)} is truncated or corrupt ({detail}); run `uniedit synth` "
                "again with the same options and --out to redo that shard (its replies come from the cache), then "
                "retry"
            ) from None
        missing = [col for col in REQUIRED_COLUMNS if col not in names]
        if missing:
            raise ExportError(f"shard {path} lacks columns {missing}; was it written by uniedit-synth?")

    def run_info(self) -> dict[str, Any]:
        """run.json as a dict ({} when absent or unreadable: it only decorates the dataset card)."""
        try:
            return self.run_dir.read_run_json() or {}
        except OSError:
            return {}

    def count_rows(self, files: Sequence[str]) -> int:
        return sum(self.fs.parquet_file(path).metadata.num_rows for path in files)

    def iter_samples(self, files: Sequence[str], batch_rows: int = 64) -> Iterator[tuple[Sample, RowRef]]:
        """Every row of the files as a Sample, in file order; memory stays at one batch."""
        known = set(SAMPLE_SCHEMA.names)
        for path in files:
            parquet = self.fs.parquet_file(path)
            columns = [name for name in parquet.schema_arrow.names if name in known]
            index = 0
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
                for row in batch.to_pylist():
                    yield row_to_sample(row), RowRef(path, index)
                    index += 1

    def read_samples(self, refs: Sequence[RowRef]) -> list[Sample]:
        """The Samples at refs (any order, same order out), reading only the row groups that hold them."""
        known = set(SAMPLE_SCHEMA.names)
        out: dict[RowRef, Sample] = {}
        by_file: dict[str, list[RowRef]] = {}
        for ref in refs:
            by_file.setdefault(ref.path, []).append(ref)
        for path, wanted in by_file.items():
            parquet = self.fs.parquet_file(path)
            columns = [name for name in parquet.schema_arrow.names if name in known]
            starts = [0]
            for group in range(parquet.num_row_groups):
                starts.append(starts[-1] + parquet.metadata.row_group(group).num_rows)
            for group in range(parquet.num_row_groups):
                in_group = [ref for ref in wanted if starts[group] <= ref.index < starts[group + 1]]
                if not in_group:
                    continue
                table = parquet.read_row_group(group, columns=columns)
                for ref in in_group:
                    out[ref] = row_to_sample(table.slice(ref.index - starts[group], 1).to_pylist()[0])
        return [out[ref] for ref in refs]
