"""open_source on small local data sets of every form: HF saved / parquet, JSONL+images, CSV, JSON, image
folder, LLaVA JSON/JSONL and each preset; deterministic order, shuffling, limit prefixes and caps."""

from __future__ import annotations

import io
import json
import os
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from uniedit_synth.core.config import InputPolicy, SourceSpec  # noqa: E402
from uniedit_synth.core.errors import SourceError  # noqa: E402
from uniedit_synth.core.records import IMAGE_STRUCT, VQARecord, with_hf_metadata  # noqa: E402
from uniedit_synth.sources import image_root_for, open_source, parse_hf_spec  # noqa: E402
from uniedit_synth.sources.arrange import capped_mask, permutation  # noqa: E402
from uniedit_synth.sources.rows import majority_answer  # noqa: E402
from uniedit_synth.sources.validate import InvalidInput, validate_record  # noqa: E402

POLICY = InputPolicy()
COLOURS = [(255, 0, 0), (0, 160, 0), (0, 0, 255), (250, 200, 0), (120, 0, 200), (0, 200, 200)]


def png(colour: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def pixel(data: bytes) -> tuple[int, int, int]:
    return Image.open(io.BytesIO(data)).convert("RGB").getpixel((0, 0))


def read(spec: SourceSpec | str, *, seed: int = 0, limit: int | None = None) -> list[VQARecord]:
    if isinstance(spec, str):
        spec = SourceSpec(spec=spec)
    return list(open_source(spec, seed=seed, limit=limit))


def ids(spec: SourceSpec | str, **kwargs: Any) -> list[str]:
    return [r.id for r in read(spec, **kwargs)]


def write_images(folder: Path, count: int = 6) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"{i}.png").write_bytes(png(COLOURS[i % len(COLOURS)]))


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def qa_rows(count: int = 6, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": f"q{i}",
            "image": f"images/{i % 6}.png",
            "question": f"What is shown in picture {i}?",
            "answer": f"answer {i}",
            "subject": "even" if i % 2 == 0 else "odd",
            **extra,
        }
        for i in range(count)
    ]


def save_hf(path: Path, data: dict[str, list], features: dict[str, Any]) -> Path:
    from datasets import Dataset, Features

    Dataset.from_dict(data, features=Features(features) if features else None).save_to_disk(str(path))
    return path


@pytest.fixture()
def jsonl_source(tmp_path: Path) -> Path:
    write_images(tmp_path / "images")
    return write_jsonl(tmp_path / "vqa.jsonl", qa_rows(20))


# ------------------------------------------------------------------------------------------ row files


def test_jsonl_with_image_paths(jsonl_source: Path) -> None:
    source = open_source(SourceSpec(spec=str(jsonl_source)), seed=0, limit=None)
    records = list(source)
    assert [r.id for r in records] == [f"vqa/q{i}" for i in range(20)]
    first = records[0]
    assert first.image is None and first.image_path == "images/0.png"  # loading happens in validation
    assert first.meta["subject"] == "even" and first.source == "vqa"
    assert source.image_root == jsonl_source.parent.resolve()
    clean = validate_record(first, POLICY, source.image_root)
    assert pixel(clean.image) == COLOURS[0]


def test_jsonl_without_ids_gets_stable_content_keys(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    rows = [{k: v for k, v in r.items() if k != "id"} for r in qa_rows(4)]
    path = write_jsonl(tmp_path / "noid.jsonl", rows)
    first, second = ids(str(path)), ids(str(path))
    assert first == second and len(set(first)) == 4
    assert all(i.startswith("noid/") and len(i) == len("noid/") + 16 for i in first)
    rows[0]["answer"] = "something else"
    write_jsonl(path, rows)
    changed = ids(str(path))
    assert changed[0] != first[0] and changed[1:] == first[1:]


def test_bad_lines_become_invalid_records_and_the_stream_goes_on(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    good = qa_rows(2)
    lines = [
        json.dumps(good[0]).encode(),
        b"{not json",
        json.dumps([1, 2]).encode(),
        json.dumps({"id": "latin1", "image": "images/1.png", "question": "caf", "answer": "x"})
        .encode()
        .replace(b'"caf"', b'"caf\xe9?"'),
        json.dumps(good[1]).encode(),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n\n")
    records = read(str(path))
    assert len(records) == 5
    assert [r.invalid is None for r in records] == [True, False, False, False, True]
    assert "malformed JSON on line 2" in records[1].invalid
    assert "not an object" in records[2].invalid
    assert records[3].id == "mixed/latin1" and "non-UTF-8" in records[3].invalid
    for bad in records[1:4]:
        with pytest.raises(InvalidInput):
            validate_record(bad, POLICY, tmp_path)
        json.dumps(bad.model_dump(exclude={"image"}), ensure_ascii=False).encode("utf-8")  # serialisable


def test_missing_image_field_and_duplicate_ids_stay_in_the_stream(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "image": "x.png", "question": "q?", "answer": "y"},
        {"id": "a", "image": "x.png", "question": "q?", "answer": "y"},
        {"id": "b", "question": "no picture?", "answer": "n"},
    ]
    records = read(str(write_jsonl(tmp_path / "dup.jsonl", rows)))
    assert [r.id for r in records] == ["dup/a", "dup/a", "dup/b"]
    assert records[2].invalid == "no image"


def test_csv_with_quoted_multiline_fields(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    (tmp_path / "data.csv").write_text(
        'id,image,question,answer\n1,images/0.png,"Two lines,\nwith a comma?",yes\n2,images/1.png,Plain?,no\n',
        encoding="utf-8",
    )
    records = read(str(tmp_path / "data.csv"))
    assert [(r.id, r.question, r.answer) for r in records] == [
        ("data/1", "Two lines,\nwith a comma?", "yes"),
        ("data/2", "Plain?", "no"),
    ]
    shuffled = read(SourceSpec(spec=str(tmp_path / "data.csv"), shuffle=True), seed=5)
    assert sorted(r.id for r in shuffled) == ["data/1", "data/2"]
    assert {r.question for r in shuffled} == {"Two lines,\nwith a comma?", "Plain?"}


def test_json_array_is_read_incrementally_and_at_random(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    rows = qa_rows(12)
    rows[3]["question"] = "long " * 20_000  # bigger than the first decoding window
    rows[5]["question"] = "naïve café — ünïcödé?"
    (tmp_path / "arr.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    records = read(str(tmp_path / "arr.json"))
    assert [r.question for r in records] == [r["question"] for r in rows]
    shuffled = read(SourceSpec(spec=str(tmp_path / "arr.json"), shuffle=True), seed=2)
    assert sorted(r.id for r in shuffled) == sorted(r.id for r in records)
    assert {r.id: r.question for r in shuffled} == {r.id: r.question for r in records}


def test_malformed_json_array_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('[{"question": "a", "answer": "b", "image": "x.png"} {"oops"]')
    with pytest.raises(SourceError, match="malformed JSON"):
        read(str(tmp_path / "bad.json"))


def test_json_object_with_a_rows_key(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    (tmp_path / "obj.json").write_text(json.dumps({"info": {}, "questions": qa_rows(3)}))
    assert ids(str(tmp_path / "obj.json")) == ["obj/q0", "obj/q1", "obj/q2"]


def test_image_folder_with_metadata_jsonl(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    write_images(folder)
    write_jsonl(
        folder / "metadata.jsonl",
        [{"file_name": f"{i}.png", "question": f"Colour {i}?", "answer": f"c{i}"} for i in range(3)],
    )
    source = open_source(SourceSpec(spec=str(folder)), seed=0, limit=None)
    records = list(source)
    assert [r.image_path for r in records] == ["0.png", "1.png", "2.png"]
    assert all(r.id.startswith("folder/") for r in records)
    assert pixel(validate_record(records[2], POLICY, source.image_root).image) == COLOURS[2]


# ----------------------------------------------------------------------------------------------- LLaVA


def llava_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": "conv1",
            "image": "images/0.png",
            "data_source": "coco",
            "conversations": [
                {"from": "system", "value": "You are helpful."},
                {"from": "human", "value": "<image>\nWhat colour is it?"},
                {"from": "gpt", "value": "Red."},
                {"from": "human", "value": "And the shape?"},
                {"from": "gpt", "value": "A square."},
            ],
        },
        {
            "id": "multi",
            "image": ["images/0.png", "images/1.png"],
            "conversations": [
                {"from": "human", "value": "<image><image> Compare."},
                {"from": "gpt", "value": "Same."},
            ],
        },
        {
            "id": "text-only",
            "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
        },
        {"id": "empty", "image": "images/1.png", "conversations": []},
    ]


@pytest.mark.parametrize("form", ["json", "jsonl"])
def test_llava_conversations(tmp_path: Path, form: str) -> None:
    write_images(tmp_path / "images")
    path = tmp_path / f"llava.{form}"
    if form == "json":
        path.write_text(json.dumps(llava_rows()))
    else:
        write_jsonl(path, llava_rows())
    records = read(str(path))
    assert [r.id for r in records] == [
        "llava/conv1#0",
        "llava/conv1#1",
        "llava/multi#0",
        "llava/text-only#0",
        "llava/empty#0",
    ]
    assert (records[0].question, records[0].answer) == ("What colour is it?", "Red.")
    assert (records[1].question, records[1].answer) == ("And the shape?", "A square.")
    assert records[0].meta["data_source"] == "coco" and records[1].meta["turn"] == 1
    assert records[0].invalid is None and records[0].image_path == "images/0.png"
    assert records[2].invalid == "multi-image row"
    assert records[3].invalid == "no image"
    assert "no human/gpt turn pair" in records[4].invalid
    first_only = read(SourceSpec(spec=str(path), options={"turns": "first"}))
    assert [r.id for r in first_only][:2] == ["llava/conv1#0", "llava/multi#0"]


def test_llava_preset_on_parquet(tmp_path: Path) -> None:
    conversations = [[{"from": "human", "value": "<image>\nCount?"}, {"from": "gpt", "value": "3"}]]
    table = pa.table(
        {
            "id": ["p1"],
            "image": pa.array([{"bytes": png(COLOURS[1]), "path": "p1.png"}], IMAGE_STRUCT),
            "conversations": conversations,
            "data_source": ["x"],
        }
    )
    pq.write_table(table, tmp_path / "ov.parquet")
    [rec] = read(SourceSpec(spec=str(tmp_path / "ov.parquet"), preset="llava"))
    assert (rec.id, rec.question, rec.answer) == ("ov/p1#0", "Count?", "3")
    assert pixel(rec.image) == COLOURS[1]


def test_llava_bad_turns_option(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "l.jsonl", llava_rows())
    with pytest.raises(SourceError, match="turns"):
        read(SourceSpec(spec=str(path), options={"turns": "last"}))


# ------------------------------------------------------------------------------------- HF and parquet


def test_hf_saved_dataset_with_image_feature(tmp_path: Path) -> None:
    from datasets import Image as HFImage
    from datasets import Value

    saved = save_hf(
        tmp_path / "saved",
        {
            "image": [png(c) for c in COLOURS[:3]],
            "question": ["a?", "b?", "c?"],
            "answer": ["1", "2", "3"],
            "id": ["x", "y", "z"],
        },
        {"image": HFImage(), "question": Value("string"), "answer": Value("string"), "id": Value("string")},
    )
    records = read(f"hf:{saved}")
    assert [r.id for r in records] == ["saved/x", "saved/y", "saved/z"]
    assert [pixel(r.image) for r in records] == COLOURS[:3]
    assert ids(str(saved)) == [r.id for r in records]  # a bare path to a saved data set works too


def test_hf_dataset_dict_split_selection(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    def part(tag: str) -> Dataset:
        return Dataset.from_dict(
            {"image": [png(COLOURS[0])], "question": [f"{tag}?"], "answer": [tag], "id": [tag]}
        )

    DatasetDict({"train": part("tr"), "validation": part("va")}).save_to_disk(str(tmp_path / "dd"))
    assert ids(f"hf:{tmp_path / 'dd'}@validation") == ["dd/va"]
    assert ids(f"hf:{tmp_path / 'dd'}") == ["dd/tr"]
    with pytest.raises(SourceError, match="no split 'test'"):
        read(f"hf:{tmp_path / 'dd'}@test")


def image_parquet(path: Path, count: int = 10, row_group_size: int = 4) -> Path:
    schema = with_hf_metadata(
        pa.schema(
            [
                ("image", IMAGE_STRUCT),
                ("question", pa.string()),
                ("answer", pa.string()),
                ("id", pa.string()),
                ("subject", pa.string()),
            ]
        ),
        image_columns=("image",),
    )
    table = pa.Table.from_pylist(
        [
            {
                "image": {"bytes": png(COLOURS[i % 6]), "path": f"{i}.png"},
                "question": f"q{i}?",
                "answer": f"a{i}",
                "id": f"r{i:02d}",
                "subject": "even" if i % 2 == 0 else "odd",
            }
            for i in range(count)
        ],
        schema=schema,
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_parquet_file_with_hf_image_structs(tmp_path: Path) -> None:
    records = read(str(image_parquet(tmp_path / "imgs.parquet")))
    assert [r.id for r in records] == [f"imgs/r{i:02d}" for i in range(10)]
    assert pixel(records[3].image) == COLOURS[3] and records[3].image_path == "3.png"


def test_parquet_raw_bytes_and_relative_paths(tmp_path: Path) -> None:
    write_images(tmp_path / "pics")
    pq.write_table(
        pa.table({"image": [png(COLOURS[4])], "question": ["q?"], "answer": ["a"]}), tmp_path / "raw.parquet"
    )
    pq.write_table(
        pa.table({"image": ["pics/2.png"], "question": ["q?"], "answer": ["a"]}), tmp_path / "paths.parquet"
    )
    [raw] = read(str(tmp_path / "raw.parquet"))
    assert pixel(raw.image) == COLOURS[4]
    source = open_source(SourceSpec(spec=str(tmp_path / "paths.parquet")), seed=0, limit=None)
    [by_path] = list(source)
    assert by_path.image is None and by_path.image_path == "pics/2.png"
    assert pixel(validate_record(by_path, POLICY, source.image_root).image) == COLOURS[2]


def test_parquet_directory_and_glob(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    for name in ("b", "a"):
        image_parquet(tmp_path / "shards" / f"{name}.parquet", count=3)
    by_dir = read(str(tmp_path / "shards"))
    by_glob = read(str(tmp_path / "shards" / "*.parquet"))
    assert [r.id for r in by_dir] == [r.id for r in by_glob]
    assert len(by_dir) == 6 and by_dir[0].id == "shards/r00"


def test_hf_parquet_builder_and_streaming(tmp_path: Path) -> None:
    path = image_parquet(tmp_path / "built.parquet")
    options = {"data_files": str(path), "cache_dir": str(tmp_path / "hf-cache")}
    mapped = read(SourceSpec(spec="hf:parquet", options=options))
    streamed = read(SourceSpec(spec="hf:parquet", options={**options, "streaming": True}))
    assert [r.id for r in mapped] == [r.id for r in streamed] == [f"built/r{i:02d}" for i in range(10)]
    assert pixel(streamed[5].image) == COLOURS[5]


# ---------------------------------------------------------------------------------------------- presets


def build_preset_table(tmp_path: Path, name: str) -> Path:
    """A tiny table shaped like the real data set's HF version (see PRESETS[...].verified)."""
    from datasets import ClassLabel, Sequence, Value
    from datasets import Image as HFImage

    img = [png(COLOURS[0]), png(COLOURS[1])]
    answer_feature = {
        "answer": Value("string"),
        "answer_confidence": Value("string"),
        "answer_id": Value("int64"),
    }
    if name == "vqav2":
        data = {
            "question_type": ["what color", "how many"],
            "multiple_choice_answer": ["red", "2"],
            "answers": [
                [{"answer": a, "answer_confidence": "yes", "answer_id": j} for j, a in enumerate(ans)]
                for ans in (["red", "Red", "blue", "blue", "red"], ["2", "3", "3", "2"])
            ],
            "image_id": [1, 2],
            "answer_type": ["other", "number"],
            "question_id": [101, 102],
            "question": ["What color is the bus?", "How many dogs?"],
            "image": img,
        }
        features = {
            "question_type": Value("string"),
            "multiple_choice_answer": Value("string"),
            "answers": [answer_feature],
            "image_id": Value("int64"),
            "answer_type": Value("string"),
            "question_id": Value("int64"),
            "question": Value("string"),
            "image": HFImage(),
        }
    elif name == "aokvqa":
        data = {
            "image": img,
            "question_id": ["qa", "qb"],
            "question": ["Why?", "What sport?"],
            "choices": [["rain", "sun", "snow", "fog"], ["golf", "polo", "tennis", "ski"]],
            "correct_choice_idx": [1, 2],
            "direct_answers": [["sun", "sunny", "sun"], []],
            "difficult_direct_answer": [False, True],
            "rationales": [["It is bright."], ["Rackets."]],
        }
        features = {
            "image": HFImage(),
            "question_id": Value("string"),
            "question": Value("string"),
            "choices": Sequence(Value("string")),
            "correct_choice_idx": Value("int8"),
            "direct_answers": Sequence(Value("string")),
            "difficult_direct_answer": Value("bool"),
            "rationales": Sequence(Value("string")),
        }
    elif name == "scienceqa":
        data = {
            "image": [img[0], None, img[1]],
            "question": ["Which is a mammal?", "Text only?", "Bad index?"],
            "choices": [["shark", "whale"], ["a", "b"], ["x"]],
            "answer": [1, 0, 4],
            "hint": ["", "", ""],
            "task": ["closed choice"] * 3,
            "grade": ["grade4"] * 3,
            "subject": ["natural science", "language science", "natural science"],
            "topic": ["biology"] * 3,
            "category": ["Classify mammals", "Grammar", "Physics"],
            "skill": ["s"] * 3,
            "lecture": ["..."] * 3,
            "solution": ["..."] * 3,
        }
        features = {
            "image": HFImage(),
            "question": Value("string"),
            "choices": Sequence(Value("string")),
            "answer": Value("int8"),
            **{
                k: Value("string")
                for k in (
                    "hint",
                    "task",
                    "grade",
                    "subject",
                    "topic",
                    "category",
                    "skill",
                    "lecture",
                    "solution",
                )
            },
        }
    elif name == "textvqa":
        data = {
            "image_id": ["i1", "i2"],
            "question_id": [7, 8],
            "question": ["What brand?", "What number?"],
            "question_tokens": [["what", "brand"], ["what", "number"]],
            "image": img,
            "image_width": [8, 8],
            "image_height": [8, 8],
            "flickr_original_url": ["", ""],
            "flickr_300k_url": ["", ""],
            "answers": [["nokia"] * 6 + ["nokla"] * 4, ["12", "12", "21"]],
            "image_classes": [["phone"], ["sign"]],
            "set_name": ["train", "train"],
        }
        features = {
            "image_id": Value("string"),
            "question_id": Value("int32"),
            "question": Value("string"),
            "question_tokens": Sequence(Value("string")),
            "image": HFImage(),
            "image_width": Value("int32"),
            "image_height": Value("int32"),
            "flickr_original_url": Value("string"),
            "flickr_300k_url": Value("string"),
            "answers": Sequence(Value("string")),
            "image_classes": Sequence(Value("string")),
            "set_name": Value("string"),
        }
    elif name == "chartqa":
        data = {
            "image": img,
            "query": ["Max value?", "Which year?"],
            "label": [["42"], ["2019"]],
            "human_or_machine": [0, 1],
        }
        features = {
            "image": HFImage(),
            "query": Value("string"),
            "label": Sequence(Value("string")),
            "human_or_machine": ClassLabel(names=["human", "machine"]),
        }
    elif name == "clevr":
        data = {
            "question_index": [0, 1],
            "question_family_index": [3, 9],
            "image_filename": ["a.png", "b.png"],
            "split": ["val", "val"],
            "question": ["How many cubes?", "What colour is the sphere?"],
            "answer": ["2", "red"],
            "image": img,
            "image_index": [0, 1],
        }
        features = {
            "question_index": Value("int64"),
            "question_family_index": Value("int64"),
            "image_filename": Value("string"),
            "split": Value("string"),
            "question": Value("string"),
            "answer": Value("string"),
            "image": HFImage(),
            "image_index": Value("int64"),
        }
    else:
        raise AssertionError(name)
    return save_hf(tmp_path / name, data, features)


def test_preset_vqav2(tmp_path: Path) -> None:
    records = read(SourceSpec(spec=f"hf:{build_preset_table(tmp_path, 'vqav2')}", preset="vqav2"))
    assert [r.id for r in records] == ["vqav2/101", "vqav2/102"]
    assert records[0].answer == "red"  # red×3 (case-insensitive) beats blue×2
    assert records[1].answer == "2"  # 2×2 ties 3×2: alphabetical tie-break, not row order
    assert [r.category for r in records] == [None, "count"]
    assert records[0].meta["question_type"] == "what color" and len(records[0].meta["answers"]) == 5
    assert pixel(records[1].image) == COLOURS[1]


def test_preset_aokvqa(tmp_path: Path) -> None:
    records = read(SourceSpec(spec=f"hf:{build_preset_table(tmp_path, 'aokvqa')}", preset="aokvqa"))
    assert [(r.id, r.answer) for r in records] == [("aokvqa/qa", "sun"), ("aokvqa/qb", "tennis")]
    assert records[0].meta["choices"] == ["rain", "sun", "snow", "fog"]
    assert records[0].meta["rationales"] == ["It is bright."]


def test_preset_scienceqa(tmp_path: Path) -> None:
    records = read(SourceSpec(spec=f"hf:{build_preset_table(tmp_path, 'scienceqa')}", preset="scienceqa"))
    assert records[0].answer == "whale" and records[0].invalid is None
    assert records[0].category is None  # ScienceQA's own "category" is not a task category
    assert records[0].meta["subject"] == "natural science" and records[0].meta["choices"] == [
        "shark",
        "whale",
    ]
    assert records[1].invalid == "no image"
    assert "out of range" in records[2].invalid
    assert len({r.id for r in records}) == 3 and all(r.id.startswith("scienceqa/") for r in records)


def test_preset_textvqa(tmp_path: Path) -> None:
    records = read(SourceSpec(spec=f"hf:{build_preset_table(tmp_path, 'textvqa')}", preset="textvqa"))
    assert [(r.id, r.answer, r.category) for r in records] == [
        ("textvqa/7", "nokia", "ocr"),
        ("textvqa/8", "12", "ocr"),
    ]


def test_preset_chartqa(tmp_path: Path) -> None:
    records = read(SourceSpec(spec=f"hf:{build_preset_table(tmp_path, 'chartqa')}", preset="chartqa"))
    assert [(r.question, r.answer) for r in records] == [("Max value?", "42"), ("Which year?", "2019")]
    assert records[1].meta["human_or_machine"] == "machine"  # class labels come out as names


def test_preset_clevr(tmp_path: Path) -> None:
    records = read(SourceSpec(spec=f"hf:{build_preset_table(tmp_path, 'clevr')}", preset="clevr"))
    assert [(r.id, r.answer) for r in records] == [("clevr/0", "2"), ("clevr/1", "red")]
    assert records[1].meta["image_filename"] == "b.png"


def test_preset_gqa_joins_the_images_table(tmp_path: Path) -> None:
    from datasets import Image as HFImage
    from datasets import Value

    questions = save_hf(
        tmp_path / "gqa_instructions",
        {
            "id": ["g1", "g2", "g3"],
            "imageId": ["n1", "n2", "nX"],
            "question": ["Is it red?", "What is left?", "Lost?"],
            "answer": ["yes", "cup", "no"],
            "fullAnswer": ["Yes, it is red.", "A cup.", "No."],
        },
        {k: Value("string") for k in ("id", "imageId", "question", "answer", "fullAnswer")},
    )
    images = save_hf(
        tmp_path / "gqa_images",
        {"id": ["n2", "n1"], "image": [png(COLOURS[2]), png(COLOURS[1])]},
        {"id": Value("string"), "image": HFImage()},
    )
    spec = SourceSpec(
        spec=f"hf:{questions}", preset="gqa", options={"images": f"hf:{images}", "label": "gqa"}
    )
    records = read(spec)
    assert [r.id for r in records] == ["gqa/g1", "gqa/g2", "gqa/g3"]
    assert pixel(records[0].image) == COLOURS[1] and pixel(records[1].image) == COLOURS[2]
    assert records[2].invalid == "no image"  # no image with that key
    assert records[0].meta["fullAnswer"] == "Yes, it is red."


def test_user_columns_override_the_preset(tmp_path: Path) -> None:
    table = build_preset_table(tmp_path, "vqav2")
    records = read(
        SourceSpec(spec=f"hf:{table}", preset="vqav2", columns={"answer": "multiple_choice_answer"})
    )
    assert [r.answer for r in records] == ["red", "2"]
    records = read(SourceSpec(spec=f"hf:{table}", preset="vqav2", columns={"id": "image_id"}))
    assert [r.id for r in records] == ["vqav2/1", "vqav2/2"]


def test_column_mapping_for_jsonl(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    rows = [{"key": "k1", "picture": "images/0.png", "prompt_text": "Q?", "reply": "A", "task": "count"}]
    path = write_jsonl(tmp_path / "custom.jsonl", rows)
    [rec] = read(
        SourceSpec(
            spec=str(path),
            columns={
                "image": "picture",
                "question": "prompt_text",
                "answer": "reply",
                "id": "key",
                "category": "task",
            },
        )
    )
    assert (rec.id, rec.image_path, rec.question, rec.answer, rec.category) == (
        "custom/k1",
        "images/0.png",
        "Q?",
        "A",
        "count",
    )


def test_majority_answer_tie_break_is_order_independent() -> None:
    assert majority_answer(["b", "a", "b", "a"]) == majority_answer(["a", "b", "a", "b"]) == "a"
    assert majority_answer([{"answer": " Yes "}, {"answer": "yes"}, {"answer": "no"}]) == "Yes"
    assert majority_answer([]) == ""


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("spec", ["/definitely/not/here.jsonl", "notes.txt", "hf:", "empty-dir"])
def test_unknown_or_unreadable_sources_say_what_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(SourceError) as info:
        read(spec)
    message = str(info.value)
    assert "hf:<name" in message or "missing data set name" in message


def test_wrong_columns_and_unknown_preset_or_options(tmp_path: Path) -> None:
    table = build_preset_table(tmp_path, "chartqa")
    assert [r.answer for r in read(f"hf:{table}")] == [
        "42",
        "2019",
    ]  # query/label are guessed without a preset
    odd = save_hf(tmp_path / "odd", {"image": [png(COLOURS[0])], "ask": ["?"], "reply": ["!"]}, {})
    with pytest.raises(
        SourceError, match="no column found for: question, answer.*Available columns: image, ask"
    ):
        read(f"hf:{odd}")
    with pytest.raises(SourceError, match="mapped column.*question → 'asked'"):
        read(SourceSpec(spec=f"hf:{odd}", columns={"question": "asked", "answer": "reply"}))
    with pytest.raises(SourceError, match="unknown source preset 'vqa3'"):
        read(SourceSpec(spec=f"hf:{table}", preset="vqa3"))
    with pytest.raises(SourceError, match="unknown source.options"):
        read(SourceSpec(spec=f"hf:{table}", preset="chartqa", options={"streamign": True}))
    jsonl = write_jsonl(tmp_path / "x.jsonl", [{"img": "a.png", "q": "?", "a": "!"}])
    with pytest.raises(SourceError, match="no column found for: question, answer"):
        read(str(jsonl))


def test_parse_hf_spec() -> None:
    assert parse_hf_spec("hf:lmms-lab/GQA:testdev_balanced_instructions@testdev") == (
        "lmms-lab/GQA",
        "testdev_balanced_instructions",
        "testdev",
    )
    assert parse_hf_spec("hf:HuggingFaceM4/ChartQA@val") == ("HuggingFaceM4/ChartQA", None, "val")
    assert parse_hf_spec("hf:/data/saved") == ("/data/saved", None, None)


def test_scenes_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    from uniedit_synth.sources.scenes import ScenesSource

    calls: list[dict[str, Any]] = []

    class FakeScenes(ScenesSource):  # the real class's opening (opens, open), no world behind it
        label = "scenes"

        def __init__(self, **kwargs: Any) -> None:
            calls.append(kwargs)

        def __iter__(self):
            return iter([VQARecord(id=f"scenes/{i}", source="scenes") for i in range(calls[-1]["count"])])

        def estimated_len(self) -> int:
            return calls[-1]["count"]

    monkeypatch.setitem(
        sys.modules, "uniedit_synth.sources.scenes", types.SimpleNamespace(ScenesSource=FakeScenes)
    )
    spec = SourceSpec(spec="scenes", options={"image_size": 128, "shuffle_buffer": 10})
    assert len(read(spec, seed=3, limit=5)) == 5
    read(SourceSpec(spec="scenes"), seed=4)
    assert calls == [
        {"count": 5, "seed": 3, "defer_render": True, "image_size": 128},
        {"count": 300, "seed": 4, "defer_render": True},
    ]


# ------------------------------------------------------------------------------------ order and caps


def test_permutation_is_pinned() -> None:
    # Resume depends on this exact order: a change here silently reshuffles every resumed run.
    assert permutation(10, 0).tolist() == PINNED_PERMUTATION
    assert sorted(permutation(1000, 9).tolist()) == list(range(1000))
    assert permutation(50, 1).tolist() != permutation(50, 2).tolist()


PINNED_PERMUTATION = [5, 2, 4, 3, 9, 8, 1, 7, 0, 6]


def test_same_inputs_same_order(jsonl_source: Path) -> None:
    spec = SourceSpec(spec=str(jsonl_source), shuffle=True)
    first, again, other = ids(spec, seed=11), ids(spec, seed=11), ids(spec, seed=12)
    assert first == again
    assert sorted(first) == sorted(ids(str(jsonl_source)))
    assert first != other and first != ids(str(jsonl_source))


@pytest.mark.parametrize("form", ["jsonl", "parquet", "hf", "hf-streaming"])
def test_a_bigger_limit_keeps_the_earlier_records_in_place(tmp_path: Path, form: str) -> None:
    write_images(tmp_path / "images")
    if form == "jsonl":
        spec = SourceSpec(spec=str(write_jsonl(tmp_path / "d.jsonl", qa_rows(30))), shuffle=True)
    else:
        path = image_parquet(tmp_path / "d.parquet", count=30, row_group_size=7)
        if form == "parquet":
            spec = SourceSpec(spec=str(path), shuffle=True)
        else:
            options = {
                "data_files": str(path),
                "cache_dir": str(tmp_path / "c"),
                "shuffle_buffer": 8,
                "streaming": form == "hf-streaming",
            }
            spec = SourceSpec(spec="hf:parquet", shuffle=True, options=options)
    full = ids(spec, seed=3)
    assert len(full) == 30 and len(set(full)) == 30
    assert full != sorted(full)
    for limit in (0, 1, 7, 18):
        assert ids(spec, seed=3, limit=limit) == full[:limit]


def test_reservoir_caps(jsonl_source: Path) -> None:
    spec = SourceSpec(spec=str(jsonl_source), subject_key="subject", subject_caps={"even": 3})
    kept = read(spec, seed=1)
    counts = Counter(r.meta["subject"] for r in kept)
    assert counts == {"even": 3, "odd": 10}
    assert [r.id for r in kept] == sorted(
        (r.id for r in kept), key=lambda i: int(i.rsplit("q", 1)[1])
    )  # source order
    # a uniform sample, not the first three: different seeds pick different records
    picks = {tuple(r.id for r in read(spec, seed=s) if r.meta["subject"] == "even") for s in range(6)}
    assert len(picks) > 1
    # the kept set does not depend on shuffling or on the limit
    shuffled = read(spec.model_copy(update={"shuffle": True}), seed=1)
    assert sorted(r.id for r in shuffled) == sorted(r.id for r in kept)
    assert [r.id for r in read(spec.model_copy(update={"shuffle": True}), seed=1, limit=5)] == [
        r.id for r in shuffled
    ][:5]


def test_default_cap_and_zero_cap(jsonl_source: Path) -> None:
    spec = SourceSpec(spec=str(jsonl_source), subject_key="subject", subject_caps={"*": 2, "odd": 0})
    assert Counter(r.meta["subject"] for r in read(spec)) == {"even": 2}


def test_caps_on_a_streaming_source_match_the_positional_ones(tmp_path: Path) -> None:
    path = image_parquet(tmp_path / "d.parquet", count=20)
    caps = {"subject_key": "subject", "subject_caps": {"even": 4, "odd": 2}}
    positional = ids(SourceSpec(spec=str(path), **caps), seed=5)
    streaming = ids(
        SourceSpec(spec="hf:parquet", options={"data_files": str(path), "streaming": True}, **caps), seed=5
    )
    assert [i.split("/")[1] for i in positional] == [i.split("/")[1] for i in streaming]
    assert len(positional) == 6


def test_caps_need_a_subject_key(jsonl_source: Path) -> None:
    with pytest.raises(SourceError, match="subject_key"):
        read(SourceSpec(spec=str(jsonl_source), subject_caps={"even": 1}))


def test_capped_mask_is_exact() -> None:
    subjects = ["a"] * 50 + ["b"] * 5 + [None] * 3
    keep = capped_mask(subjects, {"a": 7, "*": 1}, seed=0)
    kept = Counter(s for s, k in zip(subjects, keep, strict=True) if k)
    assert kept == {"a": 7, "b": 1, None: 1}


def test_image_root_for_matches_the_opened_source(tmp_path: Path, jsonl_source: Path) -> None:
    folder = tmp_path / "folder"
    write_images(folder)
    write_jsonl(folder / "metadata.jsonl", [{"file_name": "0.png", "question": "q?", "answer": "a"}])
    (tmp_path / "pq").mkdir()
    image_parquet(tmp_path / "pq" / "a.parquet", count=2)
    specs = [
        SourceSpec(spec=str(jsonl_source)),
        SourceSpec(spec=str(folder)),
        SourceSpec(spec=str(tmp_path / "pq")),
        SourceSpec(spec=str(tmp_path / "pq" / "*.parquet")),
        SourceSpec(spec=str(jsonl_source), image_root=str(tmp_path / "elsewhere")),
    ]
    for spec in specs:
        source = open_source(spec, seed=0, limit=None)
        assert image_root_for(spec) == source.image_root
    assert image_root_for(SourceSpec(spec="scenes")) is None


def test_subject_column_mapping_caps_by_that_column(tmp_path: Path) -> None:
    write_images(tmp_path / "images")
    rows = [dict(r, topic="t" + str(i % 3)) for i, r in enumerate(qa_rows(12))]
    path = write_jsonl(tmp_path / "topics.jsonl", rows)
    spec = SourceSpec(spec=str(path), columns={"subject": "topic"}, subject_caps={"*": 1})
    assert sorted(r.meta["topic"] for r in read(spec)) == ["t0", "t1", "t2"]
