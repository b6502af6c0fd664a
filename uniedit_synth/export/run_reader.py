"""Reading a finished run directory: checking it is a run, listing its shards, streaming its rows as Samples."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ..errors import ExportError
from ..records import SAMPLE_SCHEMA, Sample, row_to_sample
from ..store import RunDir

#: columns an export cannot do without; anything else in SAMPLE_SCHEMA is optional for older runs
REQUIRED_COLUMNS = ("id", "task_category", "edit_instruction", "source_image", "edited_image", "accepted")


@dataclass(frozen=True)
class RowRef:
    """Where a row lives: a shard file and the row's index in it (for reading it again later)."""

    path: Path
    index: int


class RunReader:
    """A run directory as store.RunDir lays it out (`data/shard-*.parquet`, `rejects/shard-*.parquet`, `run.json`,
    `manifest.jsonl`), opened read-only: no lock is taken, so a run can be exported while it goes on (only its
    finished shards are seen)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir).expanduser()
        if not self.root.exists():
            raise ExportError(
                f"run directory {self.root} does not exist; pass the --out directory of `uniedit synth`"
            )
        if not self.root.is_dir():
            raise ExportError(f"{self.root} is a file, not a run directory")
        self.run_dir = RunDir(self.root)
        markers = [self.run_dir.data_dir, self.run_dir.run_json, self.run_dir.manifest]
        if not any(marker.exists() for marker in markers):
            raise ExportError(
                f"{self.root} is not a uniedit run (no data/, run.json or manifest.jsonl); "
                "pass the --out directory of `uniedit synth`"
            )
        # shard files appear by atomic rename (store.write_shard_table): whatever is listed is complete
        self.data_files = self.run_dir.shard_paths("data")
        # failed attempts of records accepted later are the natural preference negatives
        self.reject_files = self.run_dir.shard_paths("rejects") + self.run_dir.shard_paths("attempts")
        if not self.data_files and not self.reject_files:
            raise ExportError(
                f"run {self.root} has no finished shards yet (data/shard-*.parquet); nothing to export"
            )
        for path in [*self.data_files, *self.reject_files]:
            self._check_schema(path)

    @staticmethod
    def _check_schema(path: Path) -> None:
        try:
            names = set(pq.read_schema(path).names)
        except Exception as exc:  # pyarrow raises several types for unreadable files
            raise ExportError(f"cannot read shard {path}: {exc}") from exc
        missing = [col for col in REQUIRED_COLUMNS if col not in names]
        if missing:
            raise ExportError(f"shard {path} lacks columns {missing}; was it written by uniedit-synth?")

    def run_info(self) -> dict[str, Any]:
        """run.json as a dict ({} when absent or unreadable: it only decorates the dataset card)."""
        try:
            return self.run_dir.read_run_json() or {}
        except OSError:
            return {}

    @staticmethod
    def count_rows(files: Sequence[Path]) -> int:
        return sum(pq.ParquetFile(path).metadata.num_rows for path in files)

    @staticmethod
    def iter_samples(files: Sequence[Path], batch_rows: int = 64) -> Iterator[tuple[Sample, RowRef]]:
        """Every row of the files as a Sample, in file order; memory stays at one batch."""
        known = set(SAMPLE_SCHEMA.names)
        for path in files:
            parquet = pq.ParquetFile(path)
            columns = [name for name in parquet.schema_arrow.names if name in known]
            index = 0
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
                for row in batch.to_pylist():
                    yield row_to_sample(row), RowRef(path, index)
                    index += 1

    @staticmethod
    def read_samples(refs: Sequence[RowRef]) -> list[Sample]:
        """The Samples at refs (any order, same order out), reading only the row groups that hold them."""
        known = set(SAMPLE_SCHEMA.names)
        out: dict[RowRef, Sample] = {}
        by_file: dict[Path, list[RowRef]] = {}
        for ref in refs:
            by_file.setdefault(ref.path, []).append(ref)
        for path, wanted in by_file.items():
            parquet = pq.ParquetFile(path)
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
