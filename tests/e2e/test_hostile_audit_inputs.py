"""What `uniedit audit --against` and `source.decontaminate` are given is input too (issue 30, item 8): a FIFO
is refused, not waited on; benchmark images are decoded under `input.max_pixels`; and an audit of a run that is
still being written says so."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import run_cli

pytestmark = pytest.mark.e2e


def one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("audit:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("audit-inputs") / "run"
    proc = run_cli("synth", "--out", str(run), "--limit", "4", "--shard-size", "2", "--engine", "inline",
                   "--no-progress", timeout=120)
    assert proc.returncode == 0, proc.stderr
    return run


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def large_png(side: int) -> bytes:
    """A valid side x side RGB PNG, black, written row by row (small on disk, side² pixels decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    packer = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * side)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name", ["bench.jsonl", "bench"])
def test_a_fifo_against_is_refused_not_waited_on(finished: Path, tmp_path: Path, name: str):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    one_line_error(run_cli("audit", str(finished), "-q", "--against", str(fifo), timeout=60), "not a regular file")


def test_a_fifo_named_by_a_benchmark_table_is_skipped_not_waited_on(finished: Path, tmp_path: Path):
    os.mkfifo(tmp_path / "image.png")
    (tmp_path / "ok.png").write_bytes(png((32, 32)))
    (tmp_path / "bench.jsonl").write_text(json.dumps({"image": "image.png", "instruction": "paint it"}) + "\n"
                                          + json.dumps({"image": "ok.png", "instruction": "make it blue"}) + "\n")
    proc = run_cli("audit", str(finished), "--json", "-q", "--no-cache", "--against", str(tmp_path / "bench.jsonl"),
                   timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (bench,) = json.loads(proc.stdout)["input"]["against"]
    assert bench["skipped_images"] == 1 and bench["items"] == 2
    assert "not a regular file" in proc.stderr


def test_a_fifo_in_source_decontaminate_is_refused_before_the_run(tmp_path: Path):
    fifo = tmp_path / "bench.jsonl"
    os.mkfifo(fifo)
    proc = run_cli("synth", "--out", str(tmp_path / "run"), "--limit", "2", "--engine", "inline", "--no-progress",
                   "--set", f"source.decontaminate=[{fifo}]", timeout=60)
    one_line_error(proc, "not a regular file")
    assert not (tmp_path / "run" / "manifest.jsonl").exists()


def test_benchmark_images_are_decoded_under_the_runs_max_pixels(tmp_path: Path):
    run = tmp_path / "run"
    made = run_cli("synth", "--out", str(run), "--limit", "2", "--engine", "inline", "--no-progress",
                   "--set", "input.max_pixels=400000", timeout=120)  # the scenes are 512x512 at most
    assert made.returncode == 0, made.stderr[-2000:]
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "small.png").write_bytes(png((64, 64)))
    (bench / "large.png").write_bytes(large_png(700))  # 490,000 pixels: over this run's bound
    proc = run_cli("audit", str(run), "--json", "-q", "--against", str(bench), timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (entry,) = json.loads(proc.stdout)["input"]["against"]
    assert entry["skipped_images"] == 1 and entry["items"] == 1
    assert "large.png" in proc.stderr and "max_pixels" in proc.stderr


def test_the_same_bound_holds_for_source_decontaminate(tmp_path: Path):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "small.png").write_bytes(png((64, 64)))
    (bench / "large.png").write_bytes(large_png(700))
    proc = run_cli("synth", "--out", str(tmp_path / "run"), "--limit", "2", "--engine", "inline", "--no-progress",
                   "--set", "input.max_pixels=400000", "--set", f"source.decontaminate=[{bench}]", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "large.png" in proc.stderr and "over input.max_pixels" in proc.stderr, proc.stderr[-2000:]
    assert "small.png" not in proc.stderr


def write_lock(run: Path, pid: int) -> None:
    (run / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "start": None,
                                           "since": "2026-01-01T00:00:00"}))


def mark_running(run: Path) -> None:
    info = json.loads((run / "run.json").read_text())
    info["status"] = "running"
    (run / "run.json").write_text(json.dumps(info))


def test_an_audit_of_a_run_being_written_says_so(finished: Path, tmp_path: Path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    mark_running(run)
    write_lock(run, os.getpid())  # a live process holds it: a synth writing this run now
    text = run_cli("audit", str(run), "-q", timeout=60)
    assert text.returncode == 0, text.stderr[-2000:]
    assert "still being written" in text.stdout.splitlines()[0], text.stdout
    as_json = json.loads(run_cli("audit", str(run), "-q", "--json", timeout=60).stdout)
    assert as_json["input"]["in_progress"] is True and as_json["input"]["run_status"] == "running"
    assert (run / ".lock").exists()  # an audit only reads


def test_an_audit_of_a_run_that_stopped_unfinished_says_so(finished: Path, tmp_path: Path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    mark_running(run)
    write_lock(run, 4_000_000)  # its process is gone: killed mid-run
    text = run_cli("audit", str(run), "-q", timeout=60)
    assert text.returncode == 0, text.stderr[-2000:]
    assert "did not finish" in text.stdout.splitlines()[0], text.stdout
    assert (run / ".lock").exists()  # the audit never takes over or deletes a lock


def test_an_audit_of_a_finished_run_has_no_such_note(finished: Path):
    proc = run_cli("audit", str(finished), "-q", "--json", timeout=60)
    info = json.loads(proc.stdout)["input"]
    assert info["in_progress"] is False and info["run_status"] == "finished" and info.get("note") is None
