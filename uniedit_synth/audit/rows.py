"""What `uniedit audit` reads: a run directory (or URI), an `hf` export or a `uniedit-jsonl` export, as a stream
of AuditRows grouped by file (the unit the fingerprint cache is keyed on)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import UniEditError
from ..run.fs import RunFS, open_run_fs

#: columns read from parquet when the fingerprints of a file are cached (no image bytes at all)
TEXT_COLUMNS = ["id", "task_category", "original_question", "original_answer", "process_answer",
                "edit_instruction", "scores", "score", "edit_program", "record_meta", "instruction_plan",
                "chain_id", "turn"]
IMAGE_COLUMNS = ["source_image", "edited_image"]


class AuditInputError(UniEditError):
    """The thing given to `uniedit audit` is not a run or an export it can read."""


@dataclass
class AuditRow:
    id: str
    category: str | None
    question: str
    answer: str
    process_answer: str | None
    instruction: str
    source: bytes | None = None
    edited: bytes | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    score: float | None = None
    edit_program: dict[str, Any] | None = None
    record_meta: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    #: multi-turn chains: the chain's id (the first turn's row id) and this row's turn
    chain_id: str | None = None
    turn: int = 1


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _image(value: Any) -> bytes | None:
    if isinstance(value, dict):
        return value.get("bytes")
    return value if isinstance(value, (bytes, bytearray)) else None


def row_from_sample_dict(row: dict[str, Any]) -> AuditRow:
    return AuditRow(
        id=str(row.get("id")),
        category=row.get("task_category"),
        question=row.get("original_question") or "",
        answer=row.get("original_answer") or "",
        process_answer=row.get("process_answer"),
        instruction=row.get("edit_instruction") or "",
        source=_image(row.get("source_image")),
        edited=_image(row.get("edited_image")),
        scores=dict(row.get("scores") or {}),
        score=row.get("score"),
        edit_program=_json(row.get("edit_program")),
        record_meta=_json(row.get("record_meta")),
        plan=_json(row.get("instruction_plan")),
        chain_id=row.get("chain_id"),
        turn=int(row.get("turn") or 1),
    )


@dataclass
class AuditFile:
    """One data file of the input: `rows(with_images)` streams it; `cache_key` names its content."""

    fs: RunFS
    path: str
    kind: str  # "parquet" or "jsonl"

    def cache_key(self) -> str:
        digest = hashlib.sha256(self.path.encode() + b"\0")
        if self.kind == "parquet":
            meta = self.fs.parquet_file(self.path).metadata
            digest.update(f"{meta.num_rows}|{meta.num_row_groups}|{meta.serialized_size}|".encode())
            for group in range(meta.num_row_groups):
                digest.update(f"{meta.row_group(group).total_byte_size},".encode())
            digest.update(str(self.fs.size(self.path)).encode())
        else:
            digest.update(self.fs.read_bytes(self.path) or b"")
        return digest.hexdigest()[:20]

    def rows(self, with_images: bool = True) -> Iterator[AuditRow]:
        if self.kind == "parquet":
            parquet = self.fs.parquet_file(self.path)
            names = set(parquet.schema_arrow.names)
            wanted = TEXT_COLUMNS + (IMAGE_COLUMNS if with_images else [])
            columns = [c for c in wanted if c in names]
            for batch in parquet.iter_batches(batch_size=64, columns=columns):
                for row in batch.to_pylist():
                    if row.get("accepted") is False:
                        continue
                    yield row_from_sample_dict(row)
            return
        root = self.fs
        for line in (self.fs.read_bytes(self.path) or b"").decode("utf-8").splitlines():
            if not line.strip():
                continue
            data = json.loads(line)
            row = row_from_sample_dict(data)
            if with_images:
                row.source = root.read_bytes(data["image_path"]) if data.get("image_path") else None
                row.edited = root.read_bytes(data["output_image_path"]) if data.get("output_image_path") else None
            yield row


def open_audit_input(location: str) -> tuple[str, RunFS, list[AuditFile]]:
    """(kind, filesystem, data files) of a run dir/URI, an hf export or a uniedit-jsonl export."""
    from ..run.store import RunDir

    try:
        fs = open_run_fs(location)
        exists = fs.exists("") if fs.remote else fs.local_root.is_dir()
    except UniEditError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad URI
        raise AuditInputError(f"cannot open {location}: {exc}") from None
    if not exists:
        raise AuditInputError(f"{location} does not exist; pass a run directory (uniedit synth --out) or an export")
    run = RunDir(location)
    if run.is_run():
        files = run.shard_files("data")
        return "run", fs, [AuditFile(fs, f, "parquet") for f in files]
    info = {}
    raw = fs.read_bytes("export.json") if fs.exists("export.json") else None
    if raw:
        try:
            info = json.loads(raw)
        except ValueError:
            info = {}
    jsonl = sorted(f"data/{n}" for n in fs.list("data", "*.jsonl")) if fs.exists("data") else []
    parquet = sorted(f"data/{n}" for n in fs.list("data", "*.parquet")) if fs.exists("data") else []
    if info.get("format") == "bagel":
        raise AuditInputError(f"{location} is a bagel export; audit the run it came from or an hf/uniedit-jsonl export")
    if jsonl and info.get("format") in (None, "uniedit-jsonl"):
        return "uniedit-jsonl", fs, [AuditFile(fs, f, "jsonl") for f in jsonl]
    if parquet:
        return "hf", fs, [AuditFile(fs, f, "parquet") for f in parquet]
    raise AuditInputError(
        f"{location} is neither a uniedit run (run.json, manifest) nor an hf / uniedit-jsonl export (data/)"
    )
