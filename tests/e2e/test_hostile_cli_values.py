"""Out-of-range numbers, absurd keys and files, and what the CLI prints back (issue 30, items 7 and 9): every
mistaken value is a one-line error before anything is written; what the CLI prints is safe to act on (shell-
quoted commands, escaped bidi controls, stdout of `--log-format json` holding JSON only)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.e2e


def one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def synth(out: Path | str, *extra: str, timeout: float = 120, cwd: Path | None = None):
    return run_cli("synth", "--engine", "inline", "--limit", "2", "--no-progress", "--out", str(out), *extra,
                   timeout=timeout, cwd=cwd)


@pytest.mark.parametrize("setting, needles", [
    ("stages.judge.thresholds.coherence=.nan", ("coherence", "nan")),
    ("stages.judge.thresholds.coherence=7", ("coherence", "from 0 to 5")),
    ("stages.judge.thresholds.coherence=-1", ("coherence", "from 0 to 5")),
    ("stages.judge.thresholds.coherence=1e999", ("coherence",)),
    ("input.max_side=0", ("input.max_side",)),
    ("input.max_pixels=-1", ("input.max_pixels",)),
    ("stages.judge.params.temperature=.inf", ("stages.judge.params.temperature", "not a finite number")),
])
def test_an_out_of_range_setting_is_refused_before_the_run_starts(tmp_path: Path, setting: str, needles):
    one_line_error(synth(tmp_path / "run", "--set", setting), *needles)
    assert not (tmp_path / "run").exists()  # no run.json (with a NaN in it), no rejects


@pytest.mark.parametrize("budget", ["0", "-0", "nan"])
def test_max_cost_zero_is_refused_not_every_record_budget_exhausted(tmp_path: Path, budget: str):
    proc = synth(tmp_path / "run", "--max-cost", budget)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "max_cost_usd" in proc.stderr or "--max-cost" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_run_json_holds_strict_json(tmp_path: Path):
    out = tmp_path / "run"
    assert synth(out, "--set", "stages.judge.thresholds.coherence=1.5", "--max-cost", "0.5").returncode == 0
    json.loads((out / "run.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in run.json"))


def test_a_set_key_thousands_of_levels_deep_is_one_line(tmp_path: Path):
    key = ".".join(["a"] * 5000)
    line = one_line_error(synth(tmp_path / "run", "--set", f"{key}=1"), "--set", "levels")
    assert len(line) < 400 and "RecursionError" not in line


def test_a_large_yaml_without_aliases_is_refused_by_its_size_at_once(tmp_path: Path):
    path = tmp_path / "big.yaml"
    text = (REPO / "pipelines" / "default.yaml").read_text()
    path.write_text(text + "\nx_data:\n" + "".join(f"  - {i}\n" for i in range(1_000_000)))  # ~10 MB
    line = one_line_error(run_cli("synth", "--pipeline", str(path), "--out", str(tmp_path / "run"), timeout=30),
                          "MB")
    assert "alias" not in line


def test_an_empty_out_is_an_error_not_runs_default(tmp_path: Path):
    one_line_error(synth("", cwd=tmp_path), "--out")
    assert not (tmp_path / "runs").exists()


def test_the_printed_next_commands_are_shell_quoted(tmp_path: Path):
    out = tmp_path / "my runs" / "it's $HOME `x`\nline"
    proc = synth(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(line for line in proc.stdout.splitlines() if line.strip().startswith("next:"))
    commands = [part.strip() for part in line.split("next:", 1)[1].split("  |  ")]
    for command, verb in zip(commands, ("stats", "report", "export"), strict=True):
        assert command.startswith(f"uniedit {verb} ")
        args = subprocess.run(["bash", "-c", "printf '%s\\0' " + command[len("uniedit "):]], capture_output=True,
                              check=True).stdout.split(b"\0")[:-1]
        assert args[0].decode() == verb and args[1].decode() == str(out), args
    assert args[-1].decode() == f"{out}-hf"


def test_inspect_escapes_bidi_overrides_in_ids(tmp_path: Path):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buffer, format="PNG")
    (tmp_path / "good.png").write_bytes(buffer.getvalue())
    evil = "invoice\u202egnp.exe\u2066x\u2069"
    (tmp_path / "vqa.jsonl").write_text(json.dumps({"id": evil, "image": "good.png", "question": "What color is the box?",
                                                    "answer": "red"}) + "\n")
    out = tmp_path / "run"
    made = run_cli("synth", "--source", str(tmp_path / "vqa.jsonl"), "--out", str(out), "--engine", "inline",
                   "--no-progress", timeout=120)
    assert made.returncode == 0, made.stderr[-2000:]
    row_id = next(r["id"] for p in out.glob("*/shard-*.parquet") for r in pq.read_table(p, columns=["id"]).to_pylist())
    proc = run_cli("inspect", str(out), "--id", row_id, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for control in ("\u202e", "\u2066", "\u2069"):
        assert control not in proc.stdout + proc.stderr
    assert "\\u202e" in proc.stdout


@pytest.mark.ray
def test_json_log_format_keeps_stdout_for_json_under_ray(tmp_path: Path):
    """A worker's output (here a plugin printing while it loads; Ray forwards it, coloured, to the driver's
    stdout) goes to stderr: every stdout line is one JSON event."""
    out = tmp_path / "run"
    proc = run_cli("synth", "--engine", "ray", "--workers", "1", "--limit", "2", "--no-progress", "--out", str(out),
                   "--log-format", "json", "--set", "backends.editor.type=tests.fakes.hostile_plugins:HostileEditor",
                   "--set", "backends.editor.options.fail=print", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    assert events[-1]["event"] == "done" and any(e["event"] == "shard" for e in events)
    assert "loading weights, a line on stdout" in proc.stderr  # not lost: moved
