"""The branch-tree reply through the real `openai` SDK against the fake server (issue 25): a nested plan's
reply round-trips (the schema sent carries `branches`, the plan's leaves come back filled, the judge is told
the expected path and every wrong one); a reply whose tree contradicts the plan gets the one repair request,
then `rewrite_failed`; a sibling's answer outside its condition is a leak."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import FakeOpenAI
from tests.unit.test_rewrite_plan import KEY, png, prompt_text, rewrite_requests, run
from uniedit_synth.backends.openai_backend import OpenAIText
from uniedit_synth.core.config import RetrySpec, load_pipeline
from uniedit_synth.core.records import RejectReason, SiblingQA, VQARecord
from uniedit_synth.engine.calls import ModelCaller
from uniedit_synth.engine.coordinator import Coordinator
from uniedit_synth.run.cache import ResponseCache
from uniedit_synth.stages.base import Rejected, StageContext, WorkItem
from uniedit_synth.stages.judge import JudgeStage, judge_outcome
from uniedit_synth.stages.rewrite import RewriteStage

#: every conditional nests a condition (on the same count) in one branch; no join, no parameter
NESTED = {"operators": ["eq", "lt", "gt", "between", "parity"], "nest_p": 1.0, "join_p": 0.0, "parameter_p": 0.0}
EDITS = {
    "then": "paint the large cube red",
    "else": "remove the small sphere",
    "then/then": "paint the large cube red",
    "then/else": "enlarge the small sphere",
    "else/then": "remove the small sphere",
    "else/else": "add a green cone beside the cube",
}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv("UE_PLAN_TEST_KEY", KEY)
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


def stages(server: FakeOpenAI, tmp_path: Path, logic: dict) -> tuple[RewriteStage, JudgeStage]:
    config = load_pipeline(
        "uniedit",
        overrides={
            "backends": {
                "gpt4o": {"base_url": server.base_url, "api_key_env": "UE_PLAN_TEST_KEY", "timeout_s": 5}
            },
            "stages": {"rewrite": {"styles": {"count": {"conditional": 1.0, "synthesis": 0.0}}, "logic": logic}},
        },
    )
    backend = OpenAIText(config.backends["gpt4o"])
    cache = ResponseCache(tmp_path / "cache")
    callers = {
        name: ModelCaller(
            name, backend, cache=cache, coordinator=Coordinator({}), prices={},
            retry=RetrySpec(max_attempts=1), rate_limited=False,
        )  # fmt: skip
        for name in ("rewrite", "judge")
    }
    ctx = StageContext(
        config=config, callers=callers, models={"rewrite": "gpt-4o-2024-11-20", "judge": "gpt-4o-2024-11-20"}
    )
    return RewriteStage(ctx), JudgeStage(ctx)


def count_item(record_id: str = "test/cubes", siblings: list[SiblingQA] | None = None) -> WorkItem:
    record = VQARecord(
        id=record_id, source="test", image=png(), question="How many cubes are there?", answer="4",
        category="count", meta={"answer_space": [str(n) for n in range(1, 9)]}, siblings=siblings or [],
    )  # fmt: skip
    return WorkItem(record=record, shard=0, image=png(), task_category="count", process_answer="4")


def reply_for(plan, drop: str | None = None) -> dict:
    """A reply that follows the plan: its conditions in words, one edit per path (`drop`: one left out)."""
    words = {
        "eq": "the count is {0}", "lt": "the count is less than {0}", "gt": "the count is greater than {0}",
        "between": "the count is between {0} and {1}", "parity": "the count is {0}",
    }  # fmt: skip
    cond = {c.place: words[c.operator].format(*c.operands) for c in plan.conditions}
    inner = next(c.place for c in plan.conditions if c.place in ("then", "else"))
    clauses = {}
    for branch in ("then", "else"):
        if branch == inner:
            clauses[branch] = (
                f"if {cond[branch]}, {EDITS[branch + '/then']}, and if not, {EDITS[branch + '/else']}"
            )
        else:
            clauses[branch] = EDITS[branch]
    instruction = (
        f'Count the cubes ("How many cubes are there?"). If {cond["top"]}, {clauses["then"]}; otherwise, '
        f"{clauses['else']}. {plan.closing}"
    )
    branches = [{"path": leaf.path, "edit": EDITS[leaf.path]} for leaf in plan.leaves if leaf.path != drop]
    return {"instruction": instruction, "then_edit": None, "else_edit": None, "candidate": None, "branches": branches}


def test_a_nested_reply_round_trips_and_the_judge_hears_every_wrong_path(server: FakeOpenAI, tmp_path: Path) -> None:
    rewrite, _ = stages(server, tmp_path, NESTED)
    item = count_item()
    plan = rewrite.plan_for(item)
    assert plan.depth == 2 and len(plan.leaves) == 3 and len(plan.path) in (1, 2)
    server.script([{"content": reply_for(plan)}])
    done = run(rewrite(item))
    [request] = rewrite_requests(server)
    sent = request.body["response_format"]["json_schema"]["schema"]
    assert "branches" in sent["properties"] and "branches" in sent["required"]
    text = prompt_text(request)
    assert "nested condition inside the" in text and "exactly these paths" in text
    assert "path that holds" not in text and "expected" not in text.split("<vqa_plan>")[-1].split("</vqa_plan>")[0]
    filled = {leaf.path: leaf.edit for leaf in done.plan.leaves}
    assert filled == {leaf.path: EDITS[leaf.path] for leaf in plan.leaves}
    assert done.plan.expected_edit == EDITS[plan.path_key]
    outcome = judge_outcome(done)
    assert f"Expected outcome (the path that applies): {EDITS[plan.path_key]}" in outcome
    for path, edit in filled.items():
        if path != plan.path_key:
            assert f"- {edit}" in outcome
    assert "3. Branch:" in done.reasoning and "inside it" in done.reasoning or len(plan.path) == 1


@pytest.mark.parametrize("drop", ["first", "extra"])
def test_a_tree_that_contradicts_the_plan_gets_one_repair_then_rewrite_failed(
    server: FakeOpenAI, tmp_path: Path, drop: str
) -> None:
    rewrite, _ = stages(server, tmp_path, NESTED)
    item = count_item()
    plan = rewrite.plan_for(item)
    bad = reply_for(plan, drop=plan.leaves[0].path if drop == "first" else None)
    if drop == "extra":  # a flat if/else where the plan nests: the paths contradict the plan
        bad["branches"] = [{"path": "then", "edit": EDITS["then"]}, {"path": "else", "edit": EDITS["else"]}]
    server.script([{"content": bad}, {"content": bad}])
    with pytest.raises(Rejected) as caught:
        run(rewrite(item))
    assert caught.value.reason == RejectReason.rewrite_failed
    assert "branch tree" in caught.value.detail and "after one repair request" in caught.value.detail
    first, second = rewrite_requests(server)
    assert "branch tree" in prompt_text(second) and "broke a rule" not in prompt_text(first)


def test_a_repaired_tree_passes(server: FakeOpenAI, tmp_path: Path) -> None:
    rewrite, _ = stages(server, tmp_path, NESTED)
    item = count_item()
    plan = rewrite.plan_for(item)
    server.script([{"content": reply_for(plan, drop=plan.leaves[-1].path)}, {"content": reply_for(plan)}])
    done = run(rewrite(item))
    assert all(leaf.edit for leaf in done.plan.leaves) and len(rewrite_requests(server)) == 2


def test_an_embedded_siblings_answer_outside_its_condition_is_a_leak(server: FakeOpenAI, tmp_path: Path) -> None:
    """A sibling that sets a branch's amount: its answer (3) written as a number gives it away."""
    sibling = SiblingQA(
        id="test/spheres", question="How many spheres are there?", answer="3", category="count",
        meta={"answer_space": [str(n) for n in range(1, 9)]},
    )  # fmt: skip
    logic = {"operators": ["eq"], "nest_p": 0.0, "join_p": 0.0, "parameter_p": 1.0}
    rewrite, _ = stages(server, tmp_path, logic)
    item = count_item("test/cubes-and-spheres", [sibling])
    plan = rewrite.plan_for(item)
    assert plan.parameter is not None and plan.questions == [item.record.question, sibling.question]
    edits = {"then": "paint the large cube red", "else": "remove the small sphere"}
    edits[plan.parameter.path] = "add as many green cones as the answer to the second question"
    condition = f"the count is {plan.operands[0]}" if plan.operands else "the count is 5"
    good = {
        "instruction": (
            f'Answer (1) "How many cubes are there?" and (2) "How many spheres are there?". If {condition}, '
            f"{edits['then']}; otherwise, {edits['else']}. {plan.closing}"
        ),
        "then_edit": edits["then"], "else_edit": edits["else"], "candidate": "5",
        "branches": [{"path": p, "edit": e} for p, e in edits.items()],
    }  # fmt: skip
    server.script([{"content": good}])
    assert run(rewrite(item)).plan.leaves[0].edit
    leaky = {**good, "instruction": good["instruction"].replace("the answer to the second question", "3 cones")}
    server.script([{"content": leaky}])
    fresh, _ = stages(server, tmp_path / "fresh-cache", logic)  # the same plan, no cached reply
    with pytest.raises(Rejected) as caught:
        run(fresh(count_item("test/cubes-and-spheres", [sibling])))
    assert caught.value.reason == RejectReason.leaks_answer and "embedded question 2" in caught.value.detail


def test_the_fakes_default_reply_follows_every_drawn_form(server: FakeOpenAI, tmp_path: Path) -> None:
    """Other tests run the model pipelines against this fake unscripted: its reply follows any plan's tree."""
    full = {"operators": ["eq", "ne", "lt", "gt", "between", "parity", "one_of"], "nest_p": 0.5, "join_p": 0.5,
            "parameter_p": 0.5}  # fmt: skip
    rewrite, _ = stages(server, tmp_path, full)
    sibling = SiblingQA(id="s/q", question="Is the cube red?", answer="no", category="yes_no",
                        meta={"answer_space": ["yes", "no"]})  # fmt: skip
    forms = set()
    for i in range(24):
        item = count_item(f"test/fake-{i}", [sibling] if i % 2 else [])
        done = run(rewrite(item))
        forms.add((done.plan.operator, done.plan.depth, bool(done.plan.join)))
        assert all(leaf.edit for leaf in done.plan.leaves), (done.plan.leaves, done.plan.depth, done.plan.parameter, done.plan.join)
    assert len(forms) >= 4, forms
