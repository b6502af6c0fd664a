"""Hostile input and operator mistakes through the `uniedit` command line: every one ends as a reject with a
reason, or a one-line error (exit 2), never a traceback, a hang or a silent conversion (issue 19)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.e2e


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def all_rows(out: Path) -> dict[str, dict]:
    found = {}
    for kind in ("data", "rejects"):
        for path in sorted((out / kind).glob("shard-*.parquet")):
            for row in pq.read_table(path).to_pylist():
                found[row["id"]] = row
    return found


def one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def synth(source: Path | str, out: Path, *extra: str):
    return run_cli("synth", "--source", str(source), "--out", str(out), "--engine", "inline", "--no-progress",
                   "--set", "stages.classify.drop_categories=[]", *extra, timeout=120)


def vqa_file(tmp_path: Path, rows: list[dict], name: str = "vqa.jsonl") -> Path:
    (tmp_path / "good.png").write_bytes(png())
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_nul_byte_in_an_image_path_is_one_reject_and_the_run_finishes(tmp_path: Path):
    source = vqa_file(tmp_path, [
        {"id": "ok", "image": "good.png", "question": "What color is the box?", "answer": "red"},
        {"id": "nul", "image": "good\u0000.png", "question": "What color is the box?", "answer": "red"},
    ])
    out = tmp_path / "run"
    proc = synth(source, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = all_rows(out)
    assert rows["vqa/nul"]["reject_reason"] == "invalid_input"
    assert "NUL byte" in rows["vqa/nul"]["reject_detail"]
    assert len(rows) == 2


@pytest.mark.parametrize("args, needles", [
    (("synth", "--bogus-flag"), ("No such option", "--bogus-flag")),
    (("synth", "--limit", "-1"), ("Invalid value for '--limit'",)),
    (("synth", "--shard-size", "0"), ("Invalid value for '--shard-size'",)),
    (("nosuchcommand",), ("No such command", "nosuchcommand")),
    (("stats",), ("Missing argument",)),
])
def test_usage_errors_print_clicks_message_and_exit_2(args: tuple[str, ...], needles: tuple[str, ...]):
    """Checked with the newest typer (which raises its vendored `typer._click` exceptions) and with the lowest
    the pyproject allows (click's own exceptions): `PYTHONPATH=<dir with typer==0.18.0>:. pytest -k usage`."""
    proc = run_cli(*args, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Usage:" in proc.stderr
    error = next(line for line in proc.stderr.splitlines() if line.startswith("Error: "))
    for needle in needles:
        assert needle in error, error


def alias_bomb_pipeline(tmp_path: Path) -> Path:
    """The default pipeline with a billion-laughs alias bomb (~1.4 KB) under stages.judge.params."""
    lines = ['    l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"    l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    text = (REPO / "pipelines" / "default.yaml").read_text()
    assert "  judge:\n    backend: text\n" in text
    bomb = text.replace("  judge:\n    backend: text\n", "  judge:\n    backend: text\n    params:\n"
                        + "\n".join("  " + line for line in lines) + "\n")
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    return path


def test_yaml_alias_bomb_in_a_pipeline_is_refused_at_once(tmp_path: Path):
    proc = run_cli("synth", "--pipeline", str(alias_bomb_pipeline(tmp_path)), "--out", str(tmp_path / "run"),
                   "--engine", "inline", "--no-progress", timeout=60)
    one_line_error(proc, "bomb.yaml", "aliases expand to more than")
    assert not (tmp_path / "run").exists()


def test_yaml_alias_bomb_in_a_set_value_is_refused(tmp_path: Path):
    value = '{a: &a [x,x,x,x,x,x,x,x,x], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], ' \
            'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], f: [*e,*e,*e,*e,*e,*e,*e,*e,*e]}'
    proc = run_cli("synth", "--set", f"stages.judge.params={value}", "--out", str(tmp_path / "run"),
                   "--engine", "inline", "--no-progress", timeout=60)
    one_line_error(proc, "--set stages.judge.params", "aliases expand")


def test_non_utf8_pipeline_file_is_a_clean_error(tmp_path: Path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes((REPO / "pipelines" / "default.yaml").read_bytes() + "# café\n".encode("latin-1"))
    proc = run_cli("synth", "--pipeline", str(path), "--out", str(tmp_path / "run"), timeout=60)
    one_line_error(proc, "latin1.yaml", "not UTF-8")
