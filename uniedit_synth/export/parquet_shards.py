"""Writing a stream of rows into parquet shard files of a fixed number of rows, with small row groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


class ParquetShardWriter:
    """Rows in, `<prefix>-00000.parquet`, `<prefix>-00001.parquet`, ... out (`shard_rows` rows per file, one
    row group per `row_group_rows` rows). With `hub_names`, files are renamed `<prefix>-00000-of-00003.parquet`
    on close, the Hugging Face Hub convention."""

    def __init__(
        self,
        directory: Path,
        prefix: str,
        schema: pa.Schema,
        *,
        shard_rows: int,
        row_group_rows: int,
        hub_names: bool = False,
    ) -> None:
        self.directory = directory
        self.prefix = prefix
        self.schema = schema
        self.shard_rows = shard_rows
        self.row_group_rows = max(1, min(row_group_rows or shard_rows, shard_rows))
        self.hub_names = hub_names
        self.files: list[Path] = []
        self.rows_written = 0
        self._buffer: list[dict[str, Any]] = []
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_file = 0

    def write(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= min(self.row_group_rows, self.shard_rows - self._rows_in_file):
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{self.prefix}-{len(self.files):05d}.parquet"
            self.files.append(path)
            self._writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        table = pa.Table.from_pylist(self._buffer, schema=self.schema)
        self._writer.write_table(table, row_group_size=self.row_group_rows)
        self._rows_in_file += len(self._buffer)
        self.rows_written += len(self._buffer)
        self._buffer = []
        if self._rows_in_file >= self.shard_rows:
            self._close_file()

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._rows_in_file = 0

    def close(self) -> list[Path]:
        """Finish the last file; return the files written (renamed to hub names if asked)."""
        self._flush()
        self._close_file()
        if self.hub_names:
            total = len(self.files)
            renamed = []
            for index, path in enumerate(self.files):
                target = path.with_name(f"{self.prefix}-{index:05d}-of-{total:05d}.parquet")
                path.rename(target)
                renamed.append(target)
            self.files = renamed
        return list(self.files)
