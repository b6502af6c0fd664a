"""Hostile input and operator mistakes through the `uniedit` command line: every one ends as a reject with a
reason, or a one-line error (exit 2), never a traceback, a hang or a silent conversion (issue 19)."""

from __future__ import annotations

import io
import json
import re
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


# -- a run's own files, damaged -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base") / "run"
    proc = run_cli("synth", "--engine", "inline", "--limit", "4", "--shard-size", "2", "--no-progress",
                   "--out", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def copy_run(finished_run: Path, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


def base_synth(out: Path, *extra: str):
    return run_cli("synth", "--engine", "inline", "--limit", "4", "--shard-size", "2", "--no-progress",
                   "--out", str(out), *extra, timeout=120)


@pytest.mark.parametrize("garbage", [b"garbage{", b'{"pipeline_hash": 5, "config": 3}'])
def test_a_corrupt_run_json_is_an_unknown_config(finished_run: Path, tmp_path: Path, garbage: bytes):
    out = copy_run(finished_run, tmp_path)
    (out / "run.json").write_bytes(garbage)
    shards = {p.name: p.read_bytes() for p in (out / "data").glob("shard-*.parquet")}
    proc = base_synth(out, "--set", "stages.judge.thresholds.coherence=2")
    one_line_error(proc, "run.json", "unknown", "--force-new-config")
    assert (out / "run.json").read_bytes() == garbage  # nothing rewritten
    assert {p.name: p.read_bytes() for p in (out / "data").glob("shard-*.parquet")} == shards
    forced = base_synth(out, "--set", "stages.judge.thresholds.coherence=2", "--force-new-config")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert "2 run, 0 already done" in forced.stdout
    assert json.loads((out / "run.json").read_text())["config"]["stages"]["judge"]["thresholds"]["coherence"] == 2
    proc = run_cli("stats", str(out), timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("line", [b"[1, 2]", b'{"shard": 0, "records": 2}'])
def test_manifest_lines_of_the_wrong_shape_are_named_and_left_out(finished_run: Path, tmp_path: Path, line: bytes):
    out = copy_run(finished_run, tmp_path)
    good = (out / "manifest.jsonl").read_bytes().splitlines(keepends=True)
    (out / "manifest.jsonl").write_bytes(good[0] + line + b"\n" + b"".join(good[1:]))
    for command in (("stats", str(out)), ("report", str(out), "-q")):
        proc = run_cli(*command, timeout=120)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (command, proc.stderr[-2000:])
        if command[0] == "stats":
            assert "manifest.jsonl line 2 is not a shard result" in proc.stderr, (command, proc.stderr)
    assert "records: 4" in run_cli("stats", str(out)).stdout  # the good lines after it still count
    proc = base_synth(out)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count("manifest.jsonl line 2") == 1, proc.stderr
    assert "0 run, 2 already done" in proc.stdout


def test_wrong_typed_fields_are_rejects_naming_the_type(tmp_path: Path):
    source = vqa_file(tmp_path, [
        {"id": "ok", "image": "good.png", "question": "What color is the box?", "answer": "red"},
        {"id": "list", "image": "good.png", "question": ["What color is the box?", "How many?"], "answer": "red"},
        {"id": "bool", "image": "good.png", "question": "Is the box red?", "answer": True},
    ])
    out = tmp_path / "run"
    proc = synth(source, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = all_rows(out)
    assert rows["vqa/list"]["reject_reason"] == "invalid_input" and "question is a list" in rows["vqa/list"][
        "reject_detail"]
    assert rows["vqa/bool"]["reject_reason"] == "invalid_input" and "answer is a boolean" in rows["vqa/bool"][
        "reject_detail"]
    assert rows["vqa/ok"]["reject_reason"] != "invalid_input"


def test_a_truncated_shard_is_named_by_every_reader(finished_run: Path, tmp_path: Path):
    out = copy_run(finished_run, tmp_path)
    shard = out / "data" / "shard-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:300])
    stats = run_cli("stats", str(out), timeout=60)
    assert stats.returncode == 0 and "Traceback" not in stats.stderr
    assert "warning: shard 1: data/shard-00001.parquet missing or truncated" in stats.stderr, stats.stderr
    for command in (("report", str(out), "-q"), ("inspect", str(out), "--id", "nope"),
                    ("export", str(out), "--format", "hf", "--out", str(tmp_path / "hf"), "-q")):
        one_line_error(run_cli(*command, timeout=60), "shard-00001.parquet is truncated or corrupt", "uniedit synth")
    redo = base_synth(out)  # what the messages say to do
    assert redo.returncode == 0 and "1 run, 1 already done" in redo.stdout, redo.stdout + redo.stderr
    assert run_cli("report", str(out), "-q", timeout=60).returncode == 0


def test_an_explicit_source_is_read_whole_despite_the_pipelines_limit(tmp_path: Path):
    pipeline = tmp_path / "small.yaml"
    pipeline.write_text((REPO / "pipelines" / "default.yaml").read_text().replace("limit: 300", "limit: 2"))
    assert "limit: 2" in pipeline.read_text()
    source = vqa_file(tmp_path, [
        {"id": f"r{i}", "image": "good.png", "question": f"What color is box {i}?", "answer": "red"} for i in range(5)
    ])
    proc = synth(source, tmp_path / "run", "--pipeline", str(pipeline))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "5 records" in proc.stdout, proc.stdout
    limited = synth(source, tmp_path / "run3", "--pipeline", str(pipeline), "--limit", "3")
    assert "3 records" in limited.stdout, limited.stdout


def test_no_log_record_from_any_library_carries_a_key(tmp_path: Path):
    import subprocess
    import sys

    key = "sk-echoed-canary-5f1e2d3c4b"
    script = (
        "import logging\n"
        "from uniedit_synth.cli import _setup_logging\n"
        "_setup_logging(2, False)\n"
        "logging.getLogger('httpcore2.http11').warning('receive_response_headers.complete return_value=%r',"
        " (b'HTTP/1.1', 200, [(b'x-echo-key', b'" + key + "')]))\n"
        "logging.getLogger('some.library').debug('Authorization: Bearer %s', '" + key + "')\n"
        "try:\n    raise ValueError('" + key + "')\nexcept ValueError:\n    logging.getLogger('x').exception('boom')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**__import__("os").environ, "UE_TEST_OPENAI_KEY": key})
    assert proc.returncode == 0, proc.stderr
    assert key not in proc.stderr and proc.stderr.count("***") >= 3, proc.stderr


def test_a_killed_exports_staging_dir_is_cleaned_by_the_next_export(finished_run: Path, tmp_path: Path):
    dead = tmp_path / ".hf.partial-4000000"  # above any pid_max: that process is gone
    (dead / "data").mkdir(parents=True)
    (dead / "data" / "half.parquet").write_bytes(b"half")
    proc = run_cli("export", str(finished_run), "--format", "hf", "--out", str(tmp_path / "hf"), "-q", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not dead.exists() and (tmp_path / "hf").is_dir()
    assert not list(tmp_path.glob(".hf.partial-*"))


def test_a_pipeline_name_cannot_steer_the_default_output_out_of_runs(tmp_path: Path):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    proc = run_cli("synth", "--engine", "inline", "--limit", "2", "--no-progress", "--set", "name=../../../escaped",
                   cwd=work, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "escaped").exists()
    assert [p.name for p in (work / "runs").iterdir()] == ["escaped"]


EVIL_ID = "../../x\x1b]0;pwned\x07\x1b[31mred"


def test_hostile_ids_reach_neither_the_terminal_nor_export_paths(tmp_path: Path):
    source = vqa_file(tmp_path, [
        {"id": EVIL_ID, "image": "good.png", "question": "What color is the box?", "answer": "red"},
        {"id": "ok", "image": "good.png", "question": "What color is the large box?", "answer": "red"},
    ])
    out = tmp_path / "run"
    assert synth(source, out, "--set", "stages.judge.thresholds={}").returncode == 0
    sample_id = f"vqa/{EVIL_ID}"
    for args in (("inspect", str(out), "--id", sample_id), ("inspect", str(out), "--id", sample_id + "-nope"),
                 ("stats", str(out))):
        proc = run_cli(*args, timeout=60)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "\x1b" not in proc.stdout + proc.stderr and "\x07" not in proc.stdout + proc.stderr, args
    shown = run_cli("inspect", str(out), "--id", sample_id, timeout=60)
    assert shown.returncode == 0 and "\\x1b]0;pwned" in shown.stdout  # shown, escaped
    proc = run_cli("export", str(out), "--format", "hf", "--out", str(tmp_path / "hf"), "-q", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    paths = [value["path"] for shard in (tmp_path / "hf").rglob("*.parquet")
             for row in pq.read_table(shard).to_pylist() for value in row.values()
             if isinstance(value, dict) and "bytes" in value and "path" in value]  # the image cells
    assert paths and all(re.fullmatch(r"[A-Za-z0-9._-]+", p) and not p.startswith(".") for p in paths), paths


@pytest.mark.parametrize("first", ['{"id": "x"}', '{"id": "y", "question": 5}', "{not json", "[1, 2]"])
def test_a_bad_first_row_is_one_reject_not_the_sources_end(tmp_path: Path, first: str):
    (tmp_path / "good.png").write_bytes(png())
    good = json.dumps({"id": "ok", "image": "good.png", "question": "What color is the box?", "answer": "red"})
    (tmp_path / "vqa.jsonl").write_text(first + "\n" + good + "\n")
    out = tmp_path / "run"
    proc = synth(tmp_path / "vqa.jsonl", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = all_rows(out)
    assert len(rows) == 2 and rows["vqa/ok"]["reject_reason"] != "invalid_input"
    assert sum(r["reject_reason"] == "invalid_input" for r in rows.values()) == 1


def test_a_source_with_no_usable_columns_is_still_a_clean_error(tmp_path: Path):
    (tmp_path / "vqa.jsonl").write_text('{"id": "x", "ask": "?"}\n{"id": "y", "ask": "?"}\n')
    one_line_error(synth(tmp_path / "vqa.jsonl", tmp_path / "run"), "no column found for: question, answer")


def test_a_fifo_as_source_is_refused_not_waited_on(tmp_path: Path):
    import os

    fifo = tmp_path / "vqa.jsonl"
    os.mkfifo(fifo)
    one_line_error(synth(fifo, tmp_path / "run"), "not a regular file")


@pytest.mark.ray
def test_sigterm_under_ray_is_handled_like_ctrl_c(tmp_path: Path):
    import signal
    import subprocess
    import time

    from tests.conftest import uniedit_cmd

    out = tmp_path / "run"
    args = ("synth", "--limit", "60", "--shard-size", "5", "--workers", "1", "--concurrency", "2", "--no-progress",
            "--out", str(out), "--set", "backends.text.options.latency_s=0.05")
    proc = subprocess.Popen(uniedit_cmd(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline and not (manifest.exists() and manifest.stat().st_size):
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()  # still running, with a shard finished
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert "interrupted: finished shards are saved" in stderr
    assert "Traceback" not in stderr and "SIGTERM received" not in stderr, stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    again = run_cli(*args, timeout=300)
    assert again.returncode == 0 and "already done" in again.stdout, again.stderr[-2000:]


def test_a_typo_in_source_does_not_lock_the_output_to_the_wrong_config(tmp_path: Path):
    source = vqa_file(tmp_path, [{"id": "r", "image": "good.png", "question": "What color?", "answer": "red"}])
    out = tmp_path / "run"
    typo = synth(tmp_path / "vqa.jsnol", out)
    one_line_error(typo, "source not found", "accepted --source forms")
    right = synth(source, out)
    assert right.returncode == 0 and "1 records" in right.stdout, right.stderr[-2000:]
