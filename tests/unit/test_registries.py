"""The source and export registries: which class opens a spec or writes a format, plugins included, and the
benchmark reader going through the source classes."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from uniedit_synth.core.config import SourceSpec
from uniedit_synth.core.errors import ExportError, SourceError
from uniedit_synth.export import registry as export_registry
from uniedit_synth.export.registry import format_class
from uniedit_synth.sources import image_root_for, open_source, registry
from uniedit_synth.sources.benchmarks import BenchmarkError, load_benchmark
from uniedit_synth.sources.files import ParquetSource, RowFileSource
from uniedit_synth.sources.hf import HFSource
from uniedit_synth.sources.scenes import ScenesSource

SIDECAR = "examples.plugins.sidecar_source:SidecarSource"


@pytest.fixture
def sidecars(tmp_path: Path) -> Path:
    folder = tmp_path / "shots"
    folder.mkdir()
    for n in range(3):
        Image.new("RGB", (32, 32), (10 * n, 0, 0)).save(folder / f"s{n}.png")
        (folder / f"s{n}.qa.txt").write_text(f"How many?\n{n}\n")
    return folder


def test_built_in_classes_say_which_specs_they_open(tmp_path: Path):
    (tmp_path / "rows.jsonl").write_text("{}\n")
    (tmp_path / "t.parquet").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "metadata.jsonl").write_text("{}\n")
    found = {spec: registry.source_class(SourceSpec(spec=spec)) for spec in (
        "scenes", "hf:org/name", str(tmp_path / "rows.jsonl"), str(tmp_path / "t.parquet"), f"{tmp_path}/*.parquet",
        str(tmp_path / "folder"), str(tmp_path / "missing.jsonl"))}
    assert list(found.values()) == [ScenesSource, HFSource, RowFileSource, ParquetSource, ParquetSource,
                                    RowFileSource, None]


def test_a_named_plugin_source_opens_and_says_where_its_images_live(sidecars: Path):
    spec = SourceSpec(spec=f"sidecar:{sidecars}", type=SIDECAR)
    records = list(open_source(spec, seed=0, limit=None))
    assert [r.id for r in records] == ["sidecar/s0", "sidecar/s1", "sidecar/s2"]
    assert records[1].image_path == "s1.png" and records[1].answer == "1"
    assert image_root_for(spec) == sidecars.resolve()  # what a worker resolves s1.png against


def test_a_registered_plugin_source_is_found_by_its_spec(sidecars: Path, monkeypatch: pytest.MonkeyPatch):
    spec = SourceSpec(spec=f"sidecar:{sidecars}")
    with pytest.raises(SourceError, match="source not found"):  # nobody opens `sidecar:` yet
        open_source(spec, seed=0, limit=None)
    monkeypatch.setitem(registry._SOURCES, "sidecar", SIDECAR)
    assert len(list(open_source(spec, seed=0, limit=2))) == 2
    assert image_root_for(spec) == sidecars.resolve()


def test_source_types_that_cannot_be_used_are_one_line_errors():
    with pytest.raises(SourceError, match="unknown source.type 'npz'.*scenes, hf, rows, parquet"):
        open_source(SourceSpec(spec="x", type="npz"), seed=0, limit=None)
    with pytest.raises(SourceError, match="cannot be loaded.*PYTHONPATH"):
        open_source(SourceSpec(spec="x", type="no_such_module:Source"), seed=0, limit=None)
    with pytest.raises(SourceError, match="not a Source class"):
        open_source(SourceSpec(spec="x", type="pathlib:Path"), seed=0, limit=None)


def test_export_formats_come_from_the_registry():
    assert [format_class(name).name for name in export_registry.known_formats()] == ["uniedit-jsonl", "hf", "bagel"]
    assert (format_class("hf").shard_rows, format_class("hf").row_group_rows) == (500, 16)
    assert format_class("examples.plugins.csv_export:CsvExport").name == "csv"
    with pytest.raises(ExportError, match="unknown export format 'parquet'"):
        format_class("parquet")
    with pytest.raises(ExportError, match="not an export writer"):
        format_class("pathlib:Path")


def test_benchmark_tables_are_read_by_the_source_classes(tmp_path: Path):
    tsv = tmp_path / "bench.tsv"  # a form the source classes read (the benchmark reader had no TSV of its own)
    tsv.write_text("id\tinstruction\na\tTurn the red cube into a blue sphere please\nb\tRemove every cone now\n")
    bench = load_benchmark(str(tsv), cache_dir=tmp_path / "cache")
    assert bench.keys == ["a", "b"] and bench.texts[1] == "Remove every cone now"
    broken = tmp_path / "bench.jsonl"
    broken.write_text('{"id": 1, "instruction": "fine"}\n{not json\n')
    with pytest.raises(BenchmarkError, match="cannot read benchmark"):
        load_benchmark(str(broken), cache_dir=tmp_path / "cache")
    keyed = tmp_path / "keyed.json"  # the benchmarks' own layout: one row per key
    keyed.write_text('{"k1": {"prompt": "Add a hat to the cat in the picture"}}')
    assert load_benchmark(str(keyed), cache_dir=tmp_path / "cache").texts == ["Add a hat to the cat in the picture"]
