"""`uniedit synth` over every local source form, and over a data set full of bad input, with offline backends."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from benchmarks.chaos import rows
from tests.conftest import run_cli
from uniedit_synth.core.records import IMAGE_STRUCT, with_hf_metadata

pytestmark = pytest.mark.e2e

QUESTIONS = [
    ("What color is the large square?", "red"),
    ("How many circles are there?", "3"),
    ("What is written on the sign?", "STOP"),
    ("What shape is in the corner?", "triangle"),
    ("Where is the cat?", "on the left"),
    ("What is 7 + 5?", "12"),
]


def picture(i: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    image = Image.new("RGB", size, (30 + 40 * i % 200, 90, 160))
    image.paste((250, 250, 250), (10 + i, 10, 40 + i, 40))
    return image


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def qa(i: int) -> dict:
    question, answer = QUESTIONS[i % len(QUESTIONS)]
    return {"id": f"q{i}", "question": question, "answer": answer}


def synth(source: str, out: Path, *extra: str) -> dict:
    proc = run_cli("synth", "--source", source, "--out", str(out), "--engine", "inline", "--no-progress", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "stats.json").read_text())


def check(stats: dict, out: Path, read: int) -> None:
    assert stats["read"] == read
    assert stats["accepted"] + stats["rejected"] == read
    found = rows(out)  # unique ids across data/ and rejects/
    assert len(found) == read
    assert stats["accepted"] > 0, stats["reject_reasons"]


def test_every_local_form_runs_end_to_end(tmp_path: Path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        picture(i).save(images / f"{i}.png")
    # JSONL + image files
    (tmp_path / "vqa.jsonl").write_text("".join(json.dumps({**qa(i), "image": f"{i}.png"}) + "\n" for i in range(6)))
    check(synth(str(tmp_path / "vqa.jsonl"), tmp_path / "o-jsonl", "--image-root", str(images)),
          tmp_path / "o-jsonl", 6)
    # CSV
    lines = ["id,image,question,answer"] + [f'q{i},{i}.png,"{qa(i)["question"]}",{qa(i)["answer"]}' for i in range(6)]
    (tmp_path / "vqa.csv").write_text("\n".join(lines) + "\n")
    check(synth(str(tmp_path / "vqa.csv"), tmp_path / "o-csv", "--image-root", str(images)), tmp_path / "o-csv", 6)
    # image folder + metadata.jsonl
    (images / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": f"{i}.png", **qa(i)}) + "\n" for i in range(6)))
    check(synth(str(images), tmp_path / "o-folder"), tmp_path / "o-folder", 6)
    # parquet with HF Image structs
    table = pa.table({
        "image": pa.array([{"bytes": png_bytes(picture(i)), "path": f"{i}.png"} for i in range(6)], IMAGE_STRUCT),
        "question": [qa(i)["question"] for i in range(6)],
        "answer": [qa(i)["answer"] for i in range(6)],
        "id": [f"q{i}" for i in range(6)],
    })
    pq.write_table(table.replace_schema_metadata(with_hf_metadata(table.schema, ("image",)).metadata),
                   tmp_path / "vqa.parquet")
    check(synth(str(tmp_path / "vqa.parquet"), tmp_path / "o-parquet"), tmp_path / "o-parquet", 6)
    # a data set saved with datasets.save_to_disk
    import datasets

    ds = datasets.Dataset.from_dict(
        {"image": [picture(i) for i in range(6)], "question": [qa(i)["question"] for i in range(6)],
         "answer": [qa(i)["answer"] for i in range(6)]},
        features=datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                    "answer": datasets.Value("string")}),
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    check(synth(f"hf:{tmp_path / 'saved'}", tmp_path / "o-hf"), tmp_path / "o-hf", 6)
    # LLaVA conversations: two QA turns per row → two records each
    llava = [{"id": f"l{i}", "image": f"{i}.png", "conversations": [
        {"from": "human", "value": f"<image>\n{qa(i)['question']}"}, {"from": "gpt", "value": qa(i)["answer"]},
        {"from": "human", "value": qa(i + 1)["question"]}, {"from": "gpt", "value": qa(i + 1)["answer"]}]}
        for i in range(3)]
    (tmp_path / "llava.json").write_text(json.dumps(llava))
    stats = synth(str(tmp_path / "llava.json"), tmp_path / "o-llava", "--image-root", str(images))
    check(stats, tmp_path / "o-llava", 6)


def test_bad_input_becomes_rejects_and_nothing_is_lost(tmp_path: Path):
    root = tmp_path / "images"
    root.mkdir()
    good = picture(1)
    good.save(root / "good.png")
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_bytes(b"this is not an image")
    (root / "truncated.png").write_bytes(png_bytes(picture(2))[:60])
    Image.new("CMYK", (40, 40), (0, 120, 200, 10)).save(root / "cmyk.jpg")
    Image.new("I;16", (40, 40), 30000).save(root / "deep.png")
    rgba = Image.new("P", (40, 40), 1)
    rgba.info["transparency"] = 0
    rgba.save(root / "palette.png")
    frames = [picture(i, (40, 40)) for i in range(3)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    picture(3, (3000, 2000)).save(root / "huge.png")  # 6 Mpx: downscaled before any model sees it
    Image.new("L", (5000, 4000), 7).save(root / "bomb.png")  # 20 Mpx: over the pixel limit, refused
    (tmp_path / "secret.png").write_bytes(png_bytes(good))
    os.symlink(tmp_path / "secret.png", root / "link.png")
    records = [
        {"id": "ok", "image": "good.png", **{k: v for k, v in qa(0).items() if k != "id"}},
        {"id": "missing", "image": "nope.png", "question": "What color?", "answer": "red"},
        {"id": "empty", "image": "empty.png", "question": "What color?", "answer": "red"},
        {"id": "text", "image": "text.png", "question": "What color?", "answer": "red"},
        {"id": "truncated", "image": "truncated.png", "question": "What color?", "answer": "red"},
        {"id": "escape", "image": "../../etc/passwd", "question": "What color?", "answer": "red"},
        {"id": "absolute", "image": "/etc/hostname", "question": "What color?", "answer": "red"},
        {"id": "symlink", "image": "link.png", "question": "What color?", "answer": "red"},
        {"id": "blank-q", "image": "good.png", "question": "   ", "answer": "red"},
        {"id": "blank-a", "image": "good.png", "question": "What color?", "answer": ""},
        {"id": "long", "image": "good.png", "question": "Why? " * 2000, "answer": "red"},
        {"id": "ok", "image": "good.png", "question": "What color is it?", "answer": "red"},  # duplicate id
        {"id": "remote", "image": "http://127.0.0.1:9/x.png", "question": "What color?", "answer": "red"},
        {"id": "cmyk", "image": "cmyk.jpg", "question": "What color is the square?", "answer": "blue"},
        {"id": "deep", "image": "deep.png", "question": "What color is the square?", "answer": "grey"},
        {"id": "palette", "image": "palette.png", "question": "What color is the square?", "answer": "black"},
        {"id": "anim", "image": "anim.gif", "question": "What color is the square?", "answer": "white"},
        {"id": "huge", "image": "huge.png", "question": "What color is the square?", "answer": "white"},
        {"id": "bomb", "image": "bomb.png", "question": "What color is the square?", "answer": "grey"},
    ]
    (tmp_path / "bad.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records) + "{not json\n" + '"a string row"\n')
    out = tmp_path / "out"
    stats = synth(str(tmp_path / "bad.jsonl"), out, "--image-root", str(root),
                  "--set", "input.max_side=512", "--set", "input.max_pixels=10000000")
    read = len(records) + 2
    assert stats["read"] == read and stats["accepted"] + stats["rejected"] == read
    rejected = {row["id"]: row for row in (r for p in sorted((out / "rejects").glob("*.parquet"))
                                            for r in pq.read_table(p).to_pylist())}
    invalid = {i for i, r in rejected.items() if r["reject_reason"] == "invalid_input"}
    for bad in ("missing", "empty", "text", "truncated", "escape", "absolute", "symlink", "blank-q", "blank-a",
                "long", "remote", "bomb"):
        assert any(i.endswith(f"/{bad}") for i in invalid), (bad, sorted(invalid))
    assert all(rejected[i]["reject_detail"] for i in invalid)
    assert any(r["reject_reason"] == "duplicate_id" for r in rejected.values())
    assert stats["reject_reasons"]["invalid_input"] >= 14  # the two unparsable lines too
    # exotic but valid images were normalised (RGB, orientation, first frame, downscaled) and went through
    accepted = {r["id"]: r for p in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()}
    passed = {i.rsplit("/", 1)[-1] for i in set(accepted) | (set(rejected) - invalid)}
    assert {"ok", "cmyk", "deep", "palette", "anim", "huge"} <= passed
    judged = [r for i, r in rejected.items() if i not in invalid and r["reject_reason"] != "duplicate_id"]
    for row in list(accepted.values()) + judged:
        image = Image.open(io.BytesIO(row["source_image"]["bytes"]))
        assert image.mode == "RGB" and max(image.size) <= 512
    shown = run_cli("stats", str(out))
    assert "invalid_input" in shown.stdout and "duplicate_id" in shown.stdout


@pytest.mark.train
def test_run_to_export_to_loader_to_finetune(tmp_path: Path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import datasets

    run = tmp_path / "run"
    # one question a scene (no grouping): 40 records, 40 samples
    assert run_cli("synth", "--out", str(run), "--engine", "inline", "-n", "40", "--no-progress",
                   "--set", "source.group_by_image=false").returncode == 0
    for fmt in ("hf", "bagel", "uniedit-jsonl"):
        proc = run_cli("export", str(run), "--format", fmt, "--out", str(tmp_path / fmt), "-q")
        assert proc.returncode == 0, proc.stderr
    ds = datasets.load_dataset(str(tmp_path / "hf"), split="train")
    assert len(ds) > 30 and ds[0]["edited_image"].mode == "RGB"
    info = json.loads(next((tmp_path / "bagel" / "parquet_info").glob("*.json")).read_text())
    assert sum(v["num_rows"] for v in info.values()) == len(ds)

    from uniedit_synth.train.loader import EditPairDataset

    item = EditPairDataset(run, image_size=32)[0]
    assert tuple(item["source"].shape) == (3, 32, 32) and item["weight"] >= 1.0

    proc = run_cli_python(tmp_path, "examples/finetune_janus_pro.py", "--tiny", "--data", str(tmp_path / "hf"),
                          "--steps", "20", "--out", str(tmp_path / "ckpt"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = [json.loads(line)["loss"] for line in proc.stdout.splitlines() if line.startswith("{") and '"loss"' in line]
    assert len(losses) >= 20 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def run_cli_python(tmp_path: Path, script: str, *args: str):
    import subprocess
    import sys

    from tests.conftest import REPO

    return subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
