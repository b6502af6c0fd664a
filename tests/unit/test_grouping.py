"""source.group_by_image: which records share an image, seeded samples of 1-3 questions, the same groups on every
read path (whole rows, light rows hydrated in a worker, the offline world's light records), and exact accounting
through a run (`merged` rejects naming their sample)."""

from __future__ import annotations

import glob
import io
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from uniedit_synth.api import synth
from uniedit_synth.core.config import GroupSpec, SourceSpec
from uniedit_synth.core.errors import SourceError
from uniedit_synth.core.records import VQARecord
from uniedit_synth.sources import open_source
from uniedit_synth.sources.grouping import group_records, image_key, merged_into, plan_groups
from uniedit_synth.sources.scenes import ScenesSource


def png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_shorthands_and_bounds() -> None:
    assert SourceSpec(group_by_image=True).group_by_image == GroupSpec()
    assert SourceSpec(group_by_image="path").group_by_image.by == "path"
    assert SourceSpec(group_by_image=False).group_by_image is None
    assert SourceSpec().group_by_image is None  # the release's one question a sample unless a pipeline says
    with pytest.raises(ValueError):
        SourceSpec(group_by_image={"max_questions": 4})


def test_image_key_by_id_path_content_and_auto() -> None:
    record = VQARecord(id="s/1", source="s", image=b"abc", image_path="a/1.png", meta={"image_id": 7})
    assert image_key(record, GroupSpec(by="id")) == "id:7"
    assert image_key(record, GroupSpec(by="path")) == "path:a/1.png"
    assert image_key(record, GroupSpec(by="content")).startswith("sha256:")
    assert image_key(record, GroupSpec()) == "id:7"  # auto: the id column first
    bare = VQARecord(id="s/2", source="s", image=b"abc")
    assert image_key(bare, GroupSpec()) == image_key(record, GroupSpec(by="content"))
    assert image_key(VQARecord(id="s/3", source="s"), GroupSpec()) is None
    assert image_key(record, GroupSpec(by="id", key="img")) is None


def test_groups_cover_every_record_once_with_seeded_sizes() -> None:
    keys = [f"k{i // 5}" for i in range(50)] + [None, None]
    ids = [f"r{i}" for i in range(52)]
    groups = plan_groups(keys, ids, seed=3, max_questions=3)
    members = [g.primary for g in groups] + [s for g in groups for s in g.siblings]
    assert sorted(members) == list(range(52))
    assert all(len({keys[g.primary], *(keys[s] for s in g.siblings)}) == 1 for g in groups)
    sizes = Counter(1 + len(g.siblings) for g in groups if keys[g.primary] is not None)
    assert set(sizes) == {1, 2, 3}  # every size occurs on 10 images of 5 questions
    assert [len(g.siblings) for g in groups if keys[g.primary] is None] == [0, 0]
    assert [g.primary for g in groups] == sorted(g.primary for g in groups)
    assert plan_groups(keys, ids, seed=3, max_questions=3) == groups  # the same on every call
    assert plan_groups(keys, ids, seed=4, max_questions=3) != groups  # seeded
    assert all(not g.siblings for g in plan_groups(keys, ids, seed=3, max_questions=1))


def test_group_records_sets_siblings_and_names_the_primary() -> None:
    records = [VQARecord(id=f"s/{i}", source="s", question=f"q{i}?", answer=f"a{i}", category="color",
                         image_path="same.png", meta={"col": i, "_pos": i}) for i in range(3)]
    merged = group_records(records, [None] * 3, GroupSpec(by="path"), seed=0)
    primaries = [r for r in records if r.siblings]
    total = sum(1 + len(r.siblings) for r in records if r.id not in {records[p].id for p, _ in merged})
    assert total == 3
    for position, primary_id in merged:
        primary = next(r for r in records if r.id == primary_id)
        sibling = next(s for s in primary.siblings if s.id == records[position].id)
        assert (sibling.question, sibling.answer, sibling.category) == (records[position].question,
                                                                        records[position].answer, "color")
        assert "_pos" not in sibling.meta and sibling.meta["col"] == records[position].meta["col"]
    assert all(not r.siblings for p, _ in merged for r in [records[p]])
    assert len(primaries) <= 2
    assert merged_into("merged into sample s/0 (same image; its question is a sibling there)") == "s/0"


# ----------------------------------------------------------------------------------- the offline world


def test_scenes_questions_per_image_share_one_scene() -> None:
    source = ScenesSource(count=12, seed=5, questions_per_image=3)
    records = list(source)
    for start in range(0, 12, 3):
        trio = records[start:start + 3]
        assert len({r.meta["image_id"] for r in trio}) == 1
        assert all(r.meta["scene"] == trio[0].meta["scene"] for r in trio)
        assert len({r.question for r in trio}) == 3
        assert [r.category for r in trio] == [source.categories[i % len(source.categories)] for i in range(start, start + 3)]
    assert records[0].meta["image_id"] != records[3].meta["image_id"]
    assert [r.model_dump() for r in ScenesSource(count=6, seed=5, questions_per_image=3)] == \
        [r.model_dump() for r in records[:6]]  # a larger count keeps the prefix
    # one question a scene (the default) is the stream of earlier releases, with no image_id
    assert "image_id" not in ScenesSource(count=1, seed=5).record(0).meta
    with pytest.raises(SourceError, match="questions_per_image"):
        ScenesSource(questions_per_image=0)


def test_grouping_asks_several_questions_per_scene_when_told() -> None:
    grouped = open_source(SourceSpec(group_by_image={"scenes_questions_per_image": 3}), seed=0, limit=6)
    assert grouped.inner.questions_per_image == 3
    told = SourceSpec(group_by_image={"scenes_questions_per_image": 3}, options={"questions_per_image": 2})
    assert open_source(told, seed=0, limit=6).inner.questions_per_image == 2
    assert open_source(SourceSpec(group_by_image=True), seed=0, limit=6).inner.questions_per_image == 1
    assert open_source(SourceSpec(), seed=0, limit=6).inner.questions_per_image == 1


def test_pipelines_group_by_image() -> None:
    from uniedit_synth.core.config import load_pipeline

    assert load_pipeline("default").source.group_by_image.scenes_questions_per_image == 3
    for name in ("uniedit", "openai"):
        assert load_pipeline(name).source.group_by_image == GroupSpec()
    off = load_pipeline("default", overrides={"source": {"group_by_image": False}})
    assert off.source.group_by_image is None


def _groups(records: list[VQARecord], spec: GroupSpec) -> list[tuple[str, list[str]]]:
    copies = [r.model_copy(deep=True) for r in records]
    group_records(copies, [None] * len(copies), spec, seed=11)
    return [(r.id, [s.id for s in r.siblings]) for r in copies]


def test_scenes_light_records_hydrated_give_the_same_groups_and_sibling_meta() -> None:
    whole = list(ScenesSource(count=20, seed=2, questions_per_image=3))
    light_source = ScenesSource(count=20, seed=2, questions_per_image=3)
    assert light_source.lighten() is None
    light = list(light_source)
    assert all("scene" not in r.meta for r in light)
    hydrated = ScenesSource(count=20, seed=2, questions_per_image=3).hydrate(light)
    assert _groups(hydrated, GroupSpec()) == _groups(whole, GroupSpec())
    copies = [r.model_copy(deep=True) for r in hydrated]
    group_records(copies, [None] * len(copies), GroupSpec(), seed=11)
    by_id = {r.id: r for r in whole}
    siblings = [s for r in copies for s in r.siblings]
    assert siblings
    for sibling in siblings:
        own = by_id[sibling.id]
        assert sibling.meta["question_spec"] == own.meta["question_spec"]
        assert sibling.meta["answer_space"] == own.meta["answer_space"]
        assert sibling.meta["scene"] == own.meta["scene"]


def test_parquet_light_read_hydrated_gives_the_same_groups_as_whole_rows(tmp_path: Path) -> None:
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (90, 90, 90)]
    rows = [{"image": {"bytes": png(colours[i // 3]), "path": f"img{i // 3}.png"}, "question": f"q{i}?",
             "answer": f"a{i}", "image_id": i // 3, "id": f"r{i}"} for i in range(12)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "vqa.parquet", row_group_size=5)
    spec = SourceSpec(spec=str(tmp_path / "vqa.parquet"), group_by_image=True)
    whole = list(open_source(spec, seed=0, limit=None))
    light_source = open_source(spec, seed=0, limit=None)
    assert light_source.lighten() is None
    light = list(light_source)
    assert all(r.image is None for r in light)
    hydrated = open_source(spec, seed=0, limit=None).hydrate(light)
    for by in ("auto", "id", "content"):
        assert _groups(hydrated, GroupSpec(by=by)) == _groups(whole, GroupSpec(by=by)), by
    assert any(siblings for _, siblings in _groups(whole, GroupSpec()))


# ----------------------------------------------------------------------------------- through a run


def _rows(out: Path, kind: str) -> list[dict]:
    return [row for path in sorted(glob.glob(str(out / kind / "*.parquet"))) for row in pq.read_table(path).to_pylist()]


def test_a_grouped_run_accounts_for_every_record(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    lines = []
    for i in range(7):
        (images / f"{i}.png").write_bytes(png((30 * i, 90, 160)))
    for i in range(18):  # three questions an image, in image order; one missing image and one repeated id
        image = "missing.png" if i == 17 else f"{i // 3}.png"
        lines.append({"id": "dup" if i in (4, 5) else f"q{i}", "image": image,
                      "question": f"What colour is the square number {i}?", "answer": "blue"})
    (tmp_path / "vqa.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "run"
    summary = synth("default", out=out, source=str(tmp_path / "vqa.jsonl"),
                    overrides={"engine": {"kind": "inline", "shard_size": 9},
                               "source": {"image_root": str(images), "group_by_image": "path"}})
    data, rejects = _rows(out, "data"), _rows(out, "rejects")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["read"] == 18 == len(data) + len(rejects) == summary.accepted + summary.rejected
    assert stats["accepted"] + sum(stats["reject_reasons"].values()) == 18
    reasons = Counter(r["reject_reason"] for r in rejects)
    assert reasons["invalid_input"] == 1 and reasons["duplicate_id"] == 1
    merged = [r for r in rejects if r["reject_reason"] == "merged"]
    assert merged and stats["reject_reasons"]["merged"] == len(merged)
    others = {r["id"]: r for r in data + rejects if r["reject_reason"] != "merged"}
    for row in merged:
        primary = others[merged_into(row["reject_detail"])]
        assert row["source_image"] is None and primary["shard"] == row["shard"]  # never across a shard
        image_of = {line["id"]: line["image"] for line in lines}
        assert image_of[primary["id"].split("/", 1)[1]] == image_of[row["id"].split("/", 1)[1]]


def test_one_category_with_few_question_forms_still_ends() -> None:
    records = list(ScenesSource(count=10, seed=1, questions_per_image=5, categories=["knowledge"]))
    assert len(records) == 10 and len({r.meta["image_id"] for r in records}) == 2
