"""A catalogue of hostile inputs and operator faults, run through the `uniedit` command line as a user would.

Each case ends in one of three acceptable outcome classes:
  reject        the record leaves as a reject with a reason (the run goes on and finishes)
  clean error   the command stops with one line (`error: ...` or click's usage message) and exit code 2
  handled       the command does the right thing (resumes, warns, escapes, cleans up) and says so
and never in a failure class: TRACEBACK, HANG (every command runs under a time limit), SILENT (a wrong
input silently converted or accepted), UNEXPECTED (anything else, e.g. the wrong reason).

    python benchmarks/hostile_inputs.py            # all cases: 2-6 minutes on a shared 2-core VM
    python benchmarks/hostile_inputs.py -k yaml    # the cases whose name contains "yaml"

Exit status 1 when any case ends in a failure class.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from tests.fakes import FakeOpenAI  # noqa: E402

ACCEPTABLE = ("reject", "clean error", "handled")
TIME_LIMIT_S = 120.0


@dataclass
class Outcome:
    kind: str  # reject | clean error | handled | TRACEBACK | HANG | SILENT | UNEXPECTED
    detail: str


@dataclass
class Result:
    rc: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def hung(self) -> bool:
        return self.rc is None


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = TIME_LIMIT_S) -> Result:
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "uniedit_synth.cli", *args], capture_output=True, text=True,
                              cwd=cwd or REPO, env={**os.environ, **(env or {})}, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return Result(None, str(exc.stdout or ""), str(exc.stderr or ""), time.monotonic() - started)
    return Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def failure(result: Result) -> Outcome | None:
    if result.hung:
        return Outcome("HANG", f"no answer within {TIME_LIMIT_S:.0f} s")
    if "Traceback" in result.stderr:
        return Outcome("TRACEBACK", result.stderr.strip().splitlines()[-1][:200])
    return None


def clean_error(result: Result, needle: str) -> Outcome:
    """A one-line `error:` (or click usage message), exit 2, containing `needle`."""
    bad = failure(result)
    if bad:
        return bad
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    usage = [line for line in lines if line.startswith("Error: ")]
    message = usage[0] if usage and lines[0].startswith("Usage:") else (lines[0] if len(lines) == 1 else "")
    if result.rc == 2 and message and needle.lower() in message.lower():
        return Outcome("clean error", message)
    return Outcome("UNEXPECTED", f"exit {result.rc}: {' | '.join(lines)[:200] or result.stdout[-200:]}")


# -- inputs ------------------------------------------------------------------------------------------------
def png(size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(side: int = 100_000) -> bytes:
    """A valid PNG header declaring side x side pixels (10 Gpx), with one tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


class DripHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(100_000):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(0.5)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


QUESTION = "What color is the box?"

#: record cases: (case, the row, or raw bytes for a line, expected reason, a piece of the reject detail)
def record_cases(drip_url: str) -> list[tuple[str, dict | bytes, str, str]]:
    base = {"image": "good.png", "question": QUESTION, "answer": "red"}
    return [
        ("nul byte in image path", {**base, "id": "nul", "image": "good\u0000.png"}, "invalid_input", "NUL byte"),
        ("image path escapes the root", {**base, "id": "escape", "image": "../../../etc/passwd"},
         "invalid_input", "escapes the image root"),
        ("absolute path outside the root", {**base, "id": "absolute", "image": "/etc/hostname"},
         "invalid_input", "escapes the image root"),
        ("symlink out of the root", {**base, "id": "symlink", "image": "link.png"}, "invalid_input",
         "escapes the image root"),
        ("missing image file", {**base, "id": "missing", "image": "nope.png"}, "invalid_input", "not found"),
        ("empty image file", {**base, "id": "empty", "image": "empty.png"}, "invalid_input", "0 bytes"),
        ("text file as image", {**base, "id": "text", "image": "text.png"}, "invalid_input", "not an image"),
        ("truncated png", {**base, "id": "truncated", "image": "truncated.png"}, "invalid_input", "truncated"),
        ("decompression bomb header", {**base, "id": "bomb", "image": "bomb.png"}, "invalid_input", "pixels"),
        ("image path is a directory", {**base, "id": "dir", "image": "subdir"}, "invalid_input", "not a file"),
        ("question given as a list", {**base, "id": "q-list", "question": [QUESTION, "How many?"]},
         "invalid_input", "question is a list"),
        ("question given as an object", {**base, "id": "q-dict", "question": {"en": QUESTION}},
         "invalid_input", "question is an object"),
        ("answer given as a boolean", {**base, "id": "a-bool", "answer": True}, "invalid_input",
         "answer is a boolean"),
        ("answer NaN", {**base, "id": "a-nan", "answer": float("nan")}, "invalid_input", "not a finite number"),
        ("answer list in a plain answer column", {**base, "id": "a-list", "answer": ["red", "blue"]},
         "invalid_input", "answer is a list"),
        ("empty question", {**base, "id": "q-empty", "question": "   "}, "invalid_input", "empty question"),
        ("question of 20k characters", {**base, "id": "q-long", "question": "Why? " * 4000}, "invalid_input",
         "too long"),
        ("non-UTF-8 bytes in the question",
         b'{"id": "q-latin1", "image": "good.png", "question": "caf\xe9?", "answer": "red"}', "invalid_input",
         "UTF-8"),
        ("malformed JSON line", b'{"id": "broken", "image": "good.png", "question": ', "invalid_input", "JSON"),
        ("row that is not an object", b"42", "invalid_input", "not an object"),
        ("remote image host refuses connections", {**base, "id": "remote", "image": "http://127.0.0.1:9/x.png"},
         "invalid_input", "fetch failed"),
        ("data: URL", {**base, "id": "data-url", "image": "data:image/png;base64,AAAA"}, "invalid_input",
         "unsupported image URL scheme"),
        ("duplicate id", {**base, "id": "ok"}, "duplicate_id", "same id"),
        ("remote image dripping 2 bytes/s", {**base, "id": "drip", "image": drip_url}, "invalid_input",
         "longer than"),
    ]


def write_source(root: Path, drip_url: str) -> tuple[Path, list[tuple[str, dict | bytes, str, str]]]:
    (root / "good.png").write_bytes(png())
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_bytes(b"this is not an image")
    (root / "truncated.png").write_bytes(png((256, 256))[:200])
    (root / "bomb.png").write_bytes(bomb_png())
    (root / "subdir").mkdir()
    secret = root.parent / "secret.png"
    secret.write_bytes(png())
    os.symlink(secret, root / "link.png")
    cases = record_cases(drip_url)
    first = b'{"id": "first-row-without-columns"}'
    lines = [first, json.dumps({"id": "ok", "image": "good.png", "question": QUESTION, "answer": "red"}).encode()]
    for _, row, _, _ in cases:
        lines.append(row if isinstance(row, bytes) else json.dumps(row).encode())
    path = root / "vqa.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, cases


def run_record_cases(tmp: Path, drip_url: str) -> list[tuple[str, Outcome]]:
    root = tmp / "data"
    root.mkdir()
    source, cases = write_source(root, drip_url)
    out = tmp / "records-run"
    result = cli("synth", "--source", str(source), "--out", str(out), "--engine", "inline", "--no-progress",
                 "--set", "stages.classify.drop_categories=[]", "--set", "input.allow_remote_images=true",
                 "--set", "input.remote_timeout_s=2", "--set", "input.max_text_chars=4000")
    names = [name for name, *_ in cases] + ["bad first row is one reject"]
    bad = failure(result)
    if bad or result.rc != 0:
        outcome = bad or Outcome("UNEXPECTED", f"synth exit {result.rc}: {result.stderr.strip()[-200:]}")
        return [(name, outcome) for name in names]
    import pyarrow.parquet as pq

    rows = {}
    for kind in ("data", "rejects"):
        for path in sorted((out / kind).glob("shard-*.parquet")):
            for row in pq.read_table(path, columns=["id", "accepted", "reject_reason", "reject_detail"]).to_pylist():
                rows[row["id"]] = row
    by_id = {row_id.split("/", 1)[1]: row for row_id, row in rows.items()}
    unnamed = [row for row_id, row in by_id.items() if row_id.startswith(("row-",)) or len(row_id) == 16]
    outcomes = []
    for name, row, reason, needle in [*cases, ("bad first row is one reject",
                                              {"id": "first-row-without-columns"}, "invalid_input", "no question column")]:
        if isinstance(row, bytes):
            try:
                row_id = json.loads(row.decode("utf-8", "surrogateescape")).get("id")
            except (ValueError, AttributeError):
                row_id = None
        else:
            row_id = row["id"]
        if reason == "duplicate_id":
            found = next((r for k, r in by_id.items() if k.startswith("ok~dup")), None)
        elif row_id is not None and row_id in by_id:
            found = by_id[row_id]
        else:
            found = next((r for r in [*unnamed, *by_id.values()]
                          if r["reject_detail"] and needle.lower() in r["reject_detail"].lower()), None)
        if found is None:
            outcomes.append((name, Outcome("UNEXPECTED", "the record left no row")))
        elif found["accepted"]:
            outcomes.append((name, Outcome("SILENT", "accepted")))
        elif found["reject_reason"] == reason and needle.lower() in (found["reject_detail"] or "").lower():
            outcomes.append((name, Outcome("reject", f"{reason}: {found['reject_detail']}")))
        else:
            outcomes.append((name, Outcome("UNEXPECTED", f"{found['reject_reason']}: {found['reject_detail']}")))
    return outcomes


# -- operator faults -----------------------------------------------------------------------------------------
def base_run(tmp: Path) -> Path:
    out = tmp / "base-run"
    result = cli("synth", "--engine", "inline", "--limit", "4", "--shard-size", "2", "--no-progress", "--out",
                 str(out))
    if result.rc != 0:
        raise SystemExit(f"the base run failed: {result.stderr[-500:]}")
    return out


def copy(run: Path, tmp: Path, name: str) -> Path:
    target = tmp / name
    shutil.copytree(run, target)
    return target


def synth_on(out: Path, *extra: str) -> Result:
    return cli("synth", "--engine", "inline", "--limit", "4", "--shard-size", "2", "--no-progress", "--out",
               str(out), *extra)


def alias_bomb(tmp: Path) -> Path:
    lines = ['    l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"    l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    text = (REPO / "pipelines" / "default.yaml").read_text().replace(
        "  judge:\n    backend: text\n", "  judge:\n    backend: text\n    params:\n"
        + "\n".join("  " + line for line in lines) + "\n")
    path = tmp / "bomb.yaml"
    path.write_text(text)
    return path


def pipeline_variant(tmp: Path, name: str, old: str, new: str) -> Path:
    path = tmp / name
    path.write_text((REPO / "pipelines" / "default.yaml").read_text().replace(old, new, 1))
    return path


def operator_cases(tmp: Path, run: Path) -> list[tuple[str, Callable[[], Outcome]]]:
    cases: list[tuple[str, Callable[[], Outcome]]] = []

    def case(name: str):
        def register(fn: Callable[[], Outcome]) -> Callable[[], Outcome]:
            cases.append((name, fn))
            return fn
        return register

    @case("unknown CLI flag")
    def _() -> Outcome:
        return clean_error(cli("synth", "--bogus-flag", "--out", str(tmp / "never")), "No such option")

    @case("negative --limit")
    def _() -> Outcome:
        return clean_error(cli("synth", "--limit", "-1", "--out", str(tmp / "never")), "--limit")

    @case("--shard-size 0")
    def _() -> Outcome:
        return clean_error(cli("synth", "--shard-size", "0", "--out", str(tmp / "never")), "--shard-size")

    @case("unknown command")
    def _() -> Outcome:
        return clean_error(cli("nosuchcommand"), "No such command")

    @case("YAML alias bomb in the pipeline")
    def _() -> Outcome:
        return clean_error(cli("synth", "--pipeline", str(alias_bomb(tmp)), "--out", str(tmp / "bomb-run")),
                           "aliases expand")

    @case("YAML alias bomb in a --set value")
    def _() -> Outcome:
        value = "{a: &a [x,x,x,x,x,x,x,x,x], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], " \
                "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], " \
                "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], f: [*e,*e,*e,*e,*e,*e,*e,*e,*e]}"
        return clean_error(cli("synth", "--set", f"stages.judge.params={value}", "--out", str(tmp / "never")),
                           "aliases expand")

    @case("non-UTF-8 pipeline file")
    def _() -> Outcome:
        path = tmp / "latin1.yaml"
        path.write_bytes((REPO / "pipelines" / "default.yaml").read_bytes() + "# café\n".encode("latin-1"))
        return clean_error(cli("synth", "--pipeline", str(path), "--out", str(tmp / "never")), "not UTF-8")

    @case("pipeline that is not YAML")
    def _() -> Outcome:
        return clean_error(cli("synth", "--pipeline", str(pipeline_variant(tmp, "bad.yaml", "seed:", "seed: [")),
                               "--out", str(tmp / "bad-run")), "not valid YAML")

    @case("unknown pipeline key")
    def _() -> Outcome:
        return clean_error(cli("synth", "--set", "stages.judge.bogus=1", "--out", str(tmp / "never")), "unknown key")

    @case("unknown backend type")
    def _() -> Outcome:
        return clean_error(cli("synth", "--set", "backends.text.type=nope", "--out", str(tmp / "nope-run"),
                               "--engine", "inline"), "unknown type")

    @case("missing API key")
    def _() -> Outcome:
        env = {k: "" for k in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")}
        return clean_error(cli("synth", "--pipeline", "openai", "--out", str(tmp / "nokey-run"), env=env), "API key")

    @case("source not found")
    def _() -> Outcome:
        return clean_error(cli("synth", "--source", str(tmp / "nothing.jsonl"), "--out", str(tmp / "typo-run")),
                           "not found")

    @case("FIFO as source")
    def _() -> Outcome:
        fifo = tmp / "fifo.jsonl"
        os.mkfifo(fifo)
        return clean_error(cli("synth", "--source", str(fifo), "--out", str(tmp / "fifo-run")), "not a regular file")

    @case("source without question/answer columns")
    def _() -> Outcome:
        path = tmp / "nocols.jsonl"
        path.write_text('{"id": 1, "ask": "?"}\n{"id": 2, "ask": "?"}\n')
        return clean_error(cli("synth", "--source", str(path), "--out", str(tmp / "nocols-run")), "no column found")

    @case("--out is a file")
    def _() -> Outcome:
        path = tmp / "a-file"
        path.write_text("x")
        return clean_error(cli("synth", "--out", str(path), "--engine", "inline"), "not writable")

    @case("--out not writable")
    def _() -> Outcome:
        return clean_error(cli("synth", "--out", "/proc/uniedit-run", "--engine", "inline"), "not writable")

    @case("changed config on an existing run")
    def _() -> Outcome:
        return clean_error(synth_on(copy(run, tmp, "changed"), "--set", "stages.judge.thresholds.coherence=2"),
                           "different pipeline config")

    @case("corrupt run.json and a changed config")
    def _() -> Outcome:
        out = copy(run, tmp, "corrupt-run-json")
        (out / "run.json").write_text("garbage{")
        return clean_error(synth_on(out, "--set", "stages.judge.thresholds.coherence=2"), "unknown")

    @case("run.json of the wrong shape")
    def _() -> Outcome:
        out = copy(run, tmp, "shape-run-json")
        (out / "run.json").write_text('{"pipeline_hash": 5, "config": 3}')
        return clean_error(synth_on(out), "not a uniedit run.json")

    @case("output locked by a live run")
    def _() -> Outcome:
        out = copy(run, tmp, "locked")
        (out / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "start": None}))
        return clean_error(synth_on(out), "in use by another run")

    @case("truncated shard: report")
    def _() -> Outcome:
        out = copy(run, tmp, "truncated-report")
        shard = out / "data" / "shard-00001.parquet"
        shard.write_bytes(shard.read_bytes()[:300])
        return clean_error(cli("report", str(out), "-q"), "truncated or corrupt")

    @case("truncated shard: inspect")
    def _() -> Outcome:
        out = copy(run, tmp, "truncated-inspect")
        shard = out / "data" / "shard-00001.parquet"
        shard.write_bytes(shard.read_bytes()[:300])
        return clean_error(cli("inspect", str(out), "--id", "nope"), "truncated or corrupt")

    @case("truncated shard: export")
    def _() -> Outcome:
        out = copy(run, tmp, "truncated-export")
        shard = out / "data" / "shard-00001.parquet"
        shard.write_bytes(shard.read_bytes()[:300])
        return clean_error(cli("export", str(out), "--format", "hf", "--out", str(tmp / "tr-hf")),
                           "truncated or corrupt")

    @case("export into a non-empty folder")
    def _() -> Outcome:
        target = tmp / "full"
        target.mkdir()
        (target / "keep.txt").write_text("mine")
        return clean_error(cli("export", str(run), "--format", "hf", "--out", str(target)), "not empty")

    @case("export of a folder that is not a run")
    def _() -> Outcome:
        return clean_error(cli("export", str(tmp), "--format", "hf", "--out", str(tmp / "x-hf")), "no finished shards")

    @case("inspect an unknown id")
    def _() -> Outcome:
        return clean_error(cli("inspect", str(run), "--id", "no-such-id"), "no sample with id")

    @case("provider unreachable (port closed)")
    def _() -> Outcome:
        return clean_error(cli("synth", "--pipeline", "openai", "--limit", "2", "--engine", "inline", "--no-progress",
                               "--out", str(tmp / "unreachable-run"),
                               "--set", "backends.gpt4o.base_url=http://127.0.0.1:9/v1",
                               "--set", "backends.gpt-image.base_url=http://127.0.0.1:9/v1",
                               "--set", "retry.initial_s=0.01", "--set", "retry.max_s=0.05",
                               "--set", "limits.rate_limits={}", env={"OPENAI_API_KEY": "sk-unreachable-test"}),
                           "unreachable")

    @case("provider rejects the key (401)")
    def _() -> Outcome:
        with FakeOpenAI(api_key="sk-the-right-key-123") as fake:
            return clean_error(cli("synth", "--pipeline", "openai", "--limit", "2", "--engine", "inline",
                                   "--no-progress", "--out", str(tmp / "401-run"),
                                   "--set", f"backends.gpt4o.base_url={fake.base_url}",
                                   "--set", f"backends.gpt-image.base_url={fake.base_url}",
                                   "--set", "limits.rate_limits={}", env={"OPENAI_API_KEY": "sk-a-wrong-key-456"}),
                               "API key")

    @case("remote URL while remote images are off")
    def _() -> Outcome:
        data = tmp / "remote-off"
        data.mkdir()
        (data / "vqa.jsonl").write_text(json.dumps({"id": "r", "image": "http://127.0.0.1:9/x.png",
                                                    "question": QUESTION, "answer": "red"}) + "\n")
        out = tmp / "remote-off-run"
        result = cli("synth", "--source", str(data / "vqa.jsonl"), "--out", str(out), "--engine", "inline",
                     "--no-progress")
        bad = failure(result)
        if bad or result.rc != 0:
            return bad or Outcome("UNEXPECTED", result.stderr.strip()[-160:])
        import pyarrow.parquet as pq

        rows = [row for path in (out / "rejects").glob("shard-*.parquet") for row in pq.read_table(path).to_pylist()]
        ok = len(rows) == 1 and "remote image URL refused" in (rows[0]["reject_detail"] or "")
        return Outcome("reject" if ok else "UNEXPECTED", f"invalid_input: {rows[0]['reject_detail'] if rows else ''}")

    # -- handled ---------------------------------------------------------------------------------------------
    @case("manifest line of the wrong shape")
    def _() -> Outcome:
        out = copy(run, tmp, "manifest-shape")
        lines = (out / "manifest.jsonl").read_bytes().splitlines(keepends=True)
        (out / "manifest.jsonl").write_bytes(lines[0] + b'{"shard": 0, "records": 2}\n' + b"".join(lines[1:]))
        result = cli("stats", str(out))
        bad = failure(result)
        if bad:
            return bad
        ok = result.rc == 0 and "line 2 is not a shard result" in result.stderr and "records: 4" in result.stdout
        return Outcome("handled" if ok else "UNEXPECTED", result.stderr.strip().splitlines()[0][:160])

    @case("truncated shard: stats warns")
    def _() -> Outcome:
        out = copy(run, tmp, "truncated-stats")
        shard = out / "data" / "shard-00001.parquet"
        shard.write_bytes(shard.read_bytes()[:300])
        result = cli("stats", str(out))
        ok = result.rc == 0 and "missing or truncated" in result.stderr
        return failure(result) or Outcome("handled" if ok else "UNEXPECTED", result.stderr.strip()[:160])

    @case("torn last manifest line")
    def _() -> Outcome:
        out = copy(run, tmp, "torn")
        with open(out / "manifest.jsonl", "a") as fh:
            fh.write('{"shard": 2, "rec')
        result = synth_on(out)
        ok = result.rc == 0 and "torn line" in result.stderr and "2 already done" in result.stdout
        return failure(result) or Outcome("handled" if ok else "UNEXPECTED", "cut off, finished shards kept")

    @case("stale lock of a dead process")
    def _() -> Outcome:
        out = copy(run, tmp, "stale")
        (out / ".lock").write_text(json.dumps({"pid": 4_000_000, "host": socket.gethostname(), "start": "1"}))
        result = synth_on(out)
        ok = result.rc == 0 and "stale lock" in result.stderr
        return failure(result) or Outcome("handled" if ok else "UNEXPECTED", "lock taken over, run resumed")

    @case("pipeline name ../../x as the default output")
    def _() -> Outcome:
        work = tmp / "w1" / "w2"
        work.mkdir(parents=True)
        result = cli("synth", "--engine", "inline", "--limit", "1", "--no-progress", "--set", "name=../../x",
                     cwd=work)
        inside = [p.name for p in (work / "runs").iterdir()] if (work / "runs").exists() else []
        ok = result.rc == 0 and not (tmp / "x").exists() and inside == ["x"]
        return failure(result) or Outcome("handled" if ok else "UNEXPECTED", f"written to runs/{inside}")

    @case("staging folder of a killed export")
    def _() -> Outcome:
        dead = tmp / ".leftover-hf.partial-4000000"
        dead.mkdir()
        result = cli("export", str(run), "--format", "hf", "--out", str(tmp / "leftover-hf"), "-q")
        ok = result.rc == 0 and not dead.exists()
        return failure(result) or Outcome("handled" if ok else "UNEXPECTED", "removed by the next export")

    @case("ANSI/OSC escapes in a sample id")
    def _() -> Outcome:
        data = tmp / "ansi"
        data.mkdir()
        (data / "good.png").write_bytes(png())
        evil = "x\x1b]0;pwned\x07\x1b[31mred"
        (data / "vqa.jsonl").write_text(json.dumps({"id": evil, "image": "good.png", "question": QUESTION,
                                                    "answer": "red"}) + "\n")
        out = tmp / "ansi-run"
        made = cli("synth", "--source", str(data / "vqa.jsonl"), "--out", str(out), "--engine", "inline",
                   "--no-progress")
        result = cli("inspect", str(out), "--id", f"vqa/{evil}")
        text = result.stdout + result.stderr + made.stdout + made.stderr
        ok = result.rc == 0 and "\x1b" not in text and "\\x1b" in result.stdout
        return failure(result) or Outcome("handled" if ok else "UNEXPECTED", "escaped as \\x1b in the terminal")

    @case("a key echoed into a log record")
    def _() -> Outcome:
        key = "sk-echoed-canary-5f1e2d3c4b"
        script = ("import logging\nfrom uniedit_synth.cli import _setup_logging\n_setup_logging(2, False)\n"
                  f"logging.getLogger('httpcore2.http11').warning('headers %r', [(b'x-echo', b'{key}')])\n")
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, "UE_BENCH_API_KEY": key}, timeout=60)
        ok = proc.returncode == 0 and key not in proc.stderr and "***" in proc.stderr
        return Outcome("handled" if ok else "UNEXPECTED", "redacted as ***")

    @case("a typo in --source, then the right source")
    def _() -> Outcome:
        data = tmp / "typo"
        data.mkdir()
        (data / "good.png").write_bytes(png())
        (data / "vqa.jsonl").write_text(json.dumps({"id": "r", "image": "good.png", "question": QUESTION,
                                                    "answer": "red"}) + "\n")
        out = tmp / "typo-then-right"
        typo = cli("synth", "--source", str(data / "vqa.jsnol"), "--out", str(out), "--engine", "inline")
        right = cli("synth", "--source", str(data / "vqa.jsonl"), "--out", str(out), "--engine", "inline",
                    "--no-progress")
        ok = typo.rc == 2 and right.rc == 0 and "1 records" in right.stdout
        return failure(typo) or failure(right) or Outcome("handled" if ok else "UNEXPECTED",
                                                          (right.stdout or right.stderr).strip()[:120])

    @case("explicit --source with the default pipeline's limit: 300")
    def _() -> Outcome:
        data = tmp / "many"
        data.mkdir()
        (data / "good.png").write_bytes(png())
        pipeline = pipeline_variant(tmp, "limit2.yaml", "limit: 300", "limit: 2")
        rows = [json.dumps({"id": f"r{i}", "image": "good.png", "question": f"What color is box {i}?",
                            "answer": "red"}) for i in range(5)]
        (data / "vqa.jsonl").write_text("\n".join(rows) + "\n")
        result = cli("synth", "--pipeline", str(pipeline), "--source", str(data / "vqa.jsonl"), "--out",
                     str(tmp / "many-run"), "--engine", "inline", "--no-progress")
        ok = result.rc == 0 and "5 records" in result.stdout
        return failure(result) or Outcome("handled" if ok else "SILENT", result.stdout.splitlines()[0][:120])

    @case("SIGTERM mid-run, then a rerun")
    def _() -> Outcome:
        out = tmp / "term-run"
        args = [sys.executable, "-m", "uniedit_synth.cli", "synth", "--engine", "inline", "--limit", "40",
                "--shard-size", "4", "--no-progress", "--out", str(out), "--set", "backends.text.options.latency_s=0.05"]
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + TIME_LIMIT_S
        manifest = out / "manifest.jsonl"
        while proc.poll() is None and time.monotonic() < deadline and not (
                manifest.exists() and manifest.stat().st_size):
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=TIME_LIMIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            return Outcome("HANG", "no exit after SIGTERM")
        if "Traceback" in stderr:
            return Outcome("TRACEBACK", stderr.strip().splitlines()[-1][:200])
        again = cli("synth", *args[4:])
        ok = proc.returncode == 143 and "interrupted" in stderr and again.rc == 0 and "already done" in again.stdout
        return Outcome("handled" if ok else "UNEXPECTED", f"exit {proc.returncode}, rerun resumed")

    return cases


# -- issue 30 items 6-9: plugins, numbers, audit inputs, smaller surfaces (robust-b) ----------------------------
PLUGIN_EDITOR = "tests.fakes.hostile_plugins:HostileEditor"
PLUGIN_TEXT = "tests.fakes.hostile_plugins:HostileText"


def with_repo_path() -> dict[str, str]:
    """PYTHONPATH with the checkout first, so Ray workers import tests.fakes' plugins too."""
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}


def run_rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for kind in ("data", "rejects") for path in sorted((out / kind).glob("shard-*.parquet"))
            for row in pq.read_table(path, columns=["id", "accepted", "reject_reason", "reject_detail"]).to_pylist()]


def rejects_with(result: Result, out: Path, reason: str, needle: str) -> Outcome:
    """The run finished (exit 0) and the records that met the fault left as `reason` rejects naming it."""
    bad = failure(result)
    if bad or result.rc != 0:
        return bad or Outcome("UNEXPECTED", f"exit {result.rc}: {result.stderr.strip()[-160:]}")
    rows = run_rows(out)
    hit = [r for r in rows if r["reject_reason"] == reason and needle in (r["reject_detail"] or "")]
    if not hit:
        return Outcome("UNEXPECTED", f"no {reason} reject naming {needle!r} among {len(rows)} rows")
    return Outcome("reject", f"{len(hit)} of {len(rows)} {reason}: {hit[0]['reject_detail']}")


def large_png(side: int) -> bytes:
    """A valid side x side RGB PNG written row by row: small on disk, side^2 pixels once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    packer = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * side)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def python_script(code: str, timeout: float = TIME_LIMIT_S) -> Result:
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, **with_repo_path()}, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return Result(None, str(exc.stdout or ""), str(exc.stderr or ""), time.monotonic() - started)
    return Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def surface_cases(tmp: Path, run: Path) -> list[tuple[str, Callable[[], Outcome]]]:
    """Issue 30, items 6-9: what a plugin raises or returns, out-of-range numbers, audit and decontamination
    inputs, and the smaller surfaces (deep --set keys, large YAML, JSON stdout, quoting, bidi, the Python API)."""
    cases: list[tuple[str, Callable[[], Outcome]]] = []

    def case(name: str):
        def register(fn: Callable[[], Outcome]) -> Callable[[], Outcome]:
            cases.append((name, fn))
            return fn
        return register

    def plugin_run(name: str, *settings: str, engine: str = "inline") -> tuple[Result, Path]:
        out = tmp / f"plugin-{name}"
        args = [arg for setting in settings for arg in ("--set", setting)]
        return cli("synth", "--engine", engine, "--limit", "4", "--shard-size", "2", "--workers", "1",
                   "--no-progress", "--out", str(out), *args, env=with_repo_path()), out

    # -- item 6: plugins -------------------------------------------------------------------------------------
    @case("plugin edit() raises")
    def _() -> Outcome:
        result, out = plugin_run("raise", f"backends.editor.type={PLUGIN_EDITOR}", "backends.editor.options.fail=call")
        return rejects_with(result, out, "edit_failed", "ZeroDivisionError")

    @case("plugin edit() returns junk")
    def _() -> Outcome:
        result, out = plugin_run("junk", f"backends.editor.type={PLUGIN_EDITOR}", "backends.editor.options.fail=junk")
        return rejects_with(result, out, "edit_failed", "not an EditReply")

    @case("plugin complete() raises at the judge")
    def _() -> Outcome:
        result, out = plugin_run("judge", f"backends.text.type={PLUGIN_TEXT}", "backends.text.options.fail=call",
                                 "backends.text.options.tasks=[judge]")
        return rejects_with(result, out, "judge_failed", "ZeroDivisionError")

    @case("plugin constructor raises")
    def _() -> Outcome:
        result, _ = plugin_run("init", f"backends.editor.type={PLUGIN_EDITOR}", "backends.editor.options.fail=init")
        return clean_error(result, "constructor raised")

    @case("plugin start() raises")
    def _() -> Outcome:
        result, _ = plugin_run("start", f"backends.editor.type={PLUGIN_EDITOR}", "backends.editor.options.fail=start")
        return clean_error(result, "start() failed")

    @case("plugin start() raises under Ray")
    def _() -> Outcome:
        result, _ = plugin_run("start-ray", f"backends.editor.type={PLUGIN_EDITOR}",
                               "backends.editor.options.fail=start", engine="ray")
        return clean_error(result, "start() failed")

    @case("plugin type ':X'")
    def _() -> Outcome:
        return clean_error(synth_on(tmp / "never", "--set", 'backends.editor.type=":X"'), "package.module:ClassName")

    @case("plugin type 'mod:'")
    def _() -> Outcome:
        return clean_error(synth_on(tmp / "never", "--set", 'backends.editor.type="mod:"'), "package.module:ClassName")

    # -- item 7: numbers -------------------------------------------------------------------------------------
    for setting, needle in (("stages.judge.thresholds.coherence=.nan", "coherence"),
                            ("stages.judge.thresholds.coherence=7", "from 0 to 5"),
                            ("stages.judge.thresholds.coherence=-1", "from 0 to 5"),
                            ("stages.judge.thresholds.coherence=1e999", "coherence"),
                            ("input.max_side=0", "input.max_side"),
                            ("input.max_pixels=-1", "input.max_pixels"),
                            ("stages.judge.params.temperature=.nan", "not a finite number")):
        @case(f"--set {setting}")
        def _(setting: str = setting, needle: str = needle) -> Outcome:
            out = tmp / "never-numbers"
            outcome = clean_error(synth_on(out, "--set", setting), needle)
            return outcome if not out.exists() else Outcome("UNEXPECTED", "the output dir was written")

    @case("--max-cost 0 on a free pipeline")
    def _() -> Outcome:
        return clean_error(synth_on(tmp / "never-budget", "--max-cost", "0"), "no budget")

    @case("run.json is strict JSON (no NaN/Infinity)")
    def _() -> Outcome:
        def refuse(name: str) -> None:
            raise ValueError(f"{name} in run.json")
        try:
            json.loads((run / "run.json").read_text(), parse_constant=refuse)
        except ValueError as exc:
            return Outcome("SILENT", str(exc))
        return Outcome("handled", "parses with NaN/Infinity refused")

    # -- item 8: audit and decontamination inputs ------------------------------------------------------------
    @case("FIFO as audit --against")
    def _() -> Outcome:
        fifo = tmp / "against-fifo.jsonl"
        os.mkfifo(fifo)
        return clean_error(cli("audit", str(run), "-q", "--against", str(fifo)), "not a regular file")

    @case("FIFO in source.decontaminate")
    def _() -> Outcome:
        fifo = tmp / "decontaminate-fifo.jsonl"
        os.mkfifo(fifo)
        return clean_error(synth_on(tmp / "fifo-bench-run", "--set", f"source.decontaminate=[{fifo}]"),
                           "not a regular file")

    @case("benchmark PNG of 169 Mpx (0.5 MB) in --against")
    def _() -> Outcome:
        bench = tmp / "big-bench"
        bench.mkdir()
        (bench / "huge.png").write_bytes(large_png(13_000))
        code = ("import resource, subprocess, sys\n"
                f"p = subprocess.run([sys.executable, '-m', 'uniedit_synth.cli', 'audit', {str(run)!r}, '-q', "
                f"'--no-cache', '--json', '--against', {str(bench)!r}], capture_output=True, text=True)\n"
                "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr)\n"
                "print('PEAK_RSS_MB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, file=sys.stderr)\n"
                "sys.exit(p.returncode)\n")
        result = python_script(code)
        bad = failure(result)
        if bad or result.rc != 0:
            return bad or Outcome("UNEXPECTED", f"exit {result.rc}: {result.stderr.strip()[-160:]}")
        peak = next((line.split()[1] for line in result.stderr.splitlines() if line.startswith("PEAK_RSS_MB")), "?")
        skipped = json.loads(result.stdout)["input"]["against"][0]["skipped_images"]
        ok = skipped == 1 and "over input.max_pixels" in result.stderr
        return Outcome("handled" if ok else "UNEXPECTED", f"skipped undecoded (input.max_pixels); audit peak RSS {peak} MB")

    def audit_note(name: str, pid: int, needle: str) -> Outcome:
        out = copy(run, tmp, name)
        info = json.loads((out / "run.json").read_text())
        (out / "run.json").write_text(json.dumps({**info, "status": "running"}))
        (out / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "start": None}))
        result = cli("audit", str(out), "-q")
        first = (result.stdout.splitlines() or [""])[0]
        ok = result.rc == 0 and needle in first and (out / ".lock").exists()
        return failure(result) or Outcome("handled" if ok else "UNEXPECTED", first[:160])

    @case("audit of a run still being written")
    def _() -> Outcome:
        return audit_note("audit-live", os.getpid(), "still being written")

    @case("audit of a run killed mid-run")
    def _() -> Outcome:
        return audit_note("audit-dead", 4_000_000, "did not finish")

    # -- item 9: smaller ones --------------------------------------------------------------------------------
    @case("--set key 5,000 levels deep")
    def _() -> Outcome:
        return clean_error(synth_on(tmp / "never", "--set", ".".join(["a"] * 5000) + "=1"), "dotted levels")

    @case("10 MB YAML pipeline without aliases")
    def _() -> Outcome:
        path = tmp / "big.yaml"
        path.write_text((REPO / "pipelines" / "default.yaml").read_text() + "\nx_data:\n"
                        + "".join(f"  - {i}\n" for i in range(1_000_000)))
        outcome = clean_error(cli("synth", "--pipeline", str(path), "--out", str(tmp / "never")), "MB")
        return Outcome("UNEXPECTED", "called an alias bomb") if "alias" in outcome.detail else outcome

    @case("--log-format json under Ray, a worker printing to stdout")
    def _() -> Outcome:
        out = tmp / "json-ray"
        result = cli("synth", "--engine", "ray", "--workers", "1", "--limit", "2", "--no-progress", "--out", str(out),
                     "--log-format", "json", "--set", f"backends.editor.type={PLUGIN_EDITOR}",
                     "--set", "backends.editor.options.fail=print", env=with_repo_path())
        bad = failure(result)
        if bad or result.rc != 0:
            return bad or Outcome("UNEXPECTED", f"exit {result.rc}: {result.stderr.strip()[-160:]}")
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        try:
            events = [json.loads(line)["event"] for line in lines]
        except (ValueError, KeyError, TypeError):
            return Outcome("UNEXPECTED", f"a stdout line is not a JSON event: {lines[:3]}")
        ok = events[-1] == "done" and "a line on stdout" in result.stderr
        return Outcome("handled" if ok else "UNEXPECTED", f"{len(lines)} JSON lines on stdout; the worker's line on stderr")

    @case("--out ''")
    def _() -> Outcome:
        work = tmp / "empty-out"
        work.mkdir()
        outcome = clean_error(cli("synth", "--engine", "inline", "--limit", "1", "--out", "", cwd=work), "--out")
        return outcome if not (work / "runs").exists() else Outcome("SILENT", "wrote runs/")

    @case("next: commands with a space, quote and newline in --out")
    def _() -> Outcome:
        out = tmp / "my runs" / "it's $HOME\nx"
        result = synth_on(out)
        line = next((x for x in result.stdout.splitlines() if x.strip().startswith("next:")), "")
        command = line.split("next:", 1)[-1].split("  |  ")[0].strip()
        parsed = subprocess.run(["bash", "-c", "printf '%s\\0' " + command[len("uniedit "):]], capture_output=True)
        ok = result.rc == 0 and parsed.stdout.split(b"\0")[:2] == [b"stats", str(out).encode()]
        return failure(result) or Outcome("handled" if ok else "UNEXPECTED", command[:110])

    @case("right-to-left override in an id (inspect)")
    def _() -> Outcome:
        data = tmp / "bidi"
        data.mkdir()
        (data / "good.png").write_bytes(png())
        evil = "invoice\u202egnp.exe"
        (data / "vqa.jsonl").write_text(json.dumps({"id": evil, "image": "good.png", "question": QUESTION,
                                                    "answer": "red"}) + "\n")
        out = tmp / "bidi-run"
        cli("synth", "--source", str(data / "vqa.jsonl"), "--out", str(out), "--engine", "inline", "--no-progress")
        result = cli("inspect", str(out), "--id", f"vqa/{evil}")
        ok = result.rc == 0 and "\u202e" not in result.stdout + result.stderr and "\\u202e" in result.stdout
        return failure(result) or Outcome("handled" if ok else "UNEXPECTED", "shown as \\u202e")

    @case("Python API: wrong argument types")
    def _() -> Outcome:
        code = ("import sys\nfrom uniedit_synth import synth, load_pipeline, open_run, UniEditError\n"
                "calls = [lambda: synth(limit='3'), lambda: synth(overrides=[1]), lambda: synth(out=5),\n"
                "         lambda: load_pipeline('default', 3), lambda: open_run(5), lambda: synth(pipeline=None)]\n"
                "for call in calls:\n"
                "    try:\n        call()\n    except UniEditError as exc:\n        print(type(exc).__name__, exc)\n"
                "    else:\n        sys.exit('no error')\n")
        result = python_script(code)
        ok = result.rc == 0 and len(result.stdout.splitlines()) == 6
        return failure(result) or Outcome("handled" if ok else "UNEXPECTED",
                                          (result.stdout.splitlines() or [result.stderr[-120:]])[0][:120])

    @case("Python API: two Ray runs at once in one process")
    def _() -> Outcome:
        code = ("import threading\nfrom uniedit_synth import synth\nfrom uniedit_synth.core.errors import RuntimeBusy\n"
                "from uniedit_synth.engine import runtime\n"
                f"out = {str(tmp / 'api-ray')!r}\nresult = {{}}\n"
                "def first():\n    result['first'] = synth(out=out + '/a', limit=2, overrides={'engine': {'workers': 1},"
                " 'backends': {'text': {'options': {'latency_s': 0.2}}}})\n"
                "t = threading.Thread(target=first); t.start()\n"
                "while t.is_alive() and not runtime.ray_run_in_progress():\n    t.join(0.05)\n"
                "try:\n    synth(out=out + '/b', limit=2)\nexcept RuntimeBusy as exc:\n    print('refused:', exc)\n"
                "t.join()\nprint('first read', result['first'].read)\n")
        result = python_script(code, timeout=TIME_LIMIT_S * 2)
        ok = result.rc == 0 and "refused: another Ray run" in result.stdout and "first read 2" in result.stdout
        return failure(result) or Outcome("handled" if ok else "UNEXPECTED",
                                          (result.stdout.splitlines() or [result.stderr[-120:]])[0][:110])

    return cases


# -- data loss and double payment (issue 30, items 1-5) ------------------------------------------------------
# Nothing of the user's is deleted or overwritten (export --overwrite, synth --out over a source, an image root or
# a folder that is not a run), a batch job is never paid twice (a rerun without --batch, a job file damaged,
# renamed or gone while its job is in flight, a job the provider forgot), and a job file of the wrong shape is
# listed, not a crash.
BATCH_KEY = "sk-hostile-batch-0123456789"
FAST_BATCH = [arg for stage in ("classify", "rewrite", "edit", "judge")
              for arg in ("--set", f"stages.{stage}.batch.poll_s=0.02", "--set", f"stages.{stage}.batch.group_s=0.05")]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def openai_synth_args(fake: FakeOpenAI, out: Path, *extra: str) -> list[str]:
    return ["synth", "--pipeline", "openai", "--limit", "2", "--engine", "inline", "--no-progress",
            "--out", str(out), "--set", f"backends.gpt4o.base_url={fake.base_url}",
            "--set", f"backends.gpt-image.base_url={fake.base_url}", "--set", "limits.rate_limits={}",
            "--set", "retry.initial_s=0.01", "--set", "retry.max_s=0.05", *FAST_BATCH, *extra]


def killed_with_a_job_in_flight(fake: FakeOpenAI, out: Path) -> Path | None:
    """A `--batch` run SIGKILLed while its first job is held in flight at the fake; the job file's path."""
    fake.batch_script(["hold"])
    proc = subprocess.Popen([sys.executable, "-m", "uniedit_synth.cli", *openai_synth_args(fake, out, "--batch")],
                            cwd=REPO, env={**os.environ, "OPENAI_API_KEY": BATCH_KEY}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + TIME_LIMIT_S
    found = None
    try:
        while time.monotonic() < deadline and found is None:
            held = [job for job in fake.jobs.values() if job.outcome == "hold" and job.polls >= 2]
            files = sorted((out / "batches").glob("*.json")) if held else []
            found = next((f for f in files if json.loads(f.read_text()).get("job_id")), None)
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return found


def paid_twice(fake: FakeOpenAI) -> int:
    """Model requests billed more than once: those the fake answered (online or inside a job), plus the items of
    every job it still holds in flight (a provider finishes and bills those whether anyone polls them or not)."""
    billed = [r.body for r in fake.requests if r.task != "batch-api" and r.status == 200]
    billed += [item.get("body") for job in fake.jobs.values() if not job.done for item in job.items]
    bodies = Counter(json.dumps(body, sort_keys=True, default=repr) for body in billed)
    return sum(n - 1 for n in bodies.values() if n > 1)


def data_loss_cases(tmp: Path, run: Path) -> list[tuple[str, Callable[[], Outcome]]]:
    cases: list[tuple[str, Callable[[], Outcome]]] = []
    area = tmp / "data-loss"
    area.mkdir()

    def case(name: str):
        def register(fn: Callable[[], Outcome]) -> Callable[[], Outcome]:
            cases.append((name, fn))
            return fn
        return register

    def kept(result: Result, root: Path, before: dict[str, bytes], needle: str) -> Outcome:
        outcome = clean_error(result, needle)
        if outcome.kind == "clean error" and tree(root) != before:
            return Outcome("SILENT", f"refused, but files changed: {outcome.detail[:120]}")
        return outcome

    # -- 1. export --overwrite -------------------------------------------------------------------------------
    for label, manifest in (("not JSON", b"not json"), ("another tool's JSON", b'{"tool": "x", "files": []}')):
        @case(f"export --overwrite over a folder whose export.json is {label}")
        def _(manifest: bytes = manifest, label: str = label) -> Outcome:
            target = area / f"foreign-export-{len(label)}"
            (target / "sub").mkdir(parents=True)
            (target / "export.json").write_bytes(manifest)
            (target / "sub" / "mydata.txt").write_text("precious")
            before = tree(target)
            result = cli("export", str(run), "--format", "hf", "--out", str(target), "--overwrite", "-q")
            return kept(result, target, before, "not a uniedit export")

    @case("export --overwrite keeps a file the user added to an earlier export")
    def _() -> Outcome:
        target = area / "own-export"
        first = cli("export", str(run), "--format", "uniedit-jsonl", "--out", str(target), "-q")
        (target / "notes.txt").write_text("mine")
        again = cli("export", str(run), "--format", "hf", "--out", str(target), "--overwrite", "-q")
        notes = target / "notes.txt"
        ok = first.rc == 0 and again.rc == 0 and notes.exists() and notes.read_text() == "mine" \
            and not list(target.rglob("*.jsonl"))
        return failure(again) or Outcome("handled" if ok else "UNEXPECTED",
                                         "earlier export replaced, notes.txt kept" if ok else
                                         f"exit {again.rc}; notes.txt {'kept' if notes.exists() else 'deleted'}")

    # -- 3. synth --out over its own source or image root ----------------------------------------------------
    @case("synth --out over its own source (pq/data/shard-*.parquet)")
    def _() -> Outcome:
        import pyarrow as pa
        import pyarrow.parquet as pq

        root = area / "pq"
        (root / "data").mkdir(parents=True)
        pq.write_table(pa.table({"id": ["a"], "image": [png()], "question": [QUESTION], "answer": ["red"]}),
                       root / "data" / "shard-00000.parquet")
        before = tree(root)
        result = cli("synth", "--source", str(root / "data" / "shard-*.parquet"), "--out", str(root),
                     "--engine", "inline", "--no-progress")
        return kept(result, root, before, "overlaps the source")

    @case("synth --out that is its --image-root")
    def _() -> Outcome:
        images = area / "images"
        images.mkdir()
        (images / "good.png").write_bytes(png())
        rows = area / "rows.jsonl"
        rows.write_text(json.dumps({"id": "a", "image": "good.png", "question": QUESTION, "answer": "red"}) + "\n")
        before = tree(images)
        result = cli("synth", "--source", str(rows), "--image-root", str(images), "--out", str(images),
                     "--engine", "inline", "--no-progress")
        return kept(result, images, before, "overlaps --image-root")

    # -- 4. a folder that is not a run -----------------------------------------------------------------------
    @case("synth --out into a folder that is not a run")
    def _() -> Outcome:
        mine = area / "home"
        mine.mkdir()
        (mine / "thesis.tex").write_text("precious")
        before = tree(mine)
        return kept(synth_on(mine), mine, before, "not a uniedit run")

    @case("synth --out into a folder with the user's stats.json and .*.tmp files")
    def _() -> Outcome:
        mine = area / "home-plain"
        mine.mkdir()
        (mine / "stats.json").write_text('{"mine": 1}')
        (mine / ".draft.tmp").write_text("half a thought")
        before = tree(mine)
        return kept(synth_on(mine), mine, before, "not a uniedit run")

    @case("synth --out --force over a user's stats.json")
    def _() -> Outcome:
        mine = area / "home-stats"
        mine.mkdir()
        (mine / "stats.json").write_text('{"mine": 1}')
        before = tree(mine)
        return kept(synth_on(mine, "--force"), mine, before, "stats.json")

    @case("synth --out --force keeps the user's .*.tmp files")
    def _() -> Outcome:
        mine = area / "home-tmp"
        mine.mkdir()
        (mine / ".draft.tmp").write_text("half a thought")
        result = synth_on(mine, "--force")
        again = synth_on(mine)
        ok = result.rc == 0 and again.rc == 0 and (mine / ".draft.tmp").exists()
        return failure(result) or failure(again) or Outcome(
            "handled" if ok else "UNEXPECTED", "run written beside them, .draft.tmp kept" if ok else
            f"exit {result.rc}, then {again.rc}; .draft.tmp {'kept' if (mine / '.draft.tmp').exists() else 'deleted'}")

    # -- 5. job files of the wrong shape: stats and a rerun list them -----------------------------------------
    job = {"name": "judge-00000-0123456789", "job_id": "batch_1", "status": "submitted", "stage": "judge",
           "requests": 1, "owners": {"0" * 64: "scenes/0"}}
    shapes = {
        "requests a string": json.dumps({**job, "requests": "many"}),
        "null": "null",
        "a list": json.dumps([job]),
        "requests 1e400": json.dumps(job).replace('"requests": 1', '"requests": 1e400'),
        "owners a list": json.dumps({**job, "owners": ["scenes/0"]}),
    }
    for label, text in shapes.items():
        @case(f"batch job file with {label}: stats and a rerun")
        def _(label: str = label, text: str = text) -> Outcome:
            out = copy(run, area, f"job-shape-{label.replace(' ', '-')}")
            (out / "batches").mkdir()
            (out / "batches" / f"{job['name']}.json").write_text(text)
            shown = cli("stats", str(out))
            again = synth_on(out)
            bad = failure(shown) or failure(again)
            ok = shown.rc == 0 and "unreadable job file" in shown.stdout and again.rc == 0
            return bad or Outcome("handled" if ok else "UNEXPECTED", (shown.stdout + shown.stderr).strip()[-110:])

    # -- 2 and 5. a job in flight across a kill ---------------------------------------------------------------
    def in_flight(label: str, damage: Callable[[FakeOpenAI, Path, Path], None], *rerun: str) -> Callable[[], Outcome]:
        def check() -> Outcome:
            with FakeOpenAI(api_key=BATCH_KEY) as fake:
                out = area / f"in-flight-{label}"
                path = killed_with_a_job_in_flight(fake, out)
                if path is None:
                    return Outcome("UNEXPECTED", "the job was never submitted and polled")
                jobs_before = len(fake.jobs)
                damage(fake, out, path)
                fake.release()
                result = cli(*openai_synth_args(fake, out, *rerun), env={"OPENAI_API_KEY": BATCH_KEY})
                twice = paid_twice(fake)
                outside = [p.name for p in area.glob("*escape*")]
                ok = result.rc == 0 and twice == 0 and not outside
                return failure(result) or Outcome(
                    "handled" if ok else "UNEXPECTED",
                    f"exit {result.rc}; paid twice {twice}; jobs {jobs_before}->{len(fake.jobs)}"
                    + (f"; written outside: {outside}" if outside else "")
                    + ("" if ok else f"; {result.stderr.strip()[-120:]}"))
        return check

    def rename(fake: FakeOpenAI, out: Path, path: Path) -> None:
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "name": "../../escape-x", "job_id": None, "status": "submitting"}))

    def vanish(fake: FakeOpenAI, out: Path, path: Path) -> None:  # deleted at the provider: 404 from now on
        fake.jobs.pop(json.loads(path.read_text())["job_id"])

    variants: dict[str, tuple[Callable[[FakeOpenAI, Path, Path], None], tuple[str, ...]]] = {
        "rerun without --batch": (lambda fake, out, path: None, ()),
        "job file truncated": (lambda fake, out, path: path.write_bytes(path.read_bytes()[:30]), ("--batch",)),
        "job file deleted": (lambda fake, out, path: path.unlink(), ("--batch",)),
        "job name ../../escape": (rename, ("--batch",)),
        "job forgotten by the provider (404)": (vanish, ("--batch",)),
    }
    for number, (label, (damage, rerun)) in enumerate(variants.items()):
        case(f"batch job in flight, killed; {label}: nothing paid twice")(in_flight(str(number), damage, *rerun))

    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", default="", help="only the cases whose name contains this")
    args = parser.parse_args()
    started = time.monotonic()
    drip = ThreadingHTTPServer(("127.0.0.1", 0), DripHandler)
    drip.daemon_threads = True
    threading.Thread(target=drip.serve_forever, daemon=True).start()
    drip_url = f"http://127.0.0.1:{drip.server_address[1]}/slow.png"
    results: list[tuple[str, Outcome, float]] = []
    with tempfile.TemporaryDirectory(prefix="uniedit-hostile-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.monotonic()
        records = run_record_cases(tmp, drip_url)
        per_record = (time.monotonic() - t0) / max(1, len(records))
        results += [(name, outcome, per_record) for name, outcome in records if args.k in name]
        run = base_run(tmp)
        for name, check in [*operator_cases(tmp, run), *data_loss_cases(tmp, run), *surface_cases(tmp, run)]:
            if args.k not in name:
                continue
            t0 = time.monotonic()
            try:
                outcome = check()
            except Exception as exc:  # noqa: BLE001 - a broken case is reported, not raised
                outcome = Outcome("UNEXPECTED", f"the case itself failed: {type(exc).__name__}: {exc}")
            results.append((name, outcome, time.monotonic() - t0))
    drip.shutdown()

    width = max(len(name) for name, _, _ in results)
    print(f"{'#':>3}  {'case':<{width}}  {'outcome':<12} {'s':>5}  detail")
    for number, (name, outcome, seconds) in enumerate(results, 1):
        detail = outcome.detail.replace("\n", " ")
        detail = detail if len(detail) <= 110 else detail[:107] + "..."
        print(f"{number:>3}  {name:<{width}}  {outcome.kind:<12} {seconds:>5.1f}  {detail}")
    tally = Counter(outcome.kind for _, outcome, _ in results)
    failed = sum(n for kind, n in tally.items() if kind not in ACCEPTABLE)
    print(f"\n{len(results)} cases in {time.monotonic() - started:.0f} s: "
          + ", ".join(f"{tally.get(kind, 0)} {kind}" for kind in ACCEPTABLE)
          + f"; {failed} failed (traceback, hang, silent or unexpected)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
