"""`uniedit export --overwrite` replaces only what an earlier uniedit export wrote (issue 30, item 1): its
export.json is checked as our own manifest, and only the files it lists are removed; anything else in the folder
stays, and a folder with an export.json of another kind is refused with nothing deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.synthetic_runs import make_sample, write_run
from uniedit_synth.core.errors import ExportError
from uniedit_synth.export import export_run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run", [make_sample(i, category="color", score=4, shard=0) for i in range(3)])


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("manifest", [
    b"not json",
    b'{"tool": "another", "files": ["sub/mydata.txt"]}',
    b'["export", "json"]',
    b"null",
])
def test_a_folder_that_merely_holds_an_export_json_is_refused_and_nothing_is_deleted(run, tmp_path, manifest):
    target = tmp_path / "d"
    (target / "sub").mkdir(parents=True)
    (target / "export.json").write_bytes(manifest)
    (target / "sub" / "mydata.txt").write_text("precious")
    before = tree(target)
    with pytest.raises(ExportError, match="not a uniedit export") as info:
        export_run(run, target, "hf", overwrite=True, progress=False)
    assert "\n" not in str(info.value)
    assert tree(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "run"]  # no staging left either


def test_a_forged_manifest_cannot_make_it_delete_outside_the_folder(run, tmp_path):
    target = tmp_path / "out"
    export_run(run, target, "hf", progress=False)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    manifest = json.loads((target / "export.json").read_text())
    manifest["written"] = [*manifest["written"], "../victim.txt"]
    (target / "export.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="not a uniedit export"):
        export_run(run, target, "hf", overwrite=True, progress=False)
    assert victim.read_text() == "precious"


def test_overwrite_replaces_the_files_of_the_earlier_export_and_keeps_the_users_own(run, tmp_path):
    target = tmp_path / "out"
    export_run(run, target, "uniedit-jsonl", progress=False)
    assert (target / "images").is_dir()
    (target / "notes.txt").write_text("mine")
    (target / "images" / "my-drawing.png").write_bytes(b"mine too")
    summary = export_run(run, target, "hf", overwrite=True, progress=False)
    assert summary.format == "hf" and (target / "data").is_dir()
    assert (target / "notes.txt").read_text() == "mine"
    assert (target / "images" / "my-drawing.png").read_bytes() == b"mine too"
    assert [p.name for p in (target / "images").rglob("*") if p.is_file()] == ["my-drawing.png"]
    assert not list(target.rglob("*.jsonl"))  # the earlier export's own files are gone
    assert sorted(json.loads((target / "export.json").read_text())["written"]) == sorted(
        path for path in tree(target) if path not in ("export.json", "notes.txt", "images/my-drawing.png"))


def test_a_user_file_where_the_new_export_writes_is_refused_and_kept(run, tmp_path):
    target = tmp_path / "out"
    export_run(run, target, "uniedit-jsonl", progress=False)
    (target / "data" / "train-00000-of-00001.parquet").write_bytes(b"a file of mine")
    before = tree(target)
    with pytest.raises(ExportError, match="train-00000-of-00001.parquet"):
        export_run(run, target, "hf", overwrite=True, progress=False)
    assert tree(target) == before


def test_an_export_json_that_does_not_list_its_files_is_not_replaced(run, tmp_path):
    target = tmp_path / "out"
    export_run(run, target, "hf", progress=False)
    manifest = json.loads((target / "export.json").read_text())
    del manifest["written"]  # as an export made before every file was listed
    (target / "export.json").write_text(json.dumps(manifest))
    before = tree(target)
    with pytest.raises(ExportError, match="does not list"):
        export_run(run, target, "hf", overwrite=True, progress=False)
    assert tree(target) == before
