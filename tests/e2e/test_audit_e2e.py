"""`uniedit audit` and the synth-time screen on a finished offline run with planted defects (issue 12)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.audit_fixtures import plant_defects
from tests.conftest import REPO, run_cli, uniedit_cmd

pytestmark = pytest.mark.e2e

KEYS = ("no_op_edits", "answer_leaks", "duplicate_sources", "duplicate_pairs", "contaminated")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    run = root / "run"
    # one question a scene: grouping by image makes several samples of one scene on purpose, and the audit
    # would list them beside the planted duplicate sources
    proc = run_cli("synth", "--out", str(run), "--limit", "200", "--engine", "inline", "--no-progress",
                   "--set", "source.group_by_image=false")
    assert proc.returncode == 0, proc.stderr
    pristine = root / "pristine"
    shutil.copytree(run, pristine)
    return run, pristine, root / "bench", plant_defects(run, root / "bench")


def rejects(out: Path) -> dict[str, tuple[str, str]]:
    found = {}
    for path in sorted((out / "rejects").glob("shard-*.parquet")):
        for row in pq.read_table(path, columns=["id", "reject_reason", "reject_detail"]).to_pylist():
            found[row["id"]] = (row["reject_reason"], row["reject_detail"])
    return found


def test_audit_reports_exactly_the_planted_rows(planted):
    run, _, bench, expected = planted
    proc = run_cli("audit", str(run), "--json", "-q", "--against", str(bench / "bench.jsonl"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rows"] >= 180
    for key in KEYS:
        assert result[key]["ids"] == getattr(expected, key), key
        assert result[key]["count"] == len(getattr(expected, key)), key
    assert result["duplicate_sources"]["groups"] == [expected.duplicate_sources]
    assert result["duplicate_pairs"]["groups"] == [expected.duplicate_pairs]
    for sample_id in expected.contaminated:
        (match,) = result["contaminated"]["matches"][sample_id]
        assert match["benchmark"] == "bench.jsonl" and match["by"] == "image"
    for key in ("branch_balance", "category_mix", "instruction_diversity", "scores", "decided_in_advance"):
        assert {"count", "ids"} <= set(result[key]), key
    assert 0 < result["branch_balance"]["count"] <= result["rows"]  # the conditional rows
    assert 0.1 < result["branch_balance"]["share_then"] < 0.9
    assert result["scores"]["histograms"]["score"]
    assert result["no_op_edits"]["thresholds"]["phash256_bits"] > 0

    # a second audit reads the cached fingerprints (no image decoded) and says the same
    again = json.loads(run_cli("audit", str(run), "--json", "-q", "--against", str(bench / "bench.jsonl")).stdout)
    assert again["input"]["fingerprint_cache_hits"] == again["input"]["files"] > 0
    assert again["input"]["against"][0]["from_cache"]
    assert {k: again[k] for k in KEYS} == {k: result[k] for k in KEYS}


def test_audit_summary_and_report_section(planted, tmp_path: Path):
    run, _, _, expected = planted
    text = run_cli("audit", str(run), "-q")
    assert text.returncode == 0 and "not checked" in text.stdout
    assert "no-op edits          3 " in text.stdout and expected.no_op_edits[0] in text.stdout

    report = run_cli("report", str(run), "-q", "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Data quality (uniedit audit)" in page and expected.no_op_edits[0] in page


def test_audit_of_an_export_and_drop_flagged(planted, tmp_path: Path):
    run, _, bench, expected = planted
    out = tmp_path / "jsonl"
    proc = run_cli("export", str(run), "--format", "uniedit-jsonl", "--out", str(out), "-q",
                   "--drop-flagged", "all", "--against", str(bench / "bench.jsonl"))
    assert proc.returncode == 0, proc.stderr
    ids = {json.loads(line)["id"] for f in (out / "data").glob("*.jsonl") for line in f.read_text().splitlines()}
    dropped = set(expected.no_op_edits + expected.answer_leaks + expected.contaminated)
    dropped |= {expected.duplicate_sources[1], expected.duplicate_pairs[1]}  # the first copy of a group stays
    assert not ids & dropped
    assert {expected.duplicate_sources[0], expected.duplicate_pairs[0]} <= ids
    audit = json.loads(run_cli("audit", str(out), "--json", "-q", "--against", str(bench / "bench.jsonl")).stdout)
    assert audit["input"]["kind"] == "uniedit-jsonl"
    assert all(audit[k]["count"] == 0 for k in KEYS), {k: audit[k]["ids"] for k in KEYS}

    only_leaks = tmp_path / "hf"
    proc = run_cli("export", str(run), "--format", "hf", "--out", str(only_leaks), "-q", "--drop-flagged", "answer_leaks")
    assert proc.returncode == 0, proc.stderr
    audit = json.loads(run_cli("audit", str(only_leaks), "--json", "-q").stdout)
    assert audit["input"]["kind"] == "hf" and audit["answer_leaks"]["count"] == 0
    assert audit["no_op_edits"]["ids"] == expected.no_op_edits


# the planted run's records (one question a scene)
SYNTH = ["--limit", "200", "--no-progress", "--shard-size", "20", "--engine", "inline",
         "--set", "source.group_by_image=false"]


def test_synth_decontaminate_rejects_exactly_the_benchmark_copies_also_after_sigkill(planted, tmp_path: Path):
    _, pristine, bench, expected = planted
    spec = f"source.decontaminate=[{bench / 'bench.jsonl'}]"
    reference = tmp_path / "reference"
    proc = run_cli("synth", "--out", str(reference), *SYNTH, "--set", spec)
    assert proc.returncode == 0, proc.stderr
    found = {k: v for k, v in rejects(reference).items() if v[0] == "contaminated"}
    assert sorted(found) == expected.contaminated
    assert all("bench.jsonl:bench-" in detail for _, detail in found.values())
    assert not any(v[0] == "duplicate_input" for v in rejects(reference).values())

    victim_out = tmp_path / "killed"
    slow = [*SYNTH, "--set", spec, "--set", "backends.editor.options.latency_s=0.05"]
    victim = subprocess.Popen(uniedit_cmd("synth", "--out", str(victim_out), *slow), cwd=REPO, env=dict(os.environ),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    manifest = victim_out / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if manifest.exists() and manifest.read_text().count("\n") >= 2:
            break
        time.sleep(0.02)
    assert victim.poll() is None, "the run finished before it could be killed"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    resumed = run_cli("synth", "--out", str(victim_out), *slow)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" in resumed.stdout
    again = {k: v for k, v in rejects(victim_out).items() if v[0] in ("contaminated", "duplicate_input")}
    assert again == found


def test_synth_dedup_keeps_the_first_copy_in_shard_order(tmp_path: Path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for n in range(12):
        Image.new("RGB", (64, 64), (20 * n, 255 - 20 * n, (97 * n) % 256)).save(images / f"{n}.png")
    for n in range(12):
        # rows 9, 10, 11 repeat the images of rows 1, 4 and 7; row 10 also its question
        image = {9: 1, 10: 4, 11: 7}.get(n, n)
        question = "What colour is the square?" if n in (4, 10) else f"What colour is square {n}?"
        rows.append({"id": f"r{n:02d}", "image": f"{image}.png", "question": question, "answer": "red"})
    source = tmp_path / "vqa.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = ["--source", str(source), "--image-root", str(images), "--no-progress", "--shard-size", "3",
            "--workers", "2", "--engine", "inline"]
    by_image = tmp_path / "by_image"
    assert run_cli("synth", "--out", str(by_image), *base, "--set", "source.dedup=image").returncode == 0
    dup = {k: v[1] for k, v in rejects(by_image).items() if v[0] == "duplicate_input"}
    assert sorted(dup) == ["vqa/r09", "vqa/r10", "vqa/r11"]
    assert dup["vqa/r09"] == "a near-identical image as vqa/r01"
    by_pair = tmp_path / "by_pair"
    assert run_cli("synth", "--out", str(by_pair), *base, "--set", "source.dedup=pair").returncode == 0
    assert sorted(k for k, v in rejects(by_pair).items() if v[0] == "duplicate_input") == ["vqa/r10"]


def one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr


def test_bad_benchmarks(planted, tmp_path: Path):
    run, _, bench, expected = planted
    one_line_error(run_cli("audit", str(run), "-q", "--against", str(tmp_path / "missing")), "does not exist")
    table = tmp_path / "table.csv"
    table.write_text("name,score\na,1\n")
    one_line_error(run_cli("audit", str(run), "-q", "--against", str(table)), "no image column")
    one_line_error(run_cli("audit", str(tmp_path), "-q"), "neither a uniedit run")
    one_line_error(run_cli("synth", "--out", str(tmp_path / "x"), "-n", "5", "--engine", "inline",
                           "--set", f"source.decontaminate=[{table}]"), "no image column")

    broken = tmp_path / "broken"
    shutil.copytree(bench, broken)
    (broken / "images" / "item1.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    proc = run_cli("audit", str(run), "--json", "-q", "--against", str(broken / "bench.jsonl"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["input"]["against"][0]["skipped_images"] == 1
    assert "skipping the image of item bench-1" in proc.stderr
    assert len(result["contaminated"]["ids"]) == 2 and set(result["contaminated"]["ids"]) < set(expected.contaminated)
