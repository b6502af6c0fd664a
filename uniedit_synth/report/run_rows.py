"""Streaming a run's rows for the report and inspect: shards in order, each shard's data and rejects merged by id.

A run is reached through a RunFS (runfs.py): a local directory or a pyarrow filesystem URI; file paths here are
relative to the run (`data/shard-00001.parquet`).
"""

from __future__ import annotations

import heapq
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..core.records import SAMPLE_SCHEMA
from ..run.fs import RunFS, as_run_fs, is_uri
from ..run.store import RunDir, shard_result
from ..stages.totals import run_totals
from .errors import ReportError

log = logging.getLogger(__name__)

_SHARD_FILE = re.compile(r"^shard-(\d+)\.parquet$")
KINDS = ("data", "rejects")


@dataclass(frozen=True)
class ShardFiles:
    """The parquet files of one shard number (either may be missing), as paths relative to the run."""

    shard: int
    files: dict[str, str]


def open_run(run_dir: str | Path | RunFS) -> RunFS:
    """The run, checked: it exists and holds at least one shard file."""
    if isinstance(run_dir, RunFS) or is_uri(run_dir):
        run = as_run_fs(run_dir)
    else:
        root = Path(run_dir).expanduser()
        if not root.is_dir():
            raise ReportError(f"run directory {root} does not exist; pass the --out directory of `uniedit synth`")
        run = as_run_fs(root)
    if not shard_files(run):
        raise ReportError(
            f"{run.display} has no shard files (data/shard-*.parquet or rejects/shard-*.parquet); "
            "pass the --out directory of a `uniedit synth` run that finished at least one shard"
        )
    return run


def shard_files(run_dir: str | Path | RunFS, kinds: tuple[str, ...] = KINDS) -> list[ShardFiles]:
    """Shard numbers found in data/ and rejects/, ascending."""
    run = as_run_fs(run_dir)
    found: dict[int, dict[str, str]] = {}
    for kind in kinds:
        for name in run.list(kind, "shard-*.parquet"):
            match = _SHARD_FILE.match(name)
            if match:
                found.setdefault(int(match.group(1)), {})[kind] = f"{kind}/{name}"
    return [ShardFiles(shard, found[shard]) for shard in sorted(found)]


def shard_error(run: RunFS, path: str, exc: BaseException) -> ReportError:
    """A shard file that cannot be read (truncated, corrupt), named, with how to get it back."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ReportError(
        f"shard file {run.display_path(path)} is truncated or corrupt ({detail}); run `uniedit synth` again with "
        "the same options and --out to redo that shard (its replies come from the cache), then retry"
    )


def open_shard(run: RunFS, path: str) -> pq.ParquetFile:
    try:
        return run.parquet_file(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for unreadable files
        raise shard_error(run, path, exc) from None


def count_rows(run: RunFS, shards: list[ShardFiles]) -> int:
    return sum(open_shard(run, path).metadata.num_rows for shard in shards for path in shard.files.values())


def iter_file_rows(run: RunFS, path: str, batch_rows: int = 32) -> Iterator[dict[str, Any]]:
    """The rows of one shard file as dicts (images as {bytes, path} structs), one batch in memory."""
    parquet = open_shard(run, path)
    known = set(SAMPLE_SCHEMA.names)
    columns = [name for name in parquet.schema_arrow.names if name in known]
    if "id" not in columns:
        raise ReportError(f"shard {path} has no id column; was it written by uniedit-synth?")
    try:
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            yield from batch.to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise shard_error(run, path, exc) from None


def iter_run_rows(
    run_dir: str | Path | RunFS, include_rejects: bool = True, batch_rows: int = 32
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(shard number, row) for every row of the run, by shard then id (each shard file is sorted by id)."""
    run = as_run_fs(run_dir)
    kinds = KINDS if include_rejects else ("data",)
    for shard in shard_files(run, kinds):
        streams = [iter_file_rows(run, shard.files[kind], batch_rows) for kind in kinds if kind in shard.files]
        for row in heapq.merge(*streams, key=lambda row: row["id"]):
            yield shard.shard, row


def read_json(run: RunFS, rel: str) -> dict[str, Any]:
    """A JSON object file of the run, or {} when it is absent or unreadable (run.json and stats.json only decorate)."""
    try:
        value = json.loads(run.read_bytes(rel) or b"")
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def run_stats(run_dir: str | Path | RunFS) -> dict[str, Any]:
    """stats.json, or the same totals summarised from the manifest (a run still in progress has no stats.json).

    manifest.jsonl is parsed here without RunDir.manifest_entries, which truncates a torn last line: a report may
    be built while the run is still appending, and must never write to the run. Manifest objects (a run on
    object storage) are read through RunDir: they are written whole, and reading them writes nothing.
    """
    run = as_run_fs(run_dir)
    stats = read_json(run, "stats.json")
    if stats:
        return stats
    entries: dict[int, dict[str, Any]] = {}
    try:
        lines = (run.read_bytes("manifest.jsonl") or b"").decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    for number, line in enumerate(lines, 1):
        try:
            entry = shard_result(json.loads(line))
        except ValueError as exc:
            if number < len(lines):  # the last line may be one the run is still appending
                log.warning("manifest.jsonl line %d is not a shard result (%s); the report leaves it out", number, exc)
            continue
        entries[entry["shard"]] = entry
    for entry in RunDir(run).manifest_objects():
        entries[entry["shard"]] = entry
    if not entries:
        return {}
    try:
        return run_totals(list(entries.values()))
    except (KeyError, TypeError):
        log.warning("manifest.jsonl of %s has unexpected lines; the report shows no stage totals", run_dir)
        return {}
