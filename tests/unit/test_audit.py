"""Audit building blocks: fingerprints (candidate + verify), indexes against brute force, benchmark layouts,
the synth-time screen and its shard order, and the per-row checks."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.audit_fixtures import reencode
from uniedit_synth.audit.checks import decided_in_advance, expected_branch, flagged_ids, is_noop
from uniedit_synth.audit.rows import AuditRow
from uniedit_synth.core.records import IMAGE_STRUCT
from uniedit_synth.engine.coordinator import Coordinator
from uniedit_synth.method.fingerprint import fingerprint_image, hamming, same_image, shingles
from uniedit_synth.method.index import HammingIndex, TextIndex, near_duplicate_pairs
from uniedit_synth.method.screen import InputScreen, ScreenEntry
from uniedit_synth.sources.benchmarks import BenchmarkError, load_benchmark
from uniedit_synth.sources.scenes import ScenesSource


@pytest.fixture(scope="module")
def scenes():
    return [r.image for r in ScenesSource(count=120, seed=3)]


def test_reencoded_copies_verify_and_close_distinct_scenes_do_not(scenes):
    fps = [fingerprint_image(png) for png in scenes]
    close = [(a, b) for a, b in itertools.combinations(range(len(fps)), 2) if hamming(fps[a].phash, fps[b].phash) <= 6]
    assert close, "the candidate stage alone would merge distinct scenes"
    assert not [(a, b) for a, b in close if same_image(fps[a], fps[b])]
    for png, fp in zip(scenes[:40], fps[:40], strict=True):
        copy = fingerprint_image(reencode(png))
        assert hamming(copy.phash, fp.phash) <= 4 and same_image(copy, fp)


def test_noop_check_is_pixel_exact_enough(scenes):
    fp = fingerprint_image(scenes[0])
    assert is_noop(scenes[0], scenes[0], fp, fp)
    image = Image.open(io.BytesIO(scenes[0])).convert("RGB")
    image.putpixel((10, 10), (0, 0, 0))
    image.putpixel((11, 10), (0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert not is_noop(scenes[0], buffer.getvalue(), fp, fingerprint_image(buffer.getvalue()))  # a 2-pixel edit is an edit
    assert not is_noop(scenes[0], scenes[1], fp, fingerprint_image(scenes[1]))


def test_near_duplicate_pairs_equals_brute_force():
    rng = np.random.default_rng(7)
    hashes = rng.integers(0, 2**63, size=400, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    for i in range(0, 60, 2):  # plant near copies 0..4 bits apart
        flips = rng.choice(64, size=i % 5, replace=False)
        hashes[i + 1] = hashes[i] ^ np.uint64(sum(1 << int(b) for b in flips))
    for distance in (0, 2, 4):
        found = {tuple(p) for p in near_duplicate_pairs(hashes, distance).tolist()}
        brute = {(i, j) for i, j in itertools.combinations(range(len(hashes)), 2)
                 if (int(hashes[i]) ^ int(hashes[j])).bit_count() <= distance}
        assert found == brute and brute


def test_hamming_index_lookup_equals_brute_force_and_namespaces_are_separate():
    rng = random.Random(1)
    stored = [rng.getrandbits(64) for _ in range(300)]
    index: HammingIndex[int] = HammingIndex(4)
    for n, h in enumerate(stored):
        index.add(h, n)
    for probe in stored[:20] + [stored[5] ^ 0b1011, stored[9] ^ (1 << 63) ^ 1 ^ (1 << 30) ^ (1 << 7) ^ (1 << 12)]:
        assert sorted(item for item, _ in index.near(probe)) == [n for n, h in enumerate(stored) if hamming(h, probe) <= 4]
    index.add(stored[0], 999, namespace=5)
    assert [item for item, _ in index.near(stored[0], namespace=5)] == [999]


def test_text_index_verifies_candidates_exactly():
    index = TextIndex(threshold=0.8)
    index.add("a", shingles("What is the color of the large cone behind the red cube?"))
    index.add("b", shingles("How many spheres are there in the picture on the left?"))
    assert [k for k, _ in index.matches(shingles("what is the colour of the large cone behind the red cube"))] == []
    assert [k for k, _ in index.matches(shingles("What is the color of the large cone behind the red cube"))] == ["a"]
    assert index.matches(shingles("What is the color of the small cone behind the red cube?")) == []


# ------------------------------------------------------------------------------------------ benchmark layouts
def png_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).resize((96, 96)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_gedit_bench_layout_parquet(tmp_path: Path):
    rows = [{"task_type": "color_alter", "key": f"k{n}", "instruction": f"Turn the car number {n} blue and shiny",
             "instruction_language": "en", "input_image": {"bytes": png_bytes(n), "path": f"{n}.png"},
             "input_image_raw": {"bytes": png_bytes(n), "path": f"{n}.png"}, "Intersection_exist": True}
            for n in range(3)]
    schema = pa.schema([("task_type", pa.string()), ("key", pa.string()), ("instruction", pa.string()),
                        ("instruction_language", pa.string()), ("input_image", IMAGE_STRUCT),
                        ("input_image_raw", IMAGE_STRUCT), ("Intersection_exist", pa.bool_())])
    (tmp_path / "gedit" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "gedit" / "data" / "train-00000.parquet")
    bench = load_benchmark(f"gedit-bench={tmp_path / 'gedit'}")
    assert bench.name == "gedit-bench" and bench.keys == ["k0", "k1", "k2"]
    assert bench.images[1] == fingerprint_image(png_bytes(1)) and bench.texts[2].startswith("Turn the car number 2")


def test_imgedit_kris_and_risebench_layouts(tmp_path: Path):
    imgedit = tmp_path / "imgedit"
    (imgedit / "singleturn" / "animal").mkdir(parents=True)
    (imgedit / "singleturn" / "animal" / "001.jpg").write_bytes(png_bytes(1))
    (imgedit / "basic_edit.json").write_text(json.dumps(
        {"1": {"id": "animal/001.jpg", "prompt": "Add a red hat to the dog in the garden", "edit_type": "add"}}))
    bench = load_benchmark(f"imgedit-bench={imgedit}")
    assert bench.keys == ["1"] and bench.images[0] == fingerprint_image(png_bytes(1))
    assert load_benchmark(str(imgedit)).keys == ["1"]  # recognised without the preset name too

    kris = tmp_path / "KRIS_Bench"
    (kris / "count_change").mkdir(parents=True)
    (kris / "count_change" / "1.jpg").write_bytes(png_bytes(2))
    (kris / "count_change" / "annotation.json").write_text(json.dumps(
        {"1": {"ori_img": "1.jpg", "ins_en": "Double the number of apples on the table", "explain_en": "…"}}))
    bench = load_benchmark(f"kris-bench={kris}")
    assert bench.keys == ["count_change/1"] and bench.texts == ["Double the number of apples on the table"]

    rise = tmp_path / "RISEBench"
    (rise / "data" / "temporal_reasoning_images").mkdir(parents=True)
    (rise / "data" / "temporal_reasoning_images" / "1.png").write_bytes(png_bytes(3))
    (rise / "datav2_total_w_subtask.json").write_text(json.dumps([
        {"index": "temporal_reasoning_1", "category": "temporal_reasoning", "subtask": "life",
         "instruction": "Draw what this apple looks like after ten days", "image": "temporal_reasoning_images/1.png",
         "reference": "a rotten apple"}]))
    bench = load_benchmark(f"risebench={rise}")
    assert bench.keys == ["temporal_reasoning_1"] and bench.images[0] == fingerprint_image(png_bytes(3))


def test_folder_csv_cache_and_bad_input(tmp_path: Path, caplog):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for n in range(3):
        (folder / f"{n}.png").write_bytes(png_bytes(n))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n not an image")
    cache = tmp_path / "cache"
    bench = load_benchmark(str(folder), cache)
    assert bench.keys == ["0.png", "1.png", "2.png"] and bench.skipped_images == 1 and not bench.from_cache
    assert "skipping the image of item broken.png" in caplog.text
    again = load_benchmark(str(folder), cache)
    assert again.from_cache and again.keys == bench.keys and again.images == bench.images
    assert again.skipped_images == 1
    (folder / "3.png").write_bytes(png_bytes(3))  # new content → new key, hashed again
    assert not load_benchmark(str(folder), cache).from_cache

    table = tmp_path / "b.csv"
    table.write_text("question_id,image_path,question\nq1,imgs/1.png,What is shown in the picture here?\n")
    bench = load_benchmark(str(table))
    assert bench.keys == ["q1"] and bench.images[0] == fingerprint_image(png_bytes(1))

    with pytest.raises(BenchmarkError, match="does not exist"):
        load_benchmark(str(tmp_path / "nope"))
    (tmp_path / "cols.jsonl").write_text('{"a": 1, "b": 2}\n')
    with pytest.raises(BenchmarkError, match="no image column"):
        load_benchmark(str(tmp_path / "cols.jsonl"))
    with pytest.raises(BenchmarkError, match="kris-bench=<folder>"):
        load_benchmark("kris-bench")


# ------------------------------------------------------------------------------------------ synth-time screen
def entry(n: int, png: bytes, question: str = "q") -> ScreenEntry:
    return ScreenEntry(f"r{n}", fingerprint_image(png).to_hex(), question)


def test_input_screen_keeps_first_copy_and_knows_earlier_shards(scenes):
    screen = InputScreen("image", 4)
    verdicts = screen.decide([entry(0, scenes[0]), entry(1, scenes[1]), entry(2, reencode(scenes[0]))])
    assert verdicts[:2] == [None, None] and verdicts[2] == ("duplicate_input", "a near-identical image as r0")
    resumed = InputScreen("image", 4)
    resumed.remember([entry(0, scenes[0])])
    assert resumed.decide([entry(5, scenes[0])])[0][0] == "duplicate_input"

    pairs = InputScreen("pair", 4)
    assert pairs.decide([entry(0, scenes[0], "What colour?"), entry(1, scenes[0], "How many?"),
                         entry(2, scenes[0], "what COLOUR")]) == [None, None, ("duplicate_input",
                                                                                "the same question and image as r0")]


def test_coordinator_screens_shards_in_order(scenes):
    async def scenario():
        coord = Coordinator({}, screen={"by": "image", "max_distance": 4})
        for shard in range(3):
            await coord.register_shard(shard)
        later = asyncio.ensure_future(coord.screen(2, [entry(20, scenes[0])]))
        middle = asyncio.ensure_future(coord.screen(1, [entry(10, scenes[0])]))
        await asyncio.sleep(0.01)
        assert not later.done() and not middle.done()  # shard 0 has not been screened yet
        first = await coord.screen(0, [entry(0, scenes[1])])
        return first, await middle, await later, await coord.screen(1, [])

    first, middle, later, retried = asyncio.run(scenario())
    assert first == [None] and middle == [None]
    assert later == [("duplicate_input", "a near-identical image as r10")]
    assert retried == middle  # a retried shard gets the same answer


# ------------------------------------------------------------------------------------------ row checks
def row(**kw) -> AuditRow:
    return AuditRow(id="x", category="color", question="q", answer="a", process_answer=None, instruction="i", **kw)


def test_branch_from_plan_or_program_and_decided_in_advance():
    from uniedit_synth.offline.world import Scene

    assert expected_branch(row(plan={"style": "conditional", "expected_branch": "else"})) == "else"
    assert expected_branch(row(plan={"style": "synthesis"})) is None
    scene = ScenesSource(count=1, seed=0).record(0)
    meta = scene.meta
    query = meta["question_spec"]["query"]
    program = {"kind": "scene", "condition": {"query": query, "test": {"op": "gt", "value": -1}},
               "if_true": {"op": "remove", "target": {}}, "if_false": {"op": "remove", "target": {}}}
    assert Scene.model_validate(meta["scene"])
    assert expected_branch(row(edit_program=program, record_meta=meta)) == "then"
    assert decided_in_advance(row(edit_program=program, record_meta=meta)) is True  # any count is > -1
    program["condition"]["test"] = {"op": "even"}
    assert decided_in_advance(row(edit_program=program, record_meta=meta)) is False
    other = dict(program, condition={"query": {"type": "count", "filter": {"color": "nope"}}, "test": {"op": "even"}})
    assert decided_in_advance(row(edit_program=other, record_meta=meta)) is True  # asks something else


def test_flagged_ids_keep_the_first_of_a_group():
    result = {"answer_leaks": {"ids": ["b"]}, "duplicate_pairs": {"groups": [["d", "c"]]},
              "duplicate_sources": {"groups": [["e", "f", "g"]]}}
    assert flagged_ids(result, ["answer_leaks", "duplicate_pairs", "duplicate_sources"]) == {
        "b": "answer_leaks", "d": "duplicate_pairs", "f": "duplicate_sources", "g": "duplicate_sources"}


def test_hf_saved_dataset_as_benchmark(tmp_path: Path):
    import datasets

    features = datasets.Features({"key": datasets.Value("string"), "instruction": datasets.Value("string"),
                                  "input_image": datasets.Image()})
    data = datasets.Dataset.from_dict(
        {"key": ["a", "b"], "instruction": ["Make the sky above the old red barn purple", "Remove the blue car"],
         "input_image": [{"bytes": png_bytes(4), "path": None}, {"bytes": png_bytes(5), "path": None}]},
        features=features,
    )
    data.save_to_disk(str(tmp_path / "saved"))
    for spec in (f"hf:{tmp_path / 'saved'}", f"gedit-bench={tmp_path / 'saved'}"):
        bench = load_benchmark(spec, tmp_path / "cache")
        assert bench.keys == ["a", "b"] and bench.images[1] == fingerprint_image(png_bytes(5)), spec
        assert bench.texts[0] == "Make the sky above the old red barn purple"
    assert load_benchmark(f"hf:{tmp_path / 'saved'}", tmp_path / "cache").from_cache


def test_table_cache_key_covers_the_images_it_names(tmp_path: Path):
    (tmp_path / "a.png").write_bytes(png_bytes(1))
    (tmp_path / "t.jsonl").write_text('{"image": "a.png", "question": "What is in this picture right now?"}\n')
    cache = tmp_path / "cache"
    first = load_benchmark(str(tmp_path / "t.jsonl"), cache)
    (tmp_path / "a.png").write_bytes(b"broken")
    second = load_benchmark(str(tmp_path / "t.jsonl"), cache)
    assert not second.from_cache and second.skipped_images == 1 and first.skipped_images == 0
