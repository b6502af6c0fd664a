"""Planted defects for the audit tests: a finished offline run with known no-ops, leaks and duplicates, and a
benchmark fixture holding re-encoded copies of some of its source images with reworded questions."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

REWORDED = [
    "In this picture, tell me which answer fits: {q}",
    "Looking carefully at the rendered image, answer this one please: {q}",
    "A benchmark item asks, about the scene shown here: {q}",
]


@dataclass
class Planted:
    no_op_edits: list[str] = field(default_factory=list)
    answer_leaks: list[str] = field(default_factory=list)
    duplicate_sources: list[str] = field(default_factory=list)
    duplicate_pairs: list[str] = field(default_factory=list)
    contaminated: list[str] = field(default_factory=list)


def reencode(png: bytes) -> bytes:
    """JPEG quality 85 after resizing to 90 %: what a benchmark's copy of a public image looks like."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((int(image.width * 0.9), int(image.height * 0.9)), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def plant_defects(run: Path, bench_dir: Path) -> Planted:
    """Rewrite the data shards of a finished run in place; write `bench_dir/bench.jsonl` + images."""
    files = sorted((run / "data").glob("shard-*.parquet"))
    tables = {f: pq.read_table(f) for f in files}
    rows = [(f, i, row) for f, t in tables.items() for i, row in enumerate(t.to_pylist())]
    ordered = sorted(rows, key=lambda r: r[2]["id"])
    pick = iter(ordered[5::13])  # spread over the run, disjoint
    planted = Planted()
    edits: dict[tuple[Path, int], dict] = {}

    for _ in range(3):  # edited = source
        f, i, row = next(pick)
        row["edited_image"] = {"bytes": row["source_image"]["bytes"], "path": row["edited_image"]["path"]}
        edits[(f, i)] = row
        planted.no_op_edits.append(row["id"])
    for _ in range(2):  # the answer appended to the instruction
        f, i, row = next(pick)
        row["edit_instruction"] = row["edit_instruction"] + f" (The answer is {row['original_answer']}.)"
        edits[(f, i)] = row
        planted.answer_leaks.append(row["id"])
    (_, _, a), (fb, ib, b) = next(pick), next(pick)  # two ids, one source image, different questions
    b["source_image"] = {"bytes": a["source_image"]["bytes"], "path": b["source_image"]["path"]}
    edits[(fb, ib)] = b
    planted.duplicate_sources += [a["id"], b["id"]]
    fc, _, c = next(pick)  # an exact duplicate pair: the same row again under another id
    copy = dict(c, id=c["id"] + "-copy")
    planted.duplicate_pairs += [c["id"], copy["id"]]

    bench_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for n, template in enumerate(REWORDED):
        f, i, row = next(pick)
        name = f"images/item{n}.jpg"
        (bench_dir / "images").mkdir(exist_ok=True)
        (bench_dir / name).write_bytes(reencode(row["source_image"]["bytes"]))
        lines.append({"id": f"bench-{n}", "image": name, "question": template.format(q=row["original_question"].lower())})
        planted.contaminated.append(row["id"])
    (bench_dir / "bench.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))

    for f, table in tables.items():
        new_rows = [edits.get((f, i), row) for i, row in enumerate(table.to_pylist())]
        if f == fc:
            new_rows.append(copy)
        pq.write_table(type(table).from_pylist(new_rows, schema=table.schema), f)
    for kind in ("no_op_edits", "answer_leaks", "duplicate_sources", "duplicate_pairs", "contaminated"):
        getattr(planted, kind).sort()
    return planted
