"""Resume without reading the source, and the driver off the data path (issue 27 parts 1-2, issue 30 item 9).

A finished run reruns from its manifest and the source's identity (files' sizes and mtimes, a data set's
fingerprint); a changed source is still seen: an edited row's shard is redone, the rest re-read by workers and
kept; a shorter source's missing shards leave the output. Runs here are in-process with `--engine inline`.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from uniedit_synth import synth
from uniedit_synth.core.config import SourceSpec
from uniedit_synth.core.records import IMAGE_STRUCT
from uniedit_synth.run.resume import rows_digest
from uniedit_synth.sources import open_source
from uniedit_synth.sources.files import ParquetSource, RowFileSource
from uniedit_synth.sources.identity import source_identity

FAST = {
    "engine": {"kind": "inline", "shard_size": 5},
    "backends": {"text": {"options": {"latency_s": 0}}, "editor": {"options": {"latency_s": 0}}},
}
ROWS = 20


def png(i: int) -> bytes:
    image = Image.new("RGB", (48, 40), (20 + 9 * i % 200, 90, 160))
    image.paste((250, 250, 250), (5 + i % 20, 5, 20 + i % 20, 20))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def answers(n: int) -> list[str]:
    return ["blue" if i % 2 else "red" for i in range(n)]


def write_parquet(path: Path, n: int = ROWS, answer: list[str] | None = None, ids: bool = True) -> Path:
    columns: dict = {"question": [f"What colour is the square in picture {i}?" for i in range(n)],
                     "answer": answer or answers(n),
                     "image": pa.array([{"bytes": png(i), "path": f"{i}.png"} for i in range(n)], IMAGE_STRUCT)}
    if ids:
        columns["id"] = [f"q{i}" for i in range(n)]
    pq.write_table(pa.table(columns), path, row_group_size=8)
    return path


def run(source: Path, out: Path, **kwargs):
    return synth("default", source=str(source), out=out, overrides=FAST, **kwargs)


def answers_in(out: Path) -> dict[str, str]:
    found = {}
    for kind in ("data", "rejects"):
        for path in sorted((out / kind).glob("shard-*.parquet")):
            for row in pq.read_table(path, columns=["id", "original_answer"]).to_pylist():
                found[row["id"]] = row["original_answer"]
    return found


# -- the source side ----------------------------------------------------------------------------------------
def test_a_light_read_has_no_images_and_hydrate_gives_back_the_whole_records(tmp_path: Path):
    path = write_parquet(tmp_path / "vqa.parquet")
    whole = list(open_source(SourceSpec(spec=str(path)), seed=0, limit=None))
    light_source = open_source(SourceSpec(spec=str(path), shuffle=True), seed=0, limit=None)
    assert light_source.lighten() is None
    light = list(light_source)
    assert all(r.image is None for r in light)
    assert all("_pos" in r.meta for r in light)
    worker_side = open_source(SourceSpec(spec=str(path), shuffle=True), seed=0, limit=None)
    hydrated = worker_side.hydrate(light[3:9])
    by_id = {r.id: r for r in whole}
    for record in hydrated:
        assert record.image == by_id[record.id].image and record.image
        assert record.meta == by_id[record.id].meta  # position tags do not leak into the rows
        assert record.invalid is None


def test_rows_keyed_by_their_image_hash_cannot_be_read_light(tmp_path: Path):
    path = write_parquet(tmp_path / "noid.parquet", ids=False)
    source = open_source(SourceSpec(spec=str(path)), seed=0, limit=None)
    reason = source.lighten()
    assert reason is not None and "id" in reason
    assert all(r.image for r in source)


def test_identity_follows_the_files_not_the_reads(tmp_path: Path):
    path = write_parquet(tmp_path / "vqa.parquet")
    first = source_identity(open_source(SourceSpec(spec=str(path)), seed=0, limit=None))
    assert first and first == source_identity(open_source(SourceSpec(spec=str(path)), seed=0, limit=None))
    write_parquet(path, answer=["green"] + answers(ROWS)[1:])
    assert source_identity(open_source(SourceSpec(spec=str(path)), seed=0, limit=None)) != first


def test_rows_digest_sees_an_edited_answer(tmp_path: Path):
    path = write_parquet(tmp_path / "vqa.parquet")
    before = rows_digest(list(open_source(SourceSpec(spec=str(path)), seed=0, limit=None)))
    write_parquet(path, answer=["green"] + answers(ROWS)[1:])
    assert rows_digest(list(open_source(SourceSpec(spec=str(path)), seed=0, limit=None))) != before


# -- the driver side --------------------------------------------------------------------------------------
@pytest.fixture
def no_row_reads(monkeypatch):
    """Make any read of a source row fail (parquet row groups, row files)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a source row was read")

    def arm():
        monkeypatch.setattr(ParquetSource, "_group_table", refuse)
        monkeypatch.setattr(RowFileSource, "records_at", refuse)
        monkeypatch.setattr(RowFileSource, "__iter__", refuse)

    return arm


def test_a_finished_run_reruns_without_reading_a_row(tmp_path: Path, no_row_reads):
    source = write_parquet(tmp_path / "vqa.parquet")
    first = run(source, tmp_path / "run")
    assert first.shards_done == 4 and first.read == ROWS
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["data_path"]["rows_read_by"] == "workers"
    no_row_reads()
    again = run(source, tmp_path / "run")
    assert again.shards_done == 0 and again.shards_skipped == 4
    assert (again.read, again.accepted) == (first.read, first.accepted)


def test_an_edited_row_redoes_its_shard_only(tmp_path: Path):
    source = write_parquet(tmp_path / "vqa.parquet")
    run(source, tmp_path / "run")
    edited = answers(ROWS)
    edited[7] = "green"  # shard 1 (rows 5-9)
    write_parquet(source, answer=edited)
    again = run(source, tmp_path / "run")
    assert again.shards_done == 1 and again.shards_skipped == 3
    assert answers_in(tmp_path / "run")["vqa/q7"] == "green"
    assert sum(again.calls.values()) > 0  # the edited row's calls are new, the others come from the cache


def test_a_shorter_source_takes_its_missing_shards_out_of_the_output(tmp_path: Path, caplog):
    source = write_parquet(tmp_path / "vqa.parquet")
    run(source, tmp_path / "run")
    write_parquet(source, n=8)  # shards 0 and 1 (3 of its 5 rows); 2 and 3 are gone
    again = run(source, tmp_path / "run")
    assert again.read == 8
    assert set(answers_in(tmp_path / "run")) == {f"vqa/q{i}" for i in range(8)}
    assert sorted(p.name for p in (tmp_path / "run" / "data").glob("*.parquet")) == [
        "shard-00000.parquet", "shard-00001.parquet"]
    assert "no longer in it" in caplog.text
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["read"] == 8 and stats["shards"] == 2


def test_verify_source_sees_an_edit_that_kept_size_and_mtime(tmp_path: Path):
    images = tmp_path / "images"
    images.mkdir()
    lines = []
    for i in range(10):
        (images / f"{i}.png").write_bytes(png(i))
        lines.append(json.dumps({"id": f"q{i}", "image": f"{i}.png", "question": f"What colour is square {i}?",
                                 "answer": answers(10)[i]}))
    rows = tmp_path / "vqa.jsonl"
    rows.write_text("\n".join(lines) + "\n")
    spec = {"source": {"image_root": str(images)}}
    synth("default", source=str(rows), out=tmp_path / "run", overrides={**FAST, **spec})
    stat = rows.stat()
    rows.write_text(rows.read_text().replace('"answer": "blue"}', '"answer": "pink"}', 1))  # same length
    os.utime(rows, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert rows.stat().st_size == stat.st_size
    trusted = synth("default", source=str(rows), out=tmp_path / "run", overrides={**FAST, **spec})
    assert trusted.shards_done == 0  # sizes and mtimes unchanged: the manifest is trusted (documented)
    checked = synth("default", source=str(rows), out=tmp_path / "run", overrides={**FAST, **spec},
                    verify_source=True)
    assert checked.shards_done == 1 and checked.shards_skipped == 1
    assert "pink" in answers_in(tmp_path / "run").values()


def test_the_driver_sends_no_image_bytes_to_the_workers(tmp_path: Path, monkeypatch):
    from uniedit_synth.engine.runtime import InlineRuntime

    sent = []
    original = InlineRuntime.submit

    def spy(self, worker, shard, records, exhausted, verify=None):
        sent.extend(records)
        return original(self, worker, shard, records, exhausted, verify)

    monkeypatch.setattr(InlineRuntime, "submit", spy)
    summary = run(write_parquet(tmp_path / "vqa.parquet"), tmp_path / "run")
    assert len(sent) == ROWS and all(r.image is None for r in sent)
    rows = pq.read_table(tmp_path / "run" / "data" / "shard-00000.parquet", columns=["source_image"]).to_pylist()
    assert summary.accepted and all(r["source_image"]["bytes"] for r in rows)  # the worker read them


def test_stats_says_which_way_the_rows_went(tmp_path: Path):
    from uniedit_synth.report.stats_text import format_stats

    run(write_parquet(tmp_path / "vqa.parquet"), tmp_path / "run")
    totals = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert "source rows read by: workers" in format_stats(totals)
    noid = write_parquet(tmp_path / "noid.parquet", ids=False)
    run(noid, tmp_path / "run2")
    totals = json.loads((tmp_path / "run2" / "stats.json").read_text())
    assert "source rows read by: driver" in format_stats(totals) and "no id column" in format_stats(totals)


def test_a_joined_cluster_keeps_whole_rows_unless_told(tmp_path: Path, monkeypatch):
    from uniedit_synth import load_pipeline
    from uniedit_synth.engine.driver import Driver

    path = write_parquet(tmp_path / "vqa.parquet")
    config = load_pipeline("default", {"source": {"spec": str(path)}, "engine": {"ray_address": "10.0.0.1:6379"}})
    driver = Driver(config, str(tmp_path / "run"), progress=False)
    source = open_source(config.source, seed=0, limit=None)
    driver._lighten(source)
    assert driver.data_path["rows_read_by"] == "driver" and all(r.image for r in source)
    monkeypatch.setenv("UNIEDIT_WORKERS_READ_SOURCE", "1")
    source = open_source(config.source, seed=0, limit=None)
    driver._lighten(source)
    assert driver.data_path["rows_read_by"] == "workers" and not any(r.image for r in source)


def test_scene_records_are_generated_in_the_worker_the_same(tmp_path: Path):
    spec = SourceSpec(spec="scenes", shuffle=True)
    whole = list(open_source(spec, seed=3, limit=30))
    light_source = open_source(spec, seed=3, limit=30)
    assert light_source.lighten() is None
    light = list(light_source)
    assert [r.id for r in light] == [r.id for r in whole]
    assert all(not r.meta.get("scene") for r in light)
    hydrated = open_source(spec, seed=3, limit=30).hydrate(light)
    assert [r.model_dump() for r in hydrated] == [r.model_dump() for r in whole]
