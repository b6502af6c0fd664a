"""`source.json`: where the source ended the last time a run read it to its end, so that a rerun of a finished run
checks the manifest and the source's identity and reads no rows (engine/driver.py)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from ..core.records import VQARecord
from .store import RunDir

SOURCE_PLAN = "source.json"


class SourcePlan(BaseModel):
    """The source as the last complete read saw it: its identity (sources/identity.py), the limit it was read
    with, and how many shards and records it made."""

    identity: str
    limit: int | None = None
    shards: int = Field(ge=0)
    records: int = Field(ge=0)
    pipeline_hash: str = ""
    written_at: str = ""


def read_plan(run_dir: RunDir) -> SourcePlan | None:
    """source.json, or None when absent or not ours (then the rerun reads the source, as it always could)."""
    raw = run_dir.fs.read_bytes(SOURCE_PLAN)
    if not raw:
        return None
    try:
        return SourcePlan.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        return None


def write_plan(run_dir: RunDir, plan: SourcePlan) -> None:
    plan.written_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    run_dir.fs.write_bytes(SOURCE_PLAN, json.dumps(plan.model_dump(), sort_keys=True).encode(), fsync=True)


def forget_plan(run_dir: RunDir) -> None:
    """Before the shards change: a stale source.json must never let a rerun skip the read."""
    if run_dir.fs.exists(SOURCE_PLAN):
        run_dir.fs.delete(SOURCE_PLAN)


def all_finished(run_dir: RunDir, plan: SourcePlan, identity: str, finished: dict[int, dict[str, Any]],
                 screening: bool) -> bool:
    """Whether every shard of `plan` is finished from this identity, intact, and not stopped by a budget."""
    for shard in range(plan.shards):
        entry = finished.get(shard)
        if (entry is None or entry.get("source_identity") != identity or entry.get("budget_exhausted")
                or not run_dir.shard_files_intact(entry)
                or (screening and run_dir.read_screen(shard) is None)):
            return False
    return not any(shard >= plan.shards for shard in finished)


def withdrawn_entry(shard: int, identity: str | None) -> dict[str, Any]:
    """A manifest line for a finished shard whose rows the source no longer has (replaced by a shorter one):
    it counts nothing, and its files are gone."""
    return {"shard": shard, "records": 0, "accepted": 0, "rejected": 0, "withdrawn": True,
            "source_identity": identity, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def positions_runs(positions: list[int]) -> list[list[int]]:
    """Positions as [start, stop) runs (a shard of consecutive rows is one pair)."""
    runs: list[list[int]] = []
    for position in positions:
        if runs and runs[-1][1] == position:
            runs[-1][1] = position + 1
        else:
            runs.append([position, position + 1])
    return runs


def ids_digest(records: list[VQARecord]) -> str:
    """The ids of a shard's records in order: the manifest keeps it, so a resume knows the shard is the same."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(record.id.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def rows_digest(records: list[VQARecord]) -> str:
    """What a shard's rows hold (ids, text, image bytes or paths, meta): a row edited in place changes it, so a
    rerun whose source changed can tell an untouched finished shard from one to redo."""
    digest = hashlib.sha256()
    for record in records:
        image = hashlib.sha256(record.image).hexdigest() if record.image is not None else ""
        fields = [record.id, record.question, record.answer, record.category, record.image_path, image,
                  record.invalid, record.duplicate, record.meta]
        digest.update(json.dumps(fields, sort_keys=True, default=repr).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:32]
