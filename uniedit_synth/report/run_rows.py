"""Streaming a run's rows for the report and inspect: shards in order, each shard's data and rejects merged by id."""

from __future__ import annotations

import heapq
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ..records import SAMPLE_SCHEMA
from ..store import summarise
from .errors import ReportError

log = logging.getLogger(__name__)

_SHARD_FILE = re.compile(r"^shard-(\d+)\.parquet$")
KINDS = ("data", "rejects")


@dataclass(frozen=True)
class ShardFiles:
    """The parquet files of one shard number (either may be missing)."""

    shard: int
    files: dict[str, Path]


def open_run(run_dir: Path) -> Path:
    """The run dir, checked: it exists and holds at least one shard file."""
    root = Path(run_dir).expanduser()
    if not root.is_dir():
        raise ReportError(f"run directory {root} does not exist; pass the --out directory of `uniedit synth`")
    if not shard_files(root):
        raise ReportError(
            f"{root} has no shard files (data/shard-*.parquet or rejects/shard-*.parquet); "
            "pass the --out directory of a `uniedit synth` run that finished at least one shard"
        )
    return root


def shard_files(run_dir: Path, kinds: tuple[str, ...] = KINDS) -> list[ShardFiles]:
    """Shard numbers found in data/ and rejects/, ascending."""
    found: dict[int, dict[str, Path]] = {}
    for kind in kinds:
        for path in sorted((run_dir / kind).glob("shard-*.parquet")):
            match = _SHARD_FILE.match(path.name)
            if match:
                found.setdefault(int(match.group(1)), {})[kind] = path
    return [ShardFiles(shard, found[shard]) for shard in sorted(found)]


def count_rows(shards: list[ShardFiles]) -> int:
    return sum(pq.ParquetFile(path).metadata.num_rows for shard in shards for path in shard.files.values())


def iter_file_rows(path: Path, batch_rows: int = 32) -> Iterator[dict[str, Any]]:
    """The rows of one shard file as dicts (images as {bytes, path} structs), one batch in memory."""
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise ReportError(f"cannot read shard {path}: {exc}") from exc
    known = set(SAMPLE_SCHEMA.names)
    columns = [name for name in parquet.schema_arrow.names if name in known]
    if "id" not in columns:
        raise ReportError(f"shard {path} has no id column; was it written by uniedit-synth?")
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
        yield from batch.to_pylist()


def iter_run_rows(
    run_dir: Path, include_rejects: bool = True, batch_rows: int = 32
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(shard number, row) for every row of the run, by shard then id (each shard file is sorted by id)."""
    kinds = KINDS if include_rejects else ("data",)
    for shard in shard_files(run_dir, kinds):
        streams = [iter_file_rows(shard.files[kind], batch_rows) for kind in kinds if kind in shard.files]
        for row in heapq.merge(*streams, key=lambda row: row["id"]):
            yield shard.shard, row


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when it is absent or unreadable (run.json and stats.json only decorate)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def run_stats(run_dir: Path) -> dict[str, Any]:
    """stats.json, or the same totals summarised from manifest.jsonl (a run still in progress has no stats.json).

    The manifest is parsed here without RunDir.manifest_entries, which truncates a torn last line: a report may
    be built while the run is still appending, and must never write to the run.
    """
    stats = read_json(run_dir / "stats.json")
    if stats:
        return stats
    entries: dict[int, dict[str, Any]] = {}
    try:
        lines = (run_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            entry = json.loads(line)
            entries[int(entry["shard"])] = entry
        except (ValueError, KeyError, TypeError):
            continue
    if not entries:
        return {}
    try:
        return summarise(list(entries.values()))
    except (KeyError, TypeError):
        log.warning("manifest.jsonl of %s has unexpected lines; the report shows no stage totals", run_dir)
        return {}
