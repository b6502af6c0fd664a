"""`uniedit eval` end to end: each benchmark in its real layout (tests/eval_fixtures.py), edited by the openai
pipeline's gpt-image backend against the fake OpenAI server and by a plugin baseline, judged with the benchmark's
own preset through the real openai SDK. The test recomputes every figure of eval.json from the judge's replies
(its own formulas, not the package's), checks the replies against what the fake sent, and that a rerun makes no
call."""

from __future__ import annotations

import json
import math
import random
import re
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.eval_fixtures import WRITERS, judge_content
from tests.fakes import FakeOpenAI

pytestmark = pytest.mark.e2e

KEY = "sk-eval-e2e-0123456789"
ENV = {"UE_EVAL_KEY": KEY}
TINT = "examples.plugins.tint_editor:TintEditor"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        server.script(lambda rec: {"content": judge_content(rec.body)} if rec.path.endswith("/chat/completions")
                      else None)
        yield server


def evaluate(fake: FakeOpenAI, bench: str, out: Path, *extra: str):
    args = ["eval", "--bench", bench, "--model", "gpt-image", "--baseline", TINT, "--pipeline", "openai",
            "--out", str(out), "--set", "retry.initial_s=0.05", "--set", "retry.max_s=0.2"]
    for backend in ("gpt4o", "gpt-image"):
        args += ["--set", f"backends.{backend}.base_url={fake.base_url}",
                 "--set", f"backends.{backend}.api_key_env=UE_EVAL_KEY"]
    args += ["--set", "limits.rate_limits={}"]
    return run_cli(*args, *extra, env=ENV, timeout=300)


# -- the benchmarks' formulas, written out again from their scripts -----------------------------------------------
def mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def expected_figures(preset: str, row: dict) -> dict[str, float]:
    s = row["judge_scores"]
    if preset == "gedit-bench":  # viescore/__init__.py: min of each list, overall sqrt(SC*PQ)
        sc, pq = min(s["SC"]["score"]), min(s["PQ"]["score"])
        return {"semantic_consistency": sc, "perceptual_quality": pq, "overall": math.sqrt(sc * pq)}
    if preset == "kris-bench":
        out = {"visual_consistency": s["consistency"]["consistency_score"],
               "visual_quality": s["quality"]["quality_score"]}
        if "dual" in s:
            out |= {"instruction_following": s["dual"]["instruction_score"],
                    "knowledge_plausibility": s["dual"]["knowledge_score"]}
        else:
            out["instruction_following"] = s["instruction"]["instruction_score"]
        return out
    if preset == "risebench":  # gpt_eval.py calculate_score / calculate_completion
        logical = row["category"] == "logical_reasoning"
        get = {k: v["final_score"] for k, v in s.items()}
        if logical:
            c, r = 4 * min(get["consistency"], 1) + 1, 4 * min(get["reasoning"], 1) + 1
            score, complete, out = 0.3 * c + 0.7 * r, c == 5 and r == 5, {"appearance_consistency": c}
        elif "consistency" not in get:
            r, v = get["reasoning"], get["quality"]
            score, complete, out = 0.2 * v + 0.8 * r, r == 5 and v == 5, {"visual_plausibility": v}
        else:
            c, r, v = get["consistency"], get["reasoning"], get["quality"]
            score = 0.3 * c + 0.5 * r + 0.2 * v
            complete, out = c == 5 and r == 5 and v == 5, {"appearance_consistency": c, "visual_plausibility": v}
        if r == 1:
            score = max(1, score * 0.5)
        return out | {"instruction_reasoning": r, "score": score, "accuracy": float(complete)}
    if preset == "imgedit-bench":  # step1_get_avgscore.py: round(mean of the three, 2)
        values = list(s["score"].values())
        assert len(values) == 3
        return {f"criterion_{i + 1}": v for i, v in enumerate(values)} | {"score": round(sum(values) / 3, 2)}
    raise AssertionError(preset)


def expected_headline(preset: str, rows: list[dict]) -> float:
    judged = [r for r in rows if r["figures"]]
    if preset == "gedit-bench":
        en = [r for r in judged if r["extra"]["language"] == "en"]
        types = sorted({r["category"] for r in en})
        return mean([mean([r["figures"]["overall"] for r in en if r["category"] == t]) for t in types])
    if preset == "kris-bench":
        axes = ("visual_consistency", "visual_quality", "instruction_following", "knowledge_plausibility")
        return mean([mean([r["figures"].get(a) for r in judged]) for a in axes])
    if preset == "risebench":
        return mean([r["figures"]["accuracy"] if r["figures"] else 0.0 for r in rows])
    types = sorted({r["category"] for r in judged})
    return mean([round(mean([r["figures"]["score"] for r in judged if r["category"] == t]), 2) for t in types])


def bootstrap(diffs: list[float], resamples: int, seed: int) -> tuple[float, float]:
    rng = random.Random(seed)
    boot = sorted(statistics.fmean(diffs[rng.randrange(len(diffs))] for _ in diffs) for _ in range(resamples))

    def pct(q):
        pos = (len(boot) - 1) * q / 100
        lo = int(pos)
        hi = min(lo + 1, len(boot) - 1)
        return boot[lo] + (boot[hi] - boot[lo]) * (pos - lo)

    return pct(2.5), pct(97.5)


@pytest.mark.parametrize("preset", sorted(WRITERS))
def test_benchmark_end_to_end_with_its_preset(preset, fake, tmp_path):
    root = WRITERS[preset](tmp_path / preset)
    out = tmp_path / "eval"
    proc = evaluate(fake, f"{preset}={root}", out, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert KEY not in proc.stdout + proc.stderr
    report = json.loads((out / "eval.json").read_text())
    assert report["protocol"]["preset"] == preset and report["protocol"]["differs"]
    chats = [r for r in fake.requests if r.path.endswith("/chat/completions")]
    assert chats, "the judge was never called"
    sent = [judge_content(r.body) for r in chats]

    for label in ("model", "baseline"):
        rows = report["samples"][label]
        assert rows and all(r["figures"] for r in rows), [r["error"] for r in rows]
        for row in rows:
            # every score in eval.json is one the fake judge sent
            for call, scores in row["judge_scores"].items():
                assert any(all(reply.get(k) == v for k, v in scores.items()) for reply in sent), (call, scores)
            expected = expected_figures(preset, row)
            assert row["figures"] == pytest.approx(expected), row["key"]
            assert (out / row["edit"]).is_file()
        model = report["models"][label]
        for name, value in model["mean"].items():
            assert value == pytest.approx(mean([r["figures"].get(name) for r in rows]))
        for category, block in model["per_category"].items():
            chosen = [r for r in rows if r["category"] == category]
            for name, value in block["mean"].items():
                assert value == pytest.approx(mean([r["figures"].get(name) for r in chosen]))
        assert model["headline"]["value"] == pytest.approx(expected_headline(preset, rows))

    paired = report["paired"]["model_minus_baseline"]
    base = {r["key"]: r for r in report["samples"]["baseline"]}
    some_difference = False
    for name, figure in paired["figures"].items():
        diffs = [r["figures"][name] - base[r["key"]]["figures"][name] for r in report["samples"]["model"]
                 if name in r["figures"] and name in base[r["key"]]["figures"]]
        assert figure["n"] == len(diffs)
        assert figure["mean_diff"] == pytest.approx(statistics.fmean(diffs))
        assert figure["ci95"] == pytest.approx(list(bootstrap(diffs, paired["resamples"], paired["seed"])))
        assert figure["ci95"][0] <= figure["mean_diff"] <= figure["ci95"][1]
        some_difference |= any(d != 0 for d in diffs)
    assert some_difference, "two different editors scored identically: the fake judge ignored the edits"

    page = (out / "index.html").read_text()
    assert all(r["edit"] in page for r in report["samples"]["model"] + report["samples"]["baseline"])

    # a rerun makes no call and writes the same figures; the plain output says what differs from upstream
    before = len(fake.requests)
    again = evaluate(fake, f"{preset}={root}", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(fake.requests) == before
    assert "0 paid" in again.stdout and "differs from the benchmark's own protocol" in again.stdout
    rerun = json.loads((out / "eval.json").read_text())
    assert rerun["samples"] == report["samples"] and rerun["paired"] == report["paired"]


def test_compare_two_finished_evals(fake, tmp_path):
    root = WRITERS["imgedit-bench"](tmp_path / "imgedit")
    first, second = tmp_path / "a", tmp_path / "b"
    assert evaluate(fake, f"imgedit-bench={root}", first).returncode == 0
    # the second evaluation's model is the first one's baseline
    args = ["eval", "--bench", f"imgedit-bench={root}", "--model", TINT, "--pipeline", "openai", "--out",
            str(second), "--set", f"backends.gpt4o.base_url={fake.base_url}",
            "--set", "backends.gpt4o.api_key_env=UE_EVAL_KEY", "--set", "limits.rate_limits={}"]
    assert run_cli(*args, env=ENV).returncode == 0
    proc = run_cli("eval", "--compare", str(first), str(second), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    a = json.loads((first / "eval.json").read_text())
    assert result["paired"] == a["paired"]["model_minus_baseline"]  # same judge replies, same pairs, same seed


def test_builtin_judge_refuses_a_benchmark_preset(tmp_path):
    root = WRITERS["kris-bench"](tmp_path / "kris")
    proc = run_cli("eval", "--bench", f"kris-bench={root}", "--model", "editor", "--pipeline", "default",
                   "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert re.search(r"builtin judge cannot read kris-bench", proc.stderr + proc.stdout)
    assert "Traceback" not in proc.stderr


def test_batch_judges_through_batch_jobs_with_the_online_figures(fake, tmp_path):
    root = WRITERS["kris-bench"](tmp_path / "kris")
    online = evaluate(fake, f"kris-bench={root}", tmp_path / "online")
    assert online.returncode == 0, online.stderr[-3000:]
    before = len(fake.requests)
    poll = ["--set", "stages.judge.batch.poll_s=0.02", "--set", "stages.judge.batch.group_s=0.01"]
    batch = evaluate(fake, f"kris-bench={root}", tmp_path / "batch", "--batch", *poll)
    assert batch.returncode == 0, batch.stderr[-3000:]
    judged = [r for r in fake.requests[before:] if r.path.endswith("/chat/completions")]
    assert judged and all(r.batch for r in judged), "a judge call went online"
    assert list((tmp_path / "batch" / "batches").iterdir()), "no job file under <out>/batches"
    a = json.loads((tmp_path / "online" / "eval.json").read_text())
    b = json.loads((tmp_path / "batch" / "eval.json").read_text())
    for label in ("model", "baseline"):
        assert [r["figures"] for r in b["samples"][label]] == [r["figures"] for r in a["samples"][label]]
    assert b["paired"] == a["paired"] and b["batch"] is True
    after = len(fake.requests)
    again = evaluate(fake, f"kris-bench={root}", tmp_path / "batch", "--batch", *poll)
    assert again.returncode == 0 and len(fake.requests) == after  # a rerun submits no job and makes no call
