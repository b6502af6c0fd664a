"""A plugin source and a plugin export from examples/plugins/, through the CLI as a user runs them: a folder of
images with question/answer sidecars is synthesised (`source.type: package.module:Class`), the run exported
as CSV (`--format package.module:Class`, with `--format-option`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.e2e

SOURCE = "examples.plugins.sidecar_source:SidecarSource"
EXPORT = "examples.plugins.csv_export:CsvExport"
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60), "yellow": (235, 210, 40)}


def shots(folder: Path) -> Path:
    """Four images (a coloured square on grey, in a sub-folder-free layout) with `<name>.qa.txt` sidecars."""
    folder.mkdir()
    for n, (name, rgb) in enumerate(COLOURS.items()):
        image = Image.new("RGB", (96, 96), (128, 128, 128))
        ImageDraw.Draw(image).rectangle([20 + n, 20, 70, 70], fill=rgb)
        image.save(folder / f"shot{n}.png")
        (folder / f"shot{n}.qa.txt").write_text(f"What colour is the square?\n{name}\n", encoding="utf-8")
    (folder / "broken.qa.txt").write_text("a question without an answer\n", encoding="utf-8")
    return folder


def one_line_error(proc, needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr


def test_a_plugin_source_and_a_plugin_export_run_end_to_end(tmp_path: Path):
    env = {"PYTHONPATH": str(REPO)}
    folder = shots(tmp_path / "shots")
    run = tmp_path / "run"
    proc = run_cli("synth", "--source", f"sidecar:{folder}", "--set", f"source.type={SOURCE}", "--out", str(run),
                   "--engine", "inline", "--no-progress", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((run / "stats.json").read_text())
    assert stats["read"] == 5 and stats["accepted"] + stats["rejected"] == 5
    assert stats["reject_reasons"].get("invalid_input") == 1  # the broken sidecar, and no image went unread
    assert stats["accepted"] >= 3, stats["reject_reasons"]

    out = tmp_path / "csv"
    proc = run_cli("export", str(run), "--format", EXPORT, "--out", str(out), "--format-option", "delimiter=;",
                   "-q", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (out / "samples.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    assert len(rows) == stats["accepted"]
    assert {row["id"].split("/")[0] for row in rows} == {"sidecar"}
    assert {row["original_answer"] for row in rows} <= set(COLOURS)
    for row in rows:  # the images the plugin wrote are the run's images
        with Image.open(out / row["source_image"]) as image:
            assert image.size == (96, 96)
        assert (out / row["edited_image"]).is_file()
    summary = json.loads((out / "export.json").read_text())
    assert summary["format"] == EXPORT and summary["rows"] == {"train": stats["accepted"]}

    # the plugin's own options are validated, and what it cannot write is refused before anything is written
    one_line_error(run_cli("export", str(run), "--format", EXPORT, "--out", str(tmp_path / "x"),
                           "--format-option", "colour=red", env=env, cwd=tmp_path), "colour")
    one_line_error(run_cli("export", str(run), "--format", EXPORT, "--out", str(tmp_path / "y"),
                           "--include-rejects", env=env, cwd=tmp_path), "no preference pairs")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
