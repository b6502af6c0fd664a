"""Wrong-typed fields are `invalid_input` with the type named, never silently converted: only answer columns
declared as lists (by name, `answers`/`labels`, or by the data set's Arrow schema, or a preset) get the
majority vote."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from uniedit_synth.core.config import SourceSpec
from uniedit_synth.sources import open_source


def read(spec: str) -> dict[str, object]:
    source = open_source(SourceSpec(spec=spec), seed=0, limit=None)
    return {record.id.split("/", 1)[1]: record for record in source}


@pytest.mark.parametrize("field, value, problem", [
    ("question", ["What color is it?", "How many?"], "question is a list"),
    ("question", {"text": "What color is it?", "alt": "How many?"}, "question is an object"),
    ("question", True, "question is a boolean"),
    ("answer", True, "answer is a boolean (true)"),
    ("answer", float("nan"), "answer is not a finite number (nan)"),
    ("answer", {"value": "red"}, "answer is an object"),
    ("answer", ["red", "red", "blue"], "answer is a list"),
    ("answer", {"answer": "red"}, "answer is an object"),
])
def test_a_wrong_type_is_invalid_with_the_type_named(tmp_path: Path, field: str, value: object, problem: str):
    row = {"id": "x", "image": "a.png", "question": "What color is it?", "answer": "red", field: value}
    good = {"id": "ok", "image": "a.png", "question": "What color is it?", "answer": "red"}
    path = tmp_path / "vqa.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")  # json writes NaN as NaN
    records = read(str(path))
    assert records["ok"].invalid is None and records["ok"].answer == "red"
    assert records["x"].invalid is not None and problem in records["x"].invalid, records["x"].invalid


def test_numbers_stay_answers(tmp_path: Path):
    path = tmp_path / "vqa.jsonl"
    path.write_text(json.dumps({"id": "n", "image": "a.png", "question": "How many?", "answer": 3}) + "\n"
                    + json.dumps({"id": "f", "image": "a.png", "question": "How much?", "answer": 2.5}) + "\n")
    records = read(str(path))
    assert (records["n"].answer, records["f"].answer) == ("3", "2.5")
    assert records["n"].invalid is None and records["f"].invalid is None


def test_answers_column_by_name_gets_the_majority_vote(tmp_path: Path):
    path = tmp_path / "vqa.jsonl"
    path.write_text(json.dumps({"id": "v", "image": "a.png", "question": "What color?",
                                "answers": ["red", "blue", "red"]}) + "\n")
    record = read(str(path))["v"]
    assert record.invalid is None and record.answer == "red"


def test_a_list_column_declared_by_the_parquet_schema_gets_the_vote(tmp_path: Path):
    table = pa.table({
        "image": ["a.png", "b.png"],
        "question": ["Max value?", "Which year?"],
        "label": pa.array([["42", "42", "41"], ["2019"]], pa.list_(pa.string())),
    })
    pq.write_table(table, tmp_path / "charts.parquet")
    records = list(open_source(SourceSpec(spec=str(tmp_path / "charts.parquet")), seed=0, limit=None))
    assert [(r.answer, r.invalid) for r in records] == [("42", None), ("2019", None)]
