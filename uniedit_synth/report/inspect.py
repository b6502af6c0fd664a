"""`uniedit inspect`: everything about one sample — its row (images as size and sha256), scores, cost, latency,
prompt versions — and the cached backend replies that belong to it.

Replies are found through the call index that the engine writes per shard (`cache/index/shard-NNNNN.jsonl`,
format in call_index.py): each line names the sample id, stage and cache key, so the reply is read
from `cache/<key[:2]>/<key>.entry` (a JSON header line, then the binary payload; engine/cache.py). Runs made
before the index existed have no way to map keys back to samples; `scan_cache=True` then matches cache entries
by content (the edited image's sha256, the instruction, the judge's analysis, the classifier's answer), which is
a heuristic: identical replies of other samples match too.
Reading is side-effect free: a corrupt entry is reported, not deleted (ResponseCache.get would delete it).
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from PIL import Image

from ..core.config import STAGE_NAMES
from ..core.records import IMAGE_COLUMNS, JSON_COLUMNS, SAMPLE_SCHEMA
from ..run.cache import ResponseCache
from ..run.fs import RunFS
from ..run.store import RunDir
from ..stages.classify import ClassifyStage
from ..stages.edit import EditStage
from ..stages.judge import JudgeStage
from ..stages.rewrite import RewriteStage
from .call_index import calls_location, has_call_index, read_call_index
from .errors import SampleNotFoundError
from .run_rows import open_run, open_shard, shard_error, shard_files
from .summary import status_of

MAX_SUGGESTIONS = 5


def inspect_sample(run_dir: str | Path, sample_id: str, *, scan_cache: bool = False) -> dict[str, Any]:
    """The sample's fields, image digests and cached calls, as a JSON-ready dict (`run_dir` may be a URI).

    Raises SampleNotFoundError (a UniEditError) when no shard file holds the id.
    """
    run = open_run(run_dir)
    found = _find_row(run, sample_id)
    if found is None:
        raise SampleNotFoundError(_not_found_message(run, sample_id))
    kind, path, shard, index, row = found
    images = {column: _image_info(row.pop(column, None)) for column in IMAGE_COLUMNS}
    for column in JSON_COLUMNS:
        if isinstance(row.get(column), str):
            try:
                row[column] = json.loads(row[column])
            except ValueError:
                pass
    info: dict[str, Any] = {
        "id": sample_id,
        "status": status_of(row),
        "location": {"kind": kind, "file": path, "row": index, "shard": shard},
        "sample": row,
        "images": images,
        "calls": [],
        "calls_source": "none",
        "notes": [],
    }
    cache = ResponseCache(run.child(RunDir.CACHE_DIR))
    calls = read_call_index(run, shard, sample_id)
    if calls:
        info["calls_source"] = calls_location(run, shard)
        for call in sorted(calls, key=lambda c: c.seq or 0):
            entry = call.model_dump()
            entry["reply"] = _read_entry(cache, call.key)
            info["calls"].append(entry)
    elif scan_cache:
        info["calls_source"] = "scan (heuristic: matched by content)"
        info["calls"] = _scan_cache(cache, row, images)
        if not info["calls"]:
            info["notes"].append("no cache entry matched this sample's content")
    elif has_call_index(run):
        info["notes"].append(f"the call index of shard {shard} lists no calls for this sample")
    else:
        info["notes"].append(
            "this run has no call index (cache/index/), so cached replies cannot be tied to samples; "
            "pass scan_cache=True (--scan-cache) to match cache entries by content"
        )
    return info


# -- finding the row ----------------------------------------------------------------------------------------
def _find_row(run: RunFS, sample_id: str) -> tuple[str, str, int, int, dict[str, Any]] | None:
    known = set(SAMPLE_SCHEMA.names)
    for shard in shard_files(run):
        for kind, path in shard.files.items():
            parquet = open_shard(run, path)
            ids = _ids(run, parquet, path)
            if sample_id not in ids:
                continue
            index = ids.index(sample_id)
            start = 0
            for group in range(parquet.num_row_groups):
                rows = parquet.metadata.row_group(group).num_rows
                if index < start + rows:
                    columns = [name for name in parquet.schema_arrow.names if name in known]
                    table = parquet.read_row_group(group, columns=columns)
                    return kind, path, shard.shard, index, table.slice(index - start, 1).to_pylist()[0]
                start += rows
    return None


def _ids(run: RunFS, parquet: Any, path: str) -> list[str]:
    try:
        return parquet.read(columns=["id"]).column(0).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise shard_error(run, path, exc) from None


def _not_found_message(run: RunFS, sample_id: str) -> str:
    ids: list[str] = []
    for shard in shard_files(run):
        for path in shard.files.values():
            ids.extend(_ids(run, open_shard(run, path), path))
    needle = sample_id.lower()
    similar = [i for i in ids if needle and needle in i.lower()][:MAX_SUGGESTIONS]
    similar = similar or difflib.get_close_matches(sample_id, ids, n=MAX_SUGGESTIONS, cutoff=0.6)
    hint = (
        f"similar ids: {', '.join(similar)}"
        if similar
        else f"ids look like: {', '.join(sorted(ids)[:3])}"
        if ids
        else "the run has no rows"
    )
    return (
        f"no sample with id {sample_id!r} in {run.display} ({len(ids):,} samples); {hint}. Every card of "
        "`uniedit report` shows its id; ids are also the `id` column of data/shard-*.parquet and "
        "rejects/shard-*.parquet (e.g. pyarrow.parquet.read_table(path, columns=['id']))"
    )


# -- images and cache entries -------------------------------------------------------------------------------
def _digest(data: bytes) -> dict[str, Any]:
    info: dict[str, Any] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    try:
        with Image.open(io.BytesIO(data)) as image:
            info["format"] = image.format
            info["size"] = list(image.size)
    except Exception:  # PIL raises many types for non-image bytes
        info["format"] = None
    return info


def _image_info(struct: dict[str, Any] | None) -> dict[str, Any] | None:
    if not struct or struct.get("bytes") is None:
        return None
    return {"path": struct.get("path"), **_digest(struct["bytes"])}


def _read_entry(cache: ResponseCache, key: str) -> dict[str, Any]:
    path = cache.path_for(key)
    entry, exists = cache.peek(key)  # no side effects: get() would delete a corrupt entry
    if not exists:
        return {"missing": True, "path": str(path)}
    if entry is None:
        return {"corrupt": True, "path": str(path)}
    meta = dict(entry.meta)
    out: dict[str, Any] = {"path": str(path), "call": meta.pop("_call", None), "meta": meta}
    if entry.payload:
        out["payload"] = _digest(entry.payload)
    return out


def _scan_cache(cache: ResponseCache, row: dict[str, Any], images: dict[str, Any]) -> list[dict[str, Any]]:
    edited = (images.get("edited_image") or {}).get("sha256")
    wanted = {
        RewriteStage.name: ("instruction", row.get("edit_instruction")),  # the rewriter's reply field
        JudgeStage.name: ("analysis", row.get("analysis")),
        ClassifyStage.name: ("process_answer", row.get("process_answer")),
    }
    matches = []
    for key, header in _cache_headers(cache):
        if not isinstance(header, dict):
            continue
        data = header.get("data") if isinstance(header.get("data"), dict) else {}
        stage = None
        if edited and header.get("_payload_sha256") == edited:
            stage = EditStage.name
        else:
            for name, (field, value) in wanted.items():
                # runs made before instruction plans cached the rewrite reply as `edit_instruction`
                found = data.get(field, data.get("edit_instruction") if field == "instruction" else None)
                if value and found == value:
                    stage = name
                    break
        if stage:
            matches.append(
                {"stage": stage, "key": key, "matched_by": "content", "reply": _read_entry(cache, key)}
            )
    order = {name: i for i, name in enumerate(STAGE_NAMES)}
    return sorted(matches, key=lambda m: (order.get(m["stage"], len(order)), m["key"]))


def _cache_headers(cache: ResponseCache) -> Iterator[tuple[str, Any]]:
    """(key, JSON header) of every readable cache entry, in key order."""
    if cache.root is not None:  # local: read the header line only, not the payload
        loose = set()
        for path in sorted(cache.root.glob("??/*.entry")):
            try:
                with open(path, "rb") as handle:
                    yield path.stem, json.loads(handle.readline())
                loose.add(path.stem)
            except (OSError, ValueError):
                continue
        for key in cache.packed_keys():  # the replies of final shards, packed (run/cache.py)
            entry, _ = cache.peek(key) if key not in loose else (None, False)
            if entry is not None:
                yield key, entry.meta
        return
    for folder in (f"{i:02x}" for i in range(256)):  # keys are hex: an object store lists by these prefixes
        for name in cache.fs.list(folder, "*.entry"):
            blob = cache.fs.read_bytes(f"{folder}/{name}") or b""
            try:
                yield name.removesuffix(".entry"), json.loads(blob.split(b"\n", 1)[0])
            except ValueError:
                continue


# -- text ---------------------------------------------------------------------------------------------------
def format_inspection(info: dict[str, Any], *, width: int = 100) -> str:
    """A readable multi-line text of inspect_sample's dict (long values wrapped, replies abridged)."""
    sample = info["sample"]
    loc = info["location"]
    lines = [
        f"sample   {info['id']}   [{info['status']}]",
        f"where    {loc['file']} row {loc['row']} (shard {loc['shard']})",
    ]

    def field(label: str, value: Any) -> None:
        if value is None or value == "" or value == {}:
            return
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
        wrapped = textwrap.wrap(text, width=width - 14, replace_whitespace=False) or [""]
        lines.append(f"{label:<13} {wrapped[0]}")
        lines.extend(f"{'':<13} {more}" for more in wrapped[1:8])
        if len(wrapped) > 8:
            lines.append(f"{'':<13} … ({len(text):,} characters)")

    field("source", sample.get("source"))
    field("category", sample.get("task_category"))
    field("question", sample.get("original_question"))
    field("answer", sample.get("original_answer"))
    field("process", sample.get("process_answer"))
    field("instruction", sample.get("edit_instruction"))
    field("analysis", sample.get("analysis"))
    if not sample.get("accepted"):
        field(
            "reject",
            f"{sample.get('reject_reason') or 'rejected'}: {sample.get('reject_detail') or ''}".strip(": "),
        )
    scores = dict(sample.get("scores") or {})
    scores["aggregate"] = sample.get("score")
    field("scores", " · ".join(f"{k} {v:g}" for k, v in scores.items() if v is not None) or None)
    cascade = sample.get("judge_cascade")
    if isinstance(cascade, dict):
        who = cascade.get("decided_by", "?")
        model = cascade.get(f"{who}_model") or "?"
        field("decided by", f"{who} judge ({model}; route {cascade.get('route')})")
        field("cheap judge", cascade.get("cheap"))
        field("expensive", cascade.get("expensive"))
    field("reasoning", sample.get("reasoning"))
    field("effect", sample.get("intended_effect"))
    field("attempts", str(sample.get("attempts") or 0))
    field("cost", f"${float(sample.get('cost_usd') or 0):.6f}")
    field("latency", f"{float(sample.get('latency_s') or 0):.2f} s")
    field("models", " · ".join(f"{k} {v}" for k, v in (sample.get("models") or {}).items() if v) or None)
    field(
        "prompts",
        " · ".join(f"{k} {v}" for k, v in sorted((sample.get("prompt_versions") or {}).items())) or None,
    )
    field("pipeline", sample.get("pipeline_hash"))
    field("edit_program", sample.get("edit_program"))
    field("record_meta", sample.get("record_meta"))
    lines.append("images")
    for column, image in info["images"].items():
        lines.append(f"  {column:<13} {_describe_digest(image) if image else '—'}")
    lines.append(f"calls    ({info['calls_source']})")
    for call in info["calls"]:
        seq = call.get("seq")
        head = f"  {'-' if seq is None else seq!s:>3} {call['stage']:<9}"
        if call.get("attempt") is not None:
            head += f" attempt {call['attempt']}"
        if "cached" in call:
            how = "batch" if call.get("batch") else "cached" if call["cached"] else "called"
            head += f"  {how}  ${call.get('cost_usd', 0):.6f}"
            if call.get("attributed_usd"):
                head += f" (shared reply worth ${call['attributed_usd']:.6f}, paid by another record)"
            head += f"  {call.get('latency_s', 0):.2f} s"
        if call.get("model"):
            head += f"  {call['model']}"
        if call.get("error"):
            head += f"  error={call['error']}"
        lines.append(f"{head}  key {call['key'][:16]}…")
        reply = call.get("reply") or {}
        if reply.get("missing"):
            lines.append("        reply: not in the cache")
        elif reply.get("corrupt"):
            lines.append(f"        reply: corrupt cache entry {reply['path']}")
        else:
            text = json.dumps(reply.get("meta"), ensure_ascii=False, sort_keys=True)
            lines.append(f"        reply: {text[: width * 3]}{'…' if len(text) > width * 3 else ''}")
            if reply.get("payload"):
                lines.append(f"        payload: {_describe_digest(reply['payload'])}")
    lines.extend(f"note: {note}" for note in info["notes"])
    return "\n".join(lines)


def _describe_digest(info: dict[str, Any]) -> str:
    shape = f"{info['format']} {info['size'][0]}×{info['size'][1]}" if info.get("format") else "undecodable"
    path = f"  ({info['path']})" if info.get("path") else ""
    return f"{shape}, {info['bytes']:,} bytes, sha256 {info['sha256']}{path}"
