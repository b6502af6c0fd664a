"""The call index: one JSON line per backend call of a sample, so `inspect` can find the sample's cached replies.

The response cache is keyed by sha256 of the full request (backends/base.py `request_key`), which cannot be
recomputed from a finished sample. The engine (engine/worker.py) therefore writes, when it writes a shard,
the calls its records made:

    <run>/cache/packs/shard-NNNNN.pack         (inside the shard's cache pack, run/packs.py: local runs)
    <run>/cache/index/shard-NNNNN.jsonl        (object storage, and runs made before packs held it)

(NNNNN = the shard number, as in data/shard-NNNNN.parquet), written atomically, so a redone shard replaces
it and a resumed run never lists a call twice. The pack's copy wins over a file. One JSON
object per line, a sample's calls in the order they were made; blank lines are allowed; readers ignore unknown
keys and skip a torn or malformed line:

    {"id": "scenes/000123", "stage": "judge", "key": "<64 hex>", "cached": false, "cost_usd": 0.00123,
     "latency_s": 1.84, "error": null, "attempt": 1, "kind": "text", "model": "gpt-4o-mini"}

Required:
- `id`        the sample id exactly as written to parquet (including a `~dupN` suffix).
- `stage`     classify | rewrite | edit | judge.
- `key`       the cache key; the reply is at `cache/<key[:2]>/<key>.entry`.
Optional (shown when present):
- `cached`    true when the reply came from the cache, false when the call was made now.
- `cost_usd`, `latency_s`   what the ledger charged (a cached call at its original cost and latency).
- `error`     null, or the final refusal cached for the call: safety_blocked | bad_request | malformed;
              or no_image: an edit reply without an image, charged and asked again; its `key` names a note
              of that reply (what the model said), never the request's cached answer.
- `attempt`   the edit attempt (0-based) an edit or judge call belongs to.
- `seq`       the call's position among the sample's calls; default: its order in the file.
- `kind`      the `request_key` kind, "text" or "edit".
- `model`     the model that answered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ..run.cache import PACKS, ResponseCache, pack_name
from ..run.fs import RunFS, as_run_fs
from ..run.store import RunDir

log = logging.getLogger(__name__)

INDEX_DIR = RunDir.CALL_INDEX_DIR


class CallRecord(BaseModel):
    """One line of the call index."""

    id: str
    stage: str
    key: str
    cached: bool = False
    cost_usd: float = 0.0
    latency_s: float = 0.0
    error: str | None = None
    attempt: int | None = None
    seq: int | None = None
    kind: str | None = None
    model: str | None = None
    #: answered inside a provider batch job (engine/batch.py): paid for this record, at the batch price
    batch: bool = False
    #: a cached reply another record paid for: what it cost that record (`cost_usd` is 0 here)
    attributed_usd: float = 0.0


def index_path(shard: int) -> str:
    """The index file of a shard, relative to the run."""
    return RunDir.call_index_path(shard)


def _packed_shards(run: RunFS) -> list[int]:
    """The shards whose cache pack holds their call index (a local run's)."""
    return sorted(int(name[6:11]) for name in run.list(f"{RunDir.CACHE_DIR}/{PACKS}", "shard-*.pack")
                  if name[6:11].isdigit())


def _shard_lines(run: RunFS, shard: int) -> Iterator[CallRecord]:
    packed = ResponseCache(run.child(RunDir.CACHE_DIR)).pack_calls(shard) if run.local_root is not None else None
    if packed is not None:
        yield from _parse(run, packed, f"{RunDir.CACHE_DIR}/{PACKS}/{pack_name(shard)}")
    else:
        yield from _read_lines(run, index_path(shard))


def read_call_index(run_dir: Path | RunFS, shard: int, sample_id: str | None = None) -> list[CallRecord]:
    """The calls of one shard (of one sample when given), in order; [] when the shard has no index.

    A line without `seq` gets its position among its sample's lines.
    """
    counters: dict[str, int] = {}
    calls = []
    for call in _shard_lines(as_run_fs(run_dir), shard):
        position = counters.get(call.id, 0)
        counters[call.id] = position + 1
        if call.seq is None:
            call.seq = position
        if sample_id is None or call.id == sample_id:
            calls.append(call)
    return calls


def iter_call_index(run_dir: Path | RunFS) -> Iterator[CallRecord]:
    """Every call of every indexed shard, shard by shard (one shard's file in memory at a time)."""
    run = as_run_fs(run_dir)
    shards = {int(name[6:11]) for name in run.list(INDEX_DIR, "shard-*.jsonl") if name[6:11].isdigit()}
    for shard in sorted(shards | set(_packed_shards(run))):
        yield from _shard_lines(run, shard)


def has_call_index(run_dir: Path | RunFS) -> bool:
    run = as_run_fs(run_dir)
    return bool(run.list(INDEX_DIR, "shard-*.jsonl")) or bool(_packed_shards(run))


def calls_location(run_dir: Path | RunFS, shard: int) -> str:
    """Where a shard's call index is read from, relative to the run."""
    run = as_run_fs(run_dir)
    if run.local_root is not None and ResponseCache(run.child(RunDir.CACHE_DIR)).pack_calls(shard) is not None:
        return f"{RunDir.CACHE_DIR}/{PACKS}/{pack_name(shard)}"
    return index_path(shard)


def _read_lines(run: RunFS, rel: str) -> Iterator[CallRecord]:
    raw = run.read_bytes(rel)
    if raw is None:
        return
    yield from _parse(run, raw, rel)


def _parse(run: RunFS, raw: bytes, rel: str) -> Iterator[CallRecord]:
    bad = 0
    for line in raw.decode("utf-8", errors="replace").split("\n"):
        if not line.strip():
            continue
        try:
            yield CallRecord.model_validate(json.loads(line))
        except (ValueError, ValidationError):
            bad += 1
    if bad:
        log.warning("%s: skipped %d malformed line(s)", run.display_path(rel), bad)
