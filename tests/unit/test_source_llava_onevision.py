"""The `llava-onevision` source preset: LLaVA-OneVision-1.5 instruct rows read as the Uni-Edit release reads them
(data_gen/first_process_ov_example.py): first turn only, one image per row, the release's per-subject caps."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from uniedit_synth.core.config import SourceSpec
from uniedit_synth.sources import open_source
from uniedit_synth.sources.llava import LLAVA_ONEVISION_CAPS


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def ov_row(i: int, subject: str, *, images: int = 1, turns: int = 2) -> dict:
    messages = []
    for turn in range(turns):
        prefix = "<|vision_start|><img_start><image><img_end>\n" if turn == 0 else ""
        messages += [
            {"role": "user", "content": f"{prefix}Question {i}.{turn}?"},
            {"role": "assistant", "content": f"Answer {i}.{turn}"},
        ]
    return {"id": f"r{i}", "images": [f"{subject}/{i}.png" for _ in range(images)], "messages": messages,
            "subject": subject}


def read(path: Path, **spec: object) -> list:
    return list(open_source(SourceSpec(spec=str(path), preset="llava-onevision", **spec), seed=0, limit=None))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_the_caps_are_the_releases() -> None:
    assert LLAVA_ONEVISION_CAPS == {
        **{subject: 20_000 for subject in (
            "allava_instruct_laion4v", "arxiv_figs", "coco", "code_feedback_66k", "geomverse", "sherlock")},
        "CLEVR": 120_000, "CLEVR-Math": 120_000, "vg": 120_000, "vsr": 120_000,
        "ocr": 60_000,
        "*": 0,  # subjects outside the release's list are not read
    }


def test_first_turn_only_one_image_and_the_question_after_the_placeholder(tmp_path: Path) -> None:
    rows = [ov_row(0, "CLEVR"), ov_row(1, "ocr", images=2), ov_row(2, "vg", turns=0), ov_row(3, "not_listed")]
    records = read(write_jsonl(tmp_path / "ov.jsonl", rows))
    by_id = {record.id.split("/", 1)[1]: record for record in records}
    assert set(by_id) == {"r0#0", "r1#0", "r2#0"}  # one record per row; the unlisted subject is not read
    assert (by_id["r0#0"].question, by_id["r0#0"].answer) == ("Question 0.0?", "Answer 0.0")
    assert by_id["r0#0"].image_path == "CLEVR/0.png" and by_id["r0#0"].invalid is None
    assert "multi-image" in by_id["r1#0"].invalid  # the release keeps rows with exactly one image
    assert "no human/gpt turn pair" in by_id["r2#0"].invalid
    all_turns = read(tmp_path / "ov.jsonl", options={"turns": "all"})
    assert sorted(r.id.split("/", 1)[1] for r in all_turns if r.invalid is None) == ["r0#0", "r0#1"]


def test_subject_caps_keep_a_uniform_sample_per_subject(tmp_path: Path) -> None:
    rows = [ov_row(i, subject) for i, subject in enumerate(["CLEVR"] * 6 + ["ocr"] * 3 + ["sherlock"] * 2)]
    path = write_jsonl(tmp_path / "ov.jsonl", rows)
    defaults = Counter(r.meta["subject"] for r in read(path))
    assert defaults == {"CLEVR": 6, "ocr": 3, "sherlock": 2}  # under the release's caps: all kept
    capped = read(path, subject_caps={"CLEVR": 2, "ocr": 1, "*": 0})
    assert Counter(r.meta["subject"] for r in capped) == {"CLEVR": 2, "ocr": 1}
    again = read(path, subject_caps={"CLEVR": 2, "ocr": 1, "*": 0})
    assert [r.id for r in again] == [r.id for r in capped]  # seeded: the same sample every run


def test_parquet_rows_with_conversations_and_image_bytes(tmp_path: Path) -> None:
    table = pa.Table.from_pylist([
        {"id": "p0", "image": {"bytes": png(), "path": "a.png"}, "subject": "coco",
         "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."},
                           {"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Grey."}]},
        {"id": "p1", "image": {"bytes": png(), "path": "b.png"}, "subject": "mathvision",
         "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]},
    ])
    pq.write_table(table, tmp_path / "ov.parquet")
    [record] = read(tmp_path / "ov.parquet")
    assert (record.question, record.answer, record.meta["subject"]) == ("What is it?", "A cat.", "coco")


@pytest.mark.parametrize("preset", ["llava-onevision"])
def test_the_preset_is_listed(preset: str) -> None:
    from uniedit_synth.sources.rows import known_presets

    assert preset in known_presets()
