"""`uniedit export --format uniedit-jsonl --layout release`: the Uni-Edit release's files and keys, read the way
its BAGEL fork reads them (data/real_edit_dataset.py · SftEditJSONLIterableDataset)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from tests.unit.synthetic_runs import make_sample, write_run
from uniedit_synth.core.errors import ExportError
from uniedit_synth.export import export_run
from uniedit_synth.export.uniedit_release import RELEASE_KEYS

RELEASE_NINE = [
    "task_category",
    "original_question",
    "original_answer",
    "process_answer",
    "image_path",
    "edit_instruction",
    "output_image_path",
    "analysis",
    "score",
]


def samples() -> list:
    out = []
    for i in range(6):
        sample = make_sample(i, score=2.6 + i % 3)  # visual quality 2.6, 3.6, 4.6, ...
        sample.source_image_path = f"/data/llava/coco/train2017/{i:06d}.jpg" if i % 2 == 0 else None
        out.append(sample)
    # the same source image and instruction twice (the release's fifth step removes both) ...
    for suffix in ("a", "b"):
        twin = make_sample(7, sample_id=f"twin/{suffix}")
        twin.source_image_path = "coco/train2017/000777.jpg"
        out.append(twin)
    # ... but the same image with another instruction is another sample
    other = make_sample(7, sample_id="twin/c", instruction="Write the answer on a small wooden sign.")
    other.source_image_path = "coco/train2017/000777.jpg"
    out.append(other)
    return out


def pil_img2rgb(image: Image.Image) -> Image.Image:
    """BAGEL's data/data_utils.py pil_img2rgb (RGBA composited on white, else convert)."""
    if image.mode == "RGBA" or image.info.get("transparency", None) is not None:
        image = image.convert("RGBA")
        white = Image.new(mode="RGB", size=image.size, color=(255, 255, 255))
        white.paste(image, mask=image.split()[3])
        return white
    return image.convert("RGB")


def read_like_the_bagel_fork(jsonl_path: Path, image_dir: Path, num_used_data: int) -> list[tuple]:
    """SftEditJSONLIterableDataset.get_data_paths + __iter__: readlines, the first num_used_data lines,
    json.loads, images from os.path.join(image_dir, ...), the instruction as the text."""
    with open(jsonl_path) as f:
        raw_data = f.readlines()
    raw_data = raw_data[:num_used_data]
    items = []
    for message in raw_data:
        data_item = json.loads(message)
        source = pil_img2rgb(Image.open(os.path.join(image_dir, data_item["image_path"])))
        edited = pil_img2rgb(Image.open(os.path.join(image_dir, data_item["output_image_path"])))
        items.append((source, data_item["edit_instruction"], edited, data_item))
    return items


def test_release_layout_has_the_nine_keys_paths_scores_and_reads_like_the_fork(tmp_path: Path) -> None:
    source_samples = samples()
    run = write_run(tmp_path / "run", source_samples)
    out = tmp_path / "release"
    summary = export_run(run, out, "uniedit-jsonl", layout="release", progress=False)

    assert list(RELEASE_KEYS) == RELEASE_NINE
    lines = (out / "data.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert all(list(row) == RELEASE_NINE for row in rows)  # exactly the nine keys, no id
    assert summary.rows == {"train": 7} and summary.skipped == {"duplicate_image_instruction": 2}
    assert not any(row["output_image_path"].startswith("edited/train2017/000777_")
                   and row["edit_instruction"] == source_samples[6].edit_instruction for row in rows)

    by_instruction = {row["edit_instruction"]: row for row in rows}
    for sample in source_samples[:6] + source_samples[8:]:
        row = by_instruction[sample.edit_instruction]
        md5 = hashlib.md5(sample.edit_instruction.encode("utf-8")).hexdigest()[:8]
        if sample.source_image_path:
            stem = sample.source_image_path.rsplit("/", 1)[1].removesuffix(".jpg")
            assert row["image_path"] == f"images/train2017/{stem}.jpg"
            assert row["output_image_path"] == f"edited/train2017/{stem}_{md5}.jpg"
        else:
            assert row["image_path"].startswith("images/synth/") and row["image_path"].endswith(".png")
            stem = row["image_path"].rsplit("/", 1)[1].removesuffix(".png")
            assert row["output_image_path"] == f"edited/synth/{stem}_{md5}.png"
        assert row["score"] == round(sample.scores.visual_quality) and isinstance(row["score"], int)
        assert (row["task_category"], row["original_question"], row["original_answer"], row["process_answer"],
                row["analysis"]) == (sample.task_category, sample.original_question, sample.original_answer,
                                     sample.process_answer, sample.analysis)
        assert (out / row["output_image_path"]).read_bytes() == sample.edited_image
        assert (out / row["image_path"]).read_bytes() == sample.source_image

    items = read_like_the_bagel_fork(out / "data.jsonl", out, num_used_data=5)
    assert len(items) == 5  # num_used_data counts lines
    for source, instruction, edited, data_item in items:
        assert source.mode == edited.mode == "RGB" and source.size == edited.size == (64, 64)
        assert instruction == data_item["edit_instruction"] and source.tobytes() != edited.tobytes()
    assert len(read_like_the_bagel_fork(out / "data.jsonl", out, num_used_data=500_000)) == 7
    assert not (out / "edited/train2017").joinpath(
        f"000777_{hashlib.md5(source_samples[6].edit_instruction.encode()).hexdigest()[:8]}.jpg"
    ).exists()
    card = (out / "README.md").read_text()
    assert "| train | 7 | 0 |" in card and "| color | 7 | 7 |" in card  # the removed twins are not counted


def test_a_validation_split_goes_to_its_own_file(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [make_sample(i) for i in range(20)])
    summary = export_run(run, tmp_path / "out", "uniedit-jsonl", layout="release", val_fraction=0.3,
                         progress=False)
    train = (tmp_path / "out/data.jsonl").read_text().splitlines()
    validation = (tmp_path / "out/validation.jsonl").read_text().splitlines()
    assert len(train) == summary.rows["train"] and len(validation) == summary.rows["validation"] > 0
    assert len(train) + len(validation) == 20


@pytest.mark.parametrize(
    ("fmt", "options", "message"),
    [
        ("hf", {}, "uniedit-jsonl"),
        ("uniedit-jsonl", {"include_rejects": True}, "nine keys"),
        ("uniedit-jsonl", {"with_masks": True}, "nine keys"),
    ],
)
def test_release_layout_refuses_what_it_cannot_hold(tmp_path: Path, fmt: str, options: dict, message: str) -> None:
    run = write_run(tmp_path / "run", [make_sample(0)])
    with pytest.raises(ExportError, match=message):
        export_run(run, tmp_path / "out", fmt, layout="release", progress=False, **options)
