"""engine/out_guard.py without the CLI: which --out a synth run may write to (issue 30, items 3 and 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from uniedit_synth.core.config import SourceSpec
from uniedit_synth.engine.out_guard import NotARunFolder, OutOverlapsSource, check_out


def spec(source: str, image_root: Path | None = None) -> SourceSpec:
    return SourceSpec(spec=source, image_root=str(image_root) if image_root else None)


def test_a_source_file_where_the_run_writes_is_refused(tmp_path: Path):
    (tmp_path / "pq" / "cache").mkdir(parents=True)
    (tmp_path / "pq" / "cache" / "rows.jsonl").write_text("{}\n")
    with pytest.raises(OutOverlapsSource, match="cache/ is where the run writes"):
        check_out(str(tmp_path / "pq"), spec(str(tmp_path / "pq" / "cache" / "rows.jsonl")), force=True)


def test_an_out_inside_a_source_folder_is_refused(tmp_path: Path):
    (tmp_path / "shards").mkdir()
    with pytest.raises(OutOverlapsSource, match="inside the source folder"):
        check_out(str(tmp_path / "shards" / "run"), spec(str(tmp_path / "shards")))


def test_an_image_root_where_the_run_writes_is_refused(tmp_path: Path):
    (tmp_path / "rows.jsonl").write_text("{}\n")
    with pytest.raises(OutOverlapsSource, match="--image-root"):
        check_out(str(tmp_path / "run"), spec(str(tmp_path / "rows.jsonl"), tmp_path / "run" / "data"))


def test_ordinary_layouts_pass(tmp_path: Path):
    (tmp_path / "vqa.jsonl").write_text("{}\n")
    (tmp_path / "images").mkdir()
    check_out(str(tmp_path / "runs" / "mine"), spec(str(tmp_path / "vqa.jsonl"), tmp_path / "images"))
    check_out(str(tmp_path / "runs" / "mine"), spec(str(tmp_path / "vqa.jsonl"), tmp_path))  # out inside the root
    check_out(str(tmp_path / "runs" / "scenes"), spec("scenes"))


def test_a_folder_with_a_foreign_run_json_is_not_a_run(tmp_path: Path):
    (tmp_path / "run.json").write_text('{"another": "tool"}')
    with pytest.raises(NotARunFolder, match="not a uniedit run"):
        check_out(str(tmp_path), spec("scenes"))
    with pytest.raises(NotARunFolder, match="run.json"):
        check_out(str(tmp_path), spec("scenes"), force=True)
