"""No global aesthetics request by default: each instruction ends with a preservation clause drawn by the plan
(seeded, worded variously); the release's sentence stays available and the release judge preset uses it."""

from __future__ import annotations

import glob
import json
from collections import Counter

import pyarrow.parquet as pq

from uniedit_synth.api import synth
from uniedit_synth.core.config import load_pipeline
from uniedit_synth.method.plan import PRESERVE_CORES, RELEASE_CLOSING, draw_closing, draw_plan
from uniedit_synth.stages.base import StageContext
from uniedit_synth.stages.rewrite import RewriteStage


def test_closings_are_seeded_varied_and_never_global() -> None:
    closings = [draw_plan(0, f"r{i}", "color", "red").closing for i in range(2000)]
    assert closings == [draw_plan(0, f"r{i}", "color", "red").closing for i in range(2000)]
    counts = Counter(closings)
    assert len(counts) >= 30 and max(counts.values()) / len(closings) <= 0.05
    assert all(any(c.startswith(core) for core in PRESERVE_CORES) for c in counts)
    assert not any("appealing" in c or "refine" in c.lower() for c in counts)
    assert draw_closing(1, "r0") != draw_closing(0, "r0") or draw_closing(1, "r1") != draw_closing(0, "r1")


def test_the_closing_draw_leaves_the_plans_other_draws_alone() -> None:
    for i in range(200):
        plan = draw_plan(0, f"r{i}", "count", "3")
        fixed = draw_plan(0, f"r{i}", "count", "3", closing=RELEASE_CLOSING)
        assert plan.model_dump(exclude={"closing"}) == fixed.model_dump(exclude={"closing"})
        assert fixed.closing == RELEASE_CLOSING


def rewrite_stage(**judge: object) -> RewriteStage:
    config = load_pipeline("openai", overrides={"stages": {"judge": dict(judge)}} if judge else None)
    return RewriteStage(StageContext(config=config, callers={}, models={}))


def test_release_preset_and_an_explicit_directive_give_a_fixed_sentence() -> None:
    assert rewrite_stage().fixed_closing is None
    config = load_pipeline("openai")
    release = config.model_copy(
        update={"stages": config.stages.model_copy(
            update={"judge": config.stages.judge.model_copy(update={"preset": "release"})}
        )}
    )
    assert RewriteStage(StageContext(config=release, callers={}, models={})).fixed_closing == RELEASE_CLOSING
    own = load_pipeline("openai", overrides={"stages": {"rewrite": {"aesthetics_directive": "Keep it calm."}}})
    assert RewriteStage(StageContext(config=own, callers={}, models={})).fixed_closing == "Keep it calm."


def test_offline_rows_end_with_their_plans_closing(tmp_path) -> None:
    out = str(tmp_path / "run")
    synth("default", out=out, limit=40, overrides={"engine": {"kind": "inline", "shard_size": 40}})
    rows = [r for p in glob.glob(f"{out}/data/*.parquet") + glob.glob(f"{out}/rejects/*.parquet")
            for r in pq.read_table(p).to_pylist() if r.get("edit_instruction")]
    assert len(rows) >= 20
    endings = Counter()
    for row in rows:
        plan = row["instruction_plan"]
        plan = json.loads(plan) if isinstance(plan, str) else plan
        assert row["edit_instruction"].endswith(plan["closing"]), row["edit_instruction"]
        endings[plan["closing"]] += 1
    assert max(endings.values()) / len(rows) <= 0.2


def test_a_closing_never_names_the_answer() -> None:
    for answer in ("lighting", "background", "objects", "image"):
        closings = {draw_plan(0, f"r{i}", "others", answer).closing for i in range(300)}
        assert len(closings) >= 5
        assert not any(answer.rstrip("s") in c.lower() for c in closings), answer
