"""Benchmark folders in their own layouts are source classes of the registry: the audit's `--against` finds them
there (a registered plugin layout too), and a run refuses one as its source with a one-line error."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from uniedit_synth.core.config import SourceSpec
from uniedit_synth.core.errors import SourceError
from uniedit_synth.sources import open_source, registry
from uniedit_synth.sources.bench_layouts import BenchmarkLayout, KrisBench
from uniedit_synth.sources.benchmarks import load_benchmark


def png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (shade, 255 - shade, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


class PairsBench(BenchmarkLayout):
    """A plugin layout: `pairs.txt`, one `<image> <instruction>` a line."""

    label = "pairs-bench"

    @classmethod
    def recognises(cls, folder: Path) -> bool:
        return (folder / "pairs.txt").is_file()

    @classmethod
    def raw_rows(cls, path: Path, options: Mapping[str, Any] | None = None) -> Iterator[Mapping[str, Any]]:
        for n, line in enumerate((path / "pairs.txt").read_text().splitlines()):
            image, _, text = line.partition(" ")
            yield {"key": f"p{n}", "image_path": str(path / image), "instruction": text}


def test_a_layout_is_found_through_the_registry(tmp_path: Path):
    kris = tmp_path / "KRIS"
    (kris / "colour").mkdir(parents=True)
    (kris / "colour" / "a.png").write_bytes(png(10))
    (kris / "colour" / "annotation.json").write_text(json.dumps({"7": {"ori_img": "a.png", "ins_en": "Paint it."}}))
    assert ("kris-bench", KrisBench) in registry.source_classes(BenchmarkLayout)
    bench = load_benchmark(str(kris))
    assert bench.keys == ["colour/7"] and bench.texts == ["Paint it."] and bench.images[0] is not None


def test_a_registered_plugin_layout_is_read_by_the_audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "pairs"
    folder.mkdir()
    (folder / "x.png").write_bytes(png(200))
    (folder / "pairs.txt").write_text("x.png Make the sky green.\n")
    monkeypatch.setitem(registry._SOURCES, "pairs-bench", f"{__name__}:PairsBench")
    bench = load_benchmark(str(folder))
    assert bench.keys == ["p0"] and bench.texts == ["Make the sky green."] and bench.images[0] is not None


def test_a_benchmark_folder_is_no_run_source(tmp_path: Path):
    rise = tmp_path / "RISE"
    rise.mkdir()
    (rise / "datav2_total_w_subtask.json").write_text("[]")
    with pytest.raises(SourceError, match="editing benchmark risebench.*--against"):
        open_source(SourceSpec(spec=str(rise)), seed=0, limit=None)
