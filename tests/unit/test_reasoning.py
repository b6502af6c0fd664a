"""Reasoning traces (issue 20 item 1): every accepted offline-world row carries a trace that names the true
answer and the expected branch's edit, checked against the world's ground truth; a corrupted plan fails the
check; the model-phrased mode goes through the rewriter's backend and is held to the same check."""

from __future__ import annotations

import glob
import json

import pyarrow.parquet as pq
import pytest

from uniedit_synth.api import synth
from uniedit_synth.core.errors import ExportError
from uniedit_synth.core.records import row_to_sample
from uniedit_synth.export import export_run
from uniedit_synth.method.answers import normalise_text
from uniedit_synth.method.plan import InstructionPlan
from uniedit_synth.method.reasoning import check_trace, intended_effect, template_trace
from uniedit_synth.offline.program import branch_taken, scene_of

INLINE = {"engine": {"kind": "inline", "shard_size": 20}}


def accepted_rows(out: str) -> list:
    rows = []
    for path in sorted(glob.glob(f"{out}/data/*.parquet")):
        rows += [row_to_sample(r) for r in pq.read_table(path).to_pylist()]
    return rows


@pytest.fixture(scope="module")
def template_out(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("reasoning") / "run")
    synth("default", out=out, limit=60, overrides=INLINE)
    return out


@pytest.fixture(scope="module")
def template_run(template_out: str) -> list:
    return accepted_rows(template_out)


def test_every_accepted_row_names_the_true_answer_and_the_expected_edit(template_run: list) -> None:
    conditional = 0
    assert len(template_run) >= 20
    for row in template_run:
        plan = row.instruction_plan
        assert row.reasoning and row.intended_effect
        assert f"the answer is {row.original_answer}".lower() in row.reasoning.lower()
        assert normalise_text(row.intended_effect) in normalise_text(row.reasoning)
        assert check_trace(row.reasoning, plan, row.original_answer, row.intended_effect) is None
        if plan.conditional:
            conditional += 1
            # the world's own verdict, not the plan's bookkeeping: the branch the program takes on the scene
            assert row.intended_effect == plan.expected_edit
            if plan.operator != "switch":  # a switch's cases: test_logic_offline.py
                taken = branch_taken(scene_of(row.record_meta), row.edit_program)
                assert plan.path[0] == ("then" if taken else "else")
    assert conditional >= 5


def test_a_corrupted_branch_fails_the_check(template_run: list) -> None:
    corrupted = 0
    for row in template_run:
        plan = row.instruction_plan
        if not plan.conditional:
            continue
        # another outcome of the tree holds instead (a flipped branch, another case, the other nested leaf)
        other = next(leaf.path for leaf in plan.leaves if leaf.path != plan.path_key) if plan.leaves else None
        flipped = plan.model_copy(update={"expected_branch": "else" if plan.expected_branch == "then" else "then",
                                          "path": other.split("/") if other else plan.path})
        assert check_trace(row.reasoning, flipped, row.original_answer, row.intended_effect) is not None
        corrupted += 1
    assert corrupted >= 5


def test_a_wrong_stated_answer_fails_the_check() -> None:
    plan = InstructionPlan(
        style="conditional", candidate="red", candidate_is_answer=False, expected_branch="else",
        then_edit="paint the cube gold", else_edit="add a small sphere",
    )
    effect = intended_effect(plan, "instruction")
    good = template_trace("What colour is the cube?", "blue", plan, effect)
    assert effect == "add a small sphere"
    assert check_trace(good, plan, "blue", effect) is None
    assert "whether the answer is red" in good  # the condition is posed, not stated as the answer
    assert check_trace(good.replace("the answer is blue", "the answer is green"), plan, "blue", effect)
    assert check_trace(good.replace("add a small sphere", "paint the cube gold"), plan, "blue", effect)
    assert check_trace("", plan, "blue", effect)


def test_model_mode_phrases_through_the_rewriter_and_off_leaves_it_out(tmp_path) -> None:
    out = str(tmp_path / "model")
    synth("default", out=out, limit=20, overrides={**INLINE, "stages": {"rewrite": {"reasoning": "model"}}})
    rows = accepted_rows(out)
    assert rows
    for row in rows:
        assert row.reasoning.startswith("1. Question: the instruction first asks")  # the builtin model's words
        assert check_trace(row.reasoning, row.instruction_plan, row.original_answer, row.intended_effect) is None
        assert row.prompt_versions.get("reason")
    off = str(tmp_path / "off")
    synth("default", out=off, limit=10, overrides={**INLINE, "stages": {"rewrite": {"reasoning": "off"}}})
    assert all(r.reasoning is None and r.intended_effect is None for r in accepted_rows(off))


def test_exports_carry_the_trace(template_out: str, template_run: list, tmp_path) -> None:
    by_id = {r.id: r for r in template_run}
    export_run(template_out, tmp_path / "jsonl", "uniedit-jsonl", progress=False)
    lines = [json.loads(line) for p in sorted((tmp_path / "jsonl").rglob("*.jsonl")) for line in open(p)]
    assert lines and all(line["reasoning"] == by_id[line["id"]].reasoning for line in lines)
    assert all(line["intended_effect"] == by_id[line["id"]].intended_effect for line in lines)

    export_run(template_out, tmp_path / "hf", "hf", progress=False)
    table = pq.read_table(sorted((tmp_path / "hf").rglob("*.parquet"))[0])
    assert {"reasoning", "intended_effect"} <= set(table.column_names)

    export_run(template_out, tmp_path / "bagel", "bagel", with_reasoning=True, progress=False)
    rows = pq.read_table(sorted((tmp_path / "bagel" / "train").glob("*.parquet"))[0]).to_pylist()
    for row in rows:
        (think,) = row["think_list"][0]
        assert think == f"<think>{by_id[row['id']].reasoning}</think>"
        assert len(row["think_list"]) == len(row["instruction_list"]) == len(row["image_list"]) - 1
    plain = tmp_path / "bagel-plain"
    export_run(template_out, plain, "bagel", progress=False)
    assert "think_list" not in pq.read_schema(sorted((plain / "train").glob("*.parquet"))[0]).names
    with pytest.raises(ExportError, match="bagel option"):
        export_run(template_out, tmp_path / "x", "hf", with_reasoning=True, progress=False)


@pytest.mark.parametrize(
    "answer", ["[0.54, 0.33, 0.71, 0.92]", "12.5 cm", "sqrt(89) ≈ 9.43", "St. Louis, MO", "A red cube. Two spheres."]
)
def test_answers_with_punctuation_are_stated_whole(answer: str) -> None:
    plan = InstructionPlan(style="render")
    trace = template_trace("What does it say?", answer, plan, "write it on the board")
    assert check_trace(trace, plan, answer, "write it on the board") is None
    assert check_trace(trace.replace(answer, "42"), plan, answer, "write it on the board")


def test_rewrite_call_mode_takes_the_trace_from_the_rewrite_reply(tmp_path) -> None:
    out = str(tmp_path / "same-call")
    synth("default", out=out, limit=20, overrides={**INLINE, "stages": {"rewrite": {"reasoning": "rewrite_call"}}})
    rows = accepted_rows(out)
    assert rows
    phrased = [r for r in rows if r.reasoning.startswith("1. Question: the instruction first asks")]
    assert len(phrased) >= len(rows) // 2  # the builtin model's words; any that fail the check are templates
    for row in rows:
        assert check_trace(row.reasoning, row.instruction_plan, row.original_answer, row.intended_effect) is None
        assert "reason" not in row.prompt_versions  # no follow-up call
