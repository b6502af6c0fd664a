"""A backend plugin that raises or returns junk fails its record, not the run; one that cannot be built or
started is a one-line error before any paid call, inline and under Ray (issue 30, item 6)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli
from tests.fakes import FakeOpenAI

pytestmark = pytest.mark.e2e

EDITOR = "tests.fakes.hostile_plugins:HostileEditor"
TEXT = "tests.fakes.hostile_plugins:HostileText"
KEY = "sk-hostile-plugin-test-123"


def rows(out: Path) -> list[dict]:
    return [row for kind in ("data", "rejects") for path in sorted((out / kind).glob("shard-*.parquet"))
            for row in pq.read_table(path, columns=["id", "accepted", "reject_reason", "reject_detail"]).to_pylist()]


def one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def synth(out: Path, *extra: str, engine: str = "inline"):
    return run_cli("synth", "--limit", "4", "--shard-size", "2", "--engine", engine, "--no-progress",
                   "--out", str(out), *extra, timeout=240)


@pytest.mark.parametrize("fail, reason, needle", [
    ("call", "edit_failed", "ZeroDivisionError"),
    ("junk", "edit_failed", "returned str, not an EditReply"),
])
def test_an_editor_plugin_that_fails_a_call_rejects_that_record(tmp_path: Path, fail: str, reason: str, needle: str):
    out = tmp_path / "run"
    proc = synth(out, "--set", f"backends.editor.type={EDITOR}", "--set", f"backends.editor.options.fail={fail}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    found = rows(out)
    edited = [r for r in found if r["reject_reason"] == reason]
    assert edited and all(not r["accepted"] for r in found)
    assert all(needle in r["reject_detail"] and "HostileEditor" in r["reject_detail"] for r in edited), edited


def test_a_text_plugin_that_raises_at_the_judge_is_a_judge_failure(tmp_path: Path):
    out = tmp_path / "run"
    proc = synth(out, "--set", f"backends.text.type={TEXT}", "--set", "backends.text.options.fail=call",
                 "--set", "backends.text.options.tasks=[judge]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    judged = [r for r in rows(out) if r["reject_reason"] == "judge_failed"]
    assert judged and all("ZeroDivisionError" in r["reject_detail"] for r in judged), rows(out)


@pytest.mark.parametrize("fail, needle", [("init", "constructor exploded"), ("start", "could not load weights")])
@pytest.mark.parametrize("engine", ["inline", pytest.param("ray", marks=pytest.mark.ray)])
def test_a_plugin_that_cannot_be_built_or_started_stops_before_any_paid_call(
        tmp_path: Path, fail: str, needle: str, engine: str):
    with FakeOpenAI(api_key=KEY) as fake:
        proc = run_cli("synth", "--pipeline", "openai", "--limit", "4", "--shard-size", "2", "--engine", engine,
                       "--workers", "1", "--no-progress", "--out", str(tmp_path / "run"),
                       "--set", f"backends.gpt4o.base_url={fake.base_url}", "--set", "limits.rate_limits={}",
                       "--set", f"backends.gpt-image.type={EDITOR}", "--set", "backends.gpt-image.options={fail: "
                       + fail + "}", env={"OPENAI_API_KEY": KEY}, timeout=240)
        line = one_line_error(proc, "gpt-image", needle)
        assert fake.requests == [], line  # nothing was sent, so nothing was paid for
    if fail == "start":
        assert "start()" in line


@pytest.mark.parametrize("type_name", [":X", "mod:", "a b:C", "pkg.mod:Cls:extra"])
def test_a_plugin_type_of_the_wrong_shape_is_a_one_line_error(tmp_path: Path, type_name: str):
    proc = synth(tmp_path / "run", "--set", f'backends.editor.type="{type_name}"')  # a YAML string
    one_line_error(proc, "backends.editor.type", "package.module:ClassName")
    assert not (tmp_path / "run").exists()
