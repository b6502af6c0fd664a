"""`uniedit export` formats (uniedit-jsonl, hf, bagel), filters, splits, preference pairs and safe file names."""

from __future__ import annotations

import io
import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from tests.unit.synthetic_runs import EDIT_BOX, SIZE, make_sample, write_run
from uniedit_synth.core.errors import ExportError, UniEditError
from uniedit_synth.export import ExportSummary, export_run, split_of
from uniedit_synth.export import bagel as bagel_export
from uniedit_synth.export.files import safe_stem
from uniedit_synth.method.masks import mask_from_image

CATEGORIES = ("color", "count", "ocr")
UNSAFE_IDS = ("a/../../b", "x\x00y", "../../etc/passwd", ".hidden", "/abs/path", "a_b", "a/b")


def accepted_samples(count: int = 9) -> list:
    return [make_sample(i, category=CATEGORIES[i % 3], score=1 + i % 5, shard=i // 4) for i in range(count)]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run", accepted_samples())


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def read_jsonl(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for path in paths for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- uniedit-jsonl


def test_uniedit_jsonl_rows_images_and_shards(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "jsonl"
    summary = export_run(run, out, "uniedit-jsonl", shard_rows=4, progress=False)
    assert isinstance(summary, ExportSummary) and summary.rows == {"train": 9}
    shards = sorted((out / "data").glob("train-*.jsonl"))
    assert [len(p.read_text().splitlines()) for p in shards] == [4, 4, 1]
    rows = read_jsonl(shards)
    assert list(rows[0]) == [
        "id",
        "task_category",
        "original_question",
        "original_answer",
        "process_answer",
        "image_path",
        "edit_instruction",
        "output_image_path",
        "analysis",
        "score",
        "instruction_plan",
        "reasoning",
        "intended_effect",
        "chain_id",
        "turn",
        "parent_id",
    ]
    originals = {s.id: s for s in accepted_samples()}
    assert {row["id"] for row in rows} == set(originals)
    for row in rows:
        sample = originals[row["id"]]
        assert row["edit_instruction"] == sample.edit_instruction and row["score"] == sample.score
        assert row["instruction_plan"] == sample.instruction_plan.model_dump(mode="json")
        assert row["image_path"].startswith("images/source/") and row["output_image_path"].startswith(
            "images/edited/"
        )
        assert (out / row["image_path"]).read_bytes() == sample.source_image
        assert (out / row["output_image_path"]).read_bytes() == sample.edited_image
    assert json.loads((out / "export.json").read_text())["rows"] == {"train": 9}


def test_dataset_card_has_counts_per_category_and_score_histograms(run: Path, tmp_path: Path) -> None:
    export_run(run, tmp_path / "jsonl", "uniedit-jsonl", val_fraction=0.4, progress=False)
    card = (tmp_path / "jsonl" / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["configs"][0]["config_name"] == "default"
    assert "| color | " in card and "| ocr | " in card and "| **total** | 9 |" in card
    histogram = [line for line in card.splitlines() if line.startswith("| [")]
    assert len(histogram) == 10 and sum(int(line.split("|")[2]) for line in histogram) == 9
    assert "| category | ≥1 |" in card


def test_file_names_from_hostile_ids_stay_inside_the_export(tmp_path: Path) -> None:
    samples = [make_sample(i, sample_id=sample_id) for i, sample_id in enumerate(UNSAFE_IDS)]
    run = write_run(tmp_path / "run", samples)
    out = tmp_path / "export"
    export_run(run, out, "uniedit-jsonl", progress=False)
    rows = read_jsonl(sorted((out / "data").glob("*.jsonl")))
    assert sorted(row["id"] for row in rows) == sorted(UNSAFE_IDS)
    names = set()
    for row in rows:
        for key in ("image_path", "output_image_path"):
            path = (out / row[key]).resolve()
            assert path.is_relative_to(out.resolve()) and path.is_file()
            assert "\x00" not in row[key] and row[key].count("/") == 2
            names.add(row[key])
    assert len(names) == 2 * len(UNSAFE_IDS)  # `a/b` and `a_b` do not collide
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert written == names
    assert not (tmp_path / "b").exists() and not any(tmp_path.glob("*.png"))


def test_safe_stem_is_plain_and_unique() -> None:
    stems = [safe_stem(sample_id) for sample_id in UNSAFE_IDS + ("", "x" * 500)]
    assert len(set(stems)) == len(stems)
    for stem in stems:
        assert stem and not stem.startswith(".") and len(stem) <= 100
        assert all(ch.isalnum() or ch in "._-" for ch in stem)


def test_masks_and_weights_at_export(run: Path, tmp_path: Path) -> None:
    export_run(run, tmp_path / "jsonl", "uniedit-jsonl", with_masks=True, mask_factor=1, progress=False)
    row = read_jsonl(sorted((tmp_path / "jsonl" / "data").glob("*.jsonl")))[0]
    mask = mask_from_image((tmp_path / "jsonl" / row["mask_path"]).read_bytes())
    left, top, right, bottom = EDIT_BOX
    expected = np.zeros((SIZE, SIZE), dtype=bool)
    expected[top:bottom, left:right] = True  # full resolution: exactly the recoloured box
    np.testing.assert_array_equal(mask, expected)
    assert row["edit_weight"] == pytest.approx(math.log2(SIZE * SIZE / expected.sum()) + 1)
    # by default the mask is max-pooled by UniWorld's VAE factor 8
    export_run(run, tmp_path / "pooled", "uniedit-jsonl", with_masks=True, progress=False)
    row = read_jsonl(sorted((tmp_path / "pooled" / "data").glob("*.jsonl")))[0]
    pooled = mask_from_image((tmp_path / "pooled" / row["mask_path"]).read_bytes())
    assert pooled.shape == (SIZE // 8, SIZE // 8)
    assert pooled[top // 8 : (bottom - 1) // 8 + 1, left // 8 : (right - 1) // 8 + 1].all()


# ---------------------------------------------------------------- hf


def test_hf_export_loads_with_datasets_as_pil_images(run: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "hf"
    export_run(run, out, "hf", val_fraction=0.4, with_masks=True, mask_grid=8, shard_rows=2, progress=False)
    train_files = sorted((out / "data").glob("train-*.parquet"))
    assert train_files and all("-of-" in p.name for p in train_files)
    by_dir = datasets.load_dataset(str(out))
    by_files = datasets.load_dataset("parquet", data_files={"train": [str(p) for p in train_files]})
    expected = {
        split: sum(split_of(s.id, 0.4) == split for s in accepted_samples())
        for split in ("train", "validation")
    }
    assert {split: len(ds) for split, ds in by_dir.items()} == expected
    assert len(by_files["train"]) == expected["train"]
    originals = {s.id: s for s in accepted_samples()}
    for row in by_dir["train"]:
        assert isinstance(row["source_image"], Image.Image) and isinstance(row["edited_image"], Image.Image)
        sample = originals[row["id"]]
        np.testing.assert_array_equal(
            np.asarray(row["edited_image"].convert("RGB")), decode(sample.edited_image)
        )
        assert row["edit_mask"].size == (8, 8) and row["edit_weight"] > 1
        assert row["instruction_plan"] == sample.instruction_plan.model_dump(mode="json")
    assert isinstance(by_files["train"][0]["source_image"], Image.Image)
    front = yaml.safe_load((out / "README.md").read_text().split("---\n")[1])
    info = {entry["config_name"]: entry for entry in front["dataset_info"]}
    assert {s["name"]: s["num_examples"] for s in info["default"]["splits"]} == expected
    assert {"name": "source_image", "dtype": "image"} in info["default"]["features"]


def test_hf_parquet_has_small_row_groups(run: Path, tmp_path: Path) -> None:
    export_run(run, tmp_path / "hf", "hf", row_group_rows=3, progress=False)
    meta = pq.ParquetFile(next((tmp_path / "hf" / "data").glob("train-*.parquet"))).metadata
    assert meta.num_rows == 9 and meta.num_row_groups == 3


# ---------------------------------------------------------------- bagel


def bagel_style_read(data_dir: str, parquet_info: dict, seed: int = 0) -> list[dict]:
    """Reads a data_dir the way BAGEL does (ByteDance-Seed/Bagel @056b5fd), with world_size=1, one worker:

    * data/parquet_utils.py `get_parquet_data_paths`: os.path.join(data_dir, name) for every *.parquet;
    * data/interleave_datasets/interleave_t2i_dataset.py `ParquetStandardIterableDataset.get_data_paths`:
      keep paths that are keys of parquet_info, one unit per row group; `__iter__`: open each file with a
      pyarrow LocalFileSystem, `pq.ParquetFile(f).read_row_group(rg).to_pandas()`, `df.iterrows()`;
    * data/interleave_datasets/edit_dataset.py `UnifiedEditIterableDataset.parse_row`: random start/end over
      image_list, `Image.open(io.BytesIO(row["image_list"][i]))` + pil_img2rgb (data/data_utils.py),
      `random.choice(row["instruction_list"][idx - 1])`.
    """
    rng = random.Random(seed)
    paths = [os.path.join(data_dir, name) for name in os.listdir(data_dir) if name.endswith(".parquet")]
    units = [(p, rg) for p in paths if p in parquet_info for rg in range(parquet_info[p]["num_row_groups"])]
    parsed = []
    for path, row_group in units:
        with pafs.LocalFileSystem().open_input_file(path) as handle:
            frame = pq.ParquetFile(handle).read_row_group(row_group).to_pandas()
        for _, row in frame.iterrows():
            image_num = len(row["image_list"])
            start = rng.choice(range(image_num - 1))
            end = rng.choice(range(start + 1, min(start + 3, image_num)))
            source = Image.open(io.BytesIO(row["image_list"][start])).convert("RGB")
            steps = []
            for idx in range(start + 1, end + 1):
                instruction = rng.choice(row["instruction_list"][idx - 1])
                target = Image.open(io.BytesIO(row["image_list"][idx])).convert("RGB")
                steps.append((instruction, target))
            parsed.append({"id": row["id"], "source": source, "steps": steps})
    return parsed


def test_bagel_export_reads_back_the_way_bagel_reads_it(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "bagel"
    summary = export_run(run, out, "bagel", shard_rows=4, row_group_rows=2, progress=False)
    assert summary.rows == {"train": 9}
    namespace: dict = {"DATASET_INFO": {"unified_edit": {}}}
    exec((out / "bagel_dataset_info.py").read_text(), namespace)  # the snippet is valid Python as documented
    entry = namespace["DATASET_INFO"]["unified_edit"]["uniedit"]
    assert entry["data_dir"] == str((out / "train").resolve()) and entry["num_total_samples"] == 9
    assert entry["num_files"] == 3
    parquet_info = json.loads(Path(entry["parquet_info_path"]).read_text())
    assert (
        sum(v["num_row_groups"] for v in parquet_info.values()) == 5
    )  # files of 4, 4, 1 rows in groups of 2
    schema = pq.read_schema(next(iter(parquet_info)))
    assert str(schema.field("image_list").type) == "list<element: binary>"
    assert str(schema.field("instruction_list").type) == "list<element: list<element: string>>"
    parsed = bagel_style_read(entry["data_dir"], parquet_info)
    originals = {s.id: s for s in accepted_samples()}
    assert sorted(item["id"] for item in parsed) == sorted(originals)
    for item in parsed:
        sample = originals[item["id"]]
        [(instruction, target)] = item["steps"]
        assert instruction == sample.edit_instruction
        np.testing.assert_array_equal(np.asarray(item["source"]), decode(sample.source_image))
        np.testing.assert_array_equal(np.asarray(target), decode(sample.edited_image))
    config = yaml.safe_load((out / "bagel_data_config.yaml").read_text())["unified_edit"]
    assert config["dataset_names"] == ["uniedit"] and config["num_used_data"] == [3]
    assert set(config) >= {"image_transform_args", "vit_image_transform_args", "is_mandatory", "weight"}


def test_bagel_paths_can_be_rebased_after_moving_the_export(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "bagel"
    export_run(run, out, "bagel", val_fraction=0.3, progress=False)
    bagel_export.main([str(out), "--data-dir", "/mnt/datasets/uniedit"])
    info = json.loads((out / "parquet_info" / "uniedit_train.json").read_text())
    assert list(info) == ["/mnt/datasets/uniedit/train/uniedit-00000.parquet"]
    snippet = (out / "bagel_dataset_info.py").read_text()
    assert "'data_dir': '/mnt/datasets/uniedit/train'" in snippet
    assert "['uniedit_validation']" in snippet


def test_bagel_refuses_preference_pairs_and_masks(run: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="preference"):
        export_run(run, tmp_path / "b1", "bagel", include_rejects=True, progress=False)
    with pytest.raises(ExportError, match="mask"):
        export_run(run, tmp_path / "b2", "bagel", with_masks=True, progress=False)


# ---------------------------------------------------------------- filters, split, pairs


def exported_ids(out: Path) -> dict[str, set[str]]:
    rows: dict[str, set[str]] = {}
    for path in (out / "data").glob("*.jsonl"):
        rows.setdefault(path.name.split("-")[0], set()).update(row["id"] for row in read_jsonl([path]))
    return rows


def test_min_score_and_category_filters(run: Path, tmp_path: Path) -> None:
    summary = export_run(
        run, tmp_path / "a", "uniedit-jsonl", min_score=3, categories=["color", "ocr"], progress=False
    )
    kept = {s.id for s in accepted_samples() if s.score >= 3 and s.task_category in ("color", "ocr")}
    assert exported_ids(tmp_path / "a") == {"train": kept}
    assert summary.skipped["category"] == 3
    assert summary.skipped["below_min_score"] == 6 - len(kept)
    with pytest.raises(ExportError, match="unknown categories"):
        export_run(run, tmp_path / "b", "uniedit-jsonl", categories=["colour"], progress=False)


def test_split_is_stable_by_id_and_monotonic_in_the_fraction() -> None:
    ids = [f"vqav2/{i}" for i in range(2000)]
    at_10 = {i for i in ids if split_of(i, 0.1) == "validation"}
    at_20 = {i for i in ids if split_of(i, 0.2) == "validation"}
    assert 150 < len(at_10) < 250 and at_10 < at_20
    assert all(split_of(i, 0.0) == "train" for i in ids[:50])


def test_split_does_not_depend_on_the_other_samples(tmp_path: Path) -> None:
    small = write_run(tmp_path / "small", accepted_samples(9))
    large = write_run(tmp_path / "large", accepted_samples(30), shard_size=7)
    export_run(small, tmp_path / "s", "uniedit-jsonl", val_fraction=0.5, progress=False)
    export_run(large, tmp_path / "l", "uniedit-jsonl", val_fraction=0.5, progress=False)
    small_ids, large_ids = exported_ids(tmp_path / "s"), exported_ids(tmp_path / "l")
    assert small_ids["validation"] and small_ids["train"]
    assert small_ids["validation"] <= large_ids["validation"] and small_ids["train"] <= large_ids["train"]


def test_rejects_become_preference_pairs_only_when_both_sides_exist(tmp_path: Path) -> None:
    accepted = accepted_samples(4)
    other_box = (40, 40, 60, 60)
    rejects = [
        make_sample(1, accepted=False, score=1, category="count", box=other_box),  # pairs with synth/0001
        make_sample(2, accepted=False, score=1, category="ocr", box=other_box),  # pairs with synth/0002
        make_sample(2, accepted=False, score=2, category="ocr", box=(0, 0, 8, 8)),  # a second pair for 0002
        make_sample(
            3, accepted=False, instruction="another instruction", box=other_box
        ),  # instruction differs
        make_sample(77, accepted=False, box=other_box),  # no accepted sample with this id
        make_sample(0, accepted=False, with_edit=False),  # never reached the judge
    ]
    run = write_run(tmp_path / "run", accepted, rejects, shard_size=3)
    jsonl = export_run(run, tmp_path / "jsonl", "uniedit-jsonl", include_rejects=True, progress=False)
    assert jsonl.pairs == {"train": 3} and jsonl.unpaired_rejects == 2 and jsonl.rejects_without_edit == 1
    pairs = read_jsonl(sorted((tmp_path / "jsonl" / "preference").glob("*.jsonl")))
    assert sorted(p["id"] for p in pairs) == ["synth/0001", "synth/0002", "synth/0002"]
    for pair in pairs:
        chosen = (tmp_path / "jsonl" / pair["chosen_image_path"]).read_bytes()
        rejected = (tmp_path / "jsonl" / pair["rejected_image_path"]).read_bytes()
        assert chosen != rejected and pair["reject_reason"] == "low_score"
        assert pair["chosen_score"] > pair["rejected_score"]
    assert len({p["rejected_image_path"] for p in pairs}) == 3
    hf = export_run(run, tmp_path / "hf", "hf", include_rejects=True, progress=False)
    assert hf.pairs == {"train": 3}
    datasets = pytest.importorskip("datasets")
    preference = datasets.load_dataset(str(tmp_path / "hf"), "preference")["train"]
    assert isinstance(preference[0]["rejected_image"], Image.Image)
    by_id = {s.id: s for s in accepted}
    for row in preference:
        np.testing.assert_array_equal(np.asarray(row["chosen_image"]), decode(by_id[row["id"]].edited_image))


def test_pairs_follow_the_category_filter(tmp_path: Path) -> None:
    rejects = [make_sample(1, accepted=False, category="count", box=(40, 40, 60, 60))]
    run = write_run(tmp_path / "run", accepted_samples(4), rejects)
    summary = export_run(
        run, tmp_path / "x", "uniedit-jsonl", include_rejects=True, categories=["color"], progress=False
    )
    assert summary.pairs == {} and summary.rows == {"train": 2}


# ---------------------------------------------------------------- errors and the out dir


def test_missing_or_non_run_dirs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        export_run(tmp_path / "nope", tmp_path / "out", "hf", progress=False)
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "notes.txt").write_text("hi")
    with pytest.raises(ExportError, match="not a uniedit run"):
        export_run(tmp_path / "random", tmp_path / "out", "hf", progress=False)
    assert issubclass(ExportError, UniEditError)


def test_unknown_format_and_bad_options(run: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown export format 'parquet'"):
        export_run(run, tmp_path / "out", "parquet", progress=False)
    with pytest.raises(ExportError, match="val_fraction"):
        export_run(run, tmp_path / "out", "hf", val_fraction=1.5, progress=False)
    assert not (tmp_path / "out").exists()


def test_out_dir_rules(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()  # an empty dir is fine
    export_run(run, out, "uniedit-jsonl")  # default progress: a bar on terminals only
    with pytest.raises(ExportError, match="not empty"):
        export_run(run, out, "hf", progress=False)
    summary = export_run(run, out, "hf", overwrite=True, progress=False)  # replaces our own previous export
    assert summary.format == "hf" and not (out / "images").exists() and (out / "data").is_dir()
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(ExportError, match="not a uniedit export"):
        export_run(run, foreign, "hf", overwrite=True, progress=False)
    assert (foreign / "thesis.tex").read_text() == "precious"
    with pytest.raises(ExportError, match="outside the run dir"):
        export_run(run, run / "exports", "hf", progress=False)


def test_a_failed_export_leaves_nothing_behind(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uniedit_synth.export import uniedit_jsonl

    def explode(self, sample, split, masked) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(uniedit_jsonl.UniEditJsonlWriter, "add", explode)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_run(run, tmp_path / "out", "uniedit-jsonl", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_example_bagel_config_matches_the_generated_one() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "bagel" / "uniedit.yaml"
    shipped = yaml.safe_load(example.read_text())["unified_edit"]
    generated = bagel_export.data_config({"name": "uniedit", "num_files": 32})["unified_edit"]
    assert shipped == generated
