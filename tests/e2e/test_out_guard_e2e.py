"""What `uniedit synth --out` may touch (issue 30, items 3 and 4): never a source file or an `--image-root`, and in a
folder that is not a run, nothing of the user's — such a folder is refused unless `--force`, and even then no file
of theirs is overwritten or removed (stats.json, their `.*.tmp` files)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import run_cli
from tests.e2e.test_hostile_cli import one_line_error

pytestmark = pytest.mark.e2e


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def synth(out: Path, *extra: str):
    return run_cli("synth", "--out", str(out), "--engine", "inline", "--no-progress", "--limit", "2", *extra,
                   timeout=120)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def pq_source(tmp_path: Path) -> Path:
    """A VQA data set laid out like a run: pq/data/shard-00000.parquet (what a user may well call it)."""
    root = tmp_path / "pq"
    (root / "data").mkdir(parents=True)
    table = pa.table({"id": ["a", "b"], "image": [png(), png()], "question": ["What color?"] * 2,
                      "answer": ["red"] * 2})
    pq.write_table(table, root / "data" / "shard-00000.parquet")
    return root


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("form", ["glob", "folder"])
def test_out_over_its_own_source_is_refused_and_the_source_is_untouched(pq_source, force, form):
    before = tree(pq_source)
    source = str(pq_source / "data" / "shard-*.parquet") if form == "glob" else str(pq_source / "data")
    proc = synth(pq_source, "--source", source, *(["--force"] if force else []))
    one_line_error(proc, "source")
    assert tree(pq_source) == before


def test_out_that_is_the_image_root_is_refused(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(png())
    rows = tmp_path / "vqa.jsonl"
    rows.write_text(json.dumps({"id": "a", "image": "a.png", "question": "What color?", "answer": "red"}) + "\n")
    before = tree(images)
    proc = synth(images, "--source", str(rows), "--image-root", str(images), "--force")
    one_line_error(proc, "--image-root")
    assert tree(images) == before


def test_a_folder_that_is_not_a_run_is_refused_without_force(tmp_path):
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "todo.txt").write_text("buy milk")
    before = tree(mine)
    proc = synth(mine)
    one_line_error(proc, "not a uniedit run", "--force")
    assert tree(mine) == before


def test_force_never_overwrites_a_users_stats_json(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "stats.json").write_text('{"my": "numbers"}')
    before = tree(mine)
    proc = synth(mine, "--force")
    one_line_error(proc, "stats.json")
    assert tree(mine) == before


def test_force_writes_a_run_beside_the_users_files_and_keeps_their_tmp_files(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    (mine / ".draft.txt.tmp").write_text("half a thought")
    (mine / ".run.json.backup.tmp").write_text("not uniedit's either")
    proc = synth(mine, "--force")
    assert proc.returncode == 0, proc.stderr
    assert (mine / "notes.txt").read_text() == "mine"
    assert (mine / ".draft.txt.tmp").read_text() == "half a thought"
    assert (mine / ".run.json.backup.tmp").exists()
    again = synth(mine)  # now it is a run: no --force needed, and still nothing of theirs removed
    assert again.returncode == 0, again.stderr
    assert (mine / ".draft.txt.tmp").exists() and "temp file" not in again.stderr


def test_a_run_that_stopped_before_writing_run_json_is_resumed_without_force(tmp_path):
    out = tmp_path / "run"
    for name in ("data", "rejects", "attempts", "cache"):
        (out / name).mkdir(parents=True)  # what create_dirs leaves when the run dies at once
    proc = synth(out)
    assert proc.returncode == 0, proc.stderr


def test_a_runs_own_temp_files_are_cleaned_and_a_users_are_kept(tmp_path):
    out = tmp_path / "run"
    assert synth(out).returncode == 0
    (out / "data" / ".shard-00007.parquet.999-abcdef01.tmp").write_bytes(b"half a shard")
    (out / ".my-editor-swap.tmp").write_text("mine")
    (out / "data" / ".notes.tmp").write_text("mine too")
    proc = synth(out)
    assert proc.returncode == 0, proc.stderr
    assert not (out / "data" / ".shard-00007.parquet.999-abcdef01.tmp").exists()
    assert (out / ".my-editor-swap.tmp").read_text() == "mine"
    assert (out / "data" / ".notes.tmp").read_text() == "mine too"


def test_force_is_documented_in_help():
    proc = run_cli("synth", "--help")
    assert "--force" in proc.stdout and "not a uniedit run" in " ".join(proc.stdout.split())
