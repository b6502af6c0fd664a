"""Any exception while reading, resolving or validating one record is that record's `invalid_input` reject:
every source form gets rows that raise inside each step (mapping the row, resolving its image path, validating
it), and the run still finishes with every row accounted for."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from uniedit_synth.core.config import load_pipeline
from uniedit_synth.core.records import IMAGE_STRUCT
from uniedit_synth.engine.driver import run_synth
from uniedit_synth.sources import validate as validate_module
from uniedit_synth.sources.llava import ConversationMapper
from uniedit_synth.sources.rows import TableMapper

GOOD = ("What color is the large square?", "red")
MAP_POISON = "POISON-MAP: what is this?"
VALIDATE_POISON = "POISON-VALIDATE: what is this?"
NUL_PATH = "bad\x00name.png"


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows mentioning MAP_POISON raise inside the row mapper; VALIDATE_POISON inside validation."""

    def raising_map(original: Callable) -> Callable:
        def map_row(self, row):
            if "POISON-MAP" in repr(row):
                raise RuntimeError("poisoned row in the mapper")
            return original(self, row)

        return map_row

    monkeypatch.setattr(TableMapper, "map", raising_map(TableMapper.map))
    monkeypatch.setattr(ConversationMapper, "map", raising_map(ConversationMapper.map))
    original_clean = validate_module.clean_text

    def clean_text(value, field, policy):
        if isinstance(value, str) and "POISON-VALIDATE" in value:
            raise KeyError("poisoned text in validation")
        return original_clean(value, field, policy)

    monkeypatch.setattr(validate_module, "clean_text", clean_text)


def png(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (64, 48), (40, 90, 160))
    image.paste(colour, (8, 8, 32, 32))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def qa_rows() -> list[dict]:
    return [
        {"id": "good", "image": "good.png", "question": GOOD[0], "answer": GOOD[1]},
        {"id": "map", "image": "good.png", "question": MAP_POISON, "answer": "red"},
        {"id": "nul", "image": NUL_PATH, "question": "What color is it?", "answer": "red"},
        {"id": "validate", "image": "good.png", "question": VALIDATE_POISON, "answer": "red"},
    ]


def make_source(form: str, root: Path) -> str:
    (root / "good.png").write_bytes(png())
    rows = qa_rows()
    if form == "jsonl":
        (root / "vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(root / "vqa.jsonl")
    if form == "json":
        (root / "vqa.json").write_text(json.dumps(rows))
        return str(root / "vqa.json")
    if form == "csv":
        with (root / "vqa.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return str(root / "vqa.csv")
    if form == "image-folder":
        (root / "metadata.jsonl").write_text(
            "".join(json.dumps({"file_name": r["image"], **{k: v for k, v in r.items() if k != "image"}}) + "\n"
                    for r in rows)
        )
        return str(root)
    if form == "parquet":
        table = pa.table({
            "image": pa.array([{"bytes": None, "path": r["image"]} for r in rows], IMAGE_STRUCT),
            "question": [r["question"] for r in rows],
            "answer": [r["answer"] for r in rows],
            "id": [r["id"] for r in rows],
        })
        pq.write_table(table, root / "vqa.parquet")
        return str(root / "vqa.parquet")
    if form == "hf":
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(root / "saved"))
        return f"hf:{root / 'saved'}"
    if form == "llava":
        llava = [{"id": r["id"], "image": r["image"], "conversations": [
            {"from": "human", "value": "<image>\n" + r["question"]}, {"from": "gpt", "value": r["answer"]}]}
            for r in rows]
        (root / "llava.json").write_text(json.dumps(llava))
        return str(root / "llava.json")
    raise AssertionError(form)


@pytest.mark.parametrize("form", ["jsonl", "json", "csv", "image-folder", "parquet", "hf", "llava"])
def test_a_row_that_raises_in_any_step_is_its_own_invalid_input(tmp_path: Path, poisoned: None, form: str):
    import pyarrow.parquet as pq_read

    root = tmp_path / "src"  # beside the run: an --out inside the source's folder is refused
    root.mkdir()
    source = make_source(form, root)
    config = load_pipeline("default", {
        "source": {"spec": source, "image_root": str(root)},
        "engine": {"kind": "inline", "shard_size": 2},
        "stages": {"classify": {"drop_categories": []}},
    })
    summary = run_synth(config, str(tmp_path / "run"), progress=False)
    assert summary.read == 4
    rejects = [row for path in sorted((tmp_path / "run" / "rejects").glob("shard-*.parquet"))
               for row in pq_read.read_table(path).to_pylist()]
    invalid = {row["reject_detail"] for row in rejects if row["reject_reason"] == "invalid_input"}
    assert len(invalid) == 3, invalid
    assert any("RuntimeError: poisoned row in the mapper" in d for d in invalid), invalid
    assert any("NUL byte" in d for d in invalid), invalid
    assert any("KeyError" in d and "poisoned text in validation" in d for d in invalid), invalid
