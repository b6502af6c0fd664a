"""The evidence-first judge through the real `openai` SDK against the fake OpenAI server: the request's schema
lists the observations before the scores, and a lenient 5/5/5 reply that observed the other branch (or a
change outside the target) is rejected with a reject_detail that says why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import FakeOpenAI
from tests.unit.test_rewrite_plan import KEY, png, purple_item, run, stages
from uniedit_synth.method.plan import InstructionPlan

LENIENT = {"instruction_following": 5, "visual_quality": 5, "coherence": 5, "analysis": "Looks great."}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv("UE_PLAN_TEST_KEY", KEY)
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


def judged_item():
    item = purple_item()
    item.plan = InstructionPlan(
        style="conditional",
        candidate="green",
        candidate_is_answer=False,
        expected_branch="else",
        then_edit="repaint the tiny sphere red",
        else_edit="place a small yellow cube beside the tiny sphere",
    )
    item.instruction = (
        "Determine the colour of the tiny sphere. If it is green, repaint it red; if not, place a small yellow "
        "cube beside it. Change nothing else."
    )
    item.edited_image = png()
    return item


def test_request_schema_lists_observations_before_scores(server: FakeOpenAI, tmp_path: Path) -> None:
    _, judge = stages(server, tmp_path, p=0.0)
    assert run(judge(judged_item()))  # the fake's default judge: expected branch, nothing else changed
    [request] = [r for r in server.requests if r.task == "judge"]
    schema = request.body["response_format"]["json_schema"]["schema"]
    keys = list(schema["properties"])
    assert keys == [
        "observed_changes",
        "branch_observed",
        "changes_outside_target",
        "analysis",
        "instruction_following",
        "visual_quality",
        "coherence",
    ]
    assert request.body["response_format"]["json_schema"]["strict"] is True
    assert set(schema["required"]) == set(keys)
    system = request.body["messages"][0]["content"]
    assert system.index("`observed_changes`") < system.index("`instruction_following`:")


@pytest.mark.parametrize(
    ("observed", "why"),
    [
        ({"branch_observed": "other", "changes_outside_target": False}, "branch_observed=other"),
        ({"branch_observed": "both", "changes_outside_target": False}, "branch_observed=both"),
        ({"branch_observed": "none", "changes_outside_target": False}, "branch_observed=none"),
        ({"branch_observed": "expected", "changes_outside_target": True}, "changes_outside_target"),
    ],
)
def test_a_lenient_5_5_5_judge_that_saw_a_defect_is_rejected(
    server: FakeOpenAI, tmp_path: Path, observed: dict, why: str
) -> None:
    _, judge = stages(server, tmp_path, p=0.0)
    server.script([{"content": {"observed_changes": "a red sphere", **observed, **LENIENT}}])
    item = judged_item()
    assert run(judge(item)) is False
    assert item.scores == {"instruction_following": 5, "visual_quality": 5, "coherence": 5}
    detail = judge.failed_thresholds(item)
    assert why in detail and "observed: a red sphere" in detail


def test_a_lenient_judge_that_saw_the_expected_branch_passes(server: FakeOpenAI, tmp_path: Path) -> None:
    _, judge = stages(server, tmp_path, p=0.0)
    seen = {
        "observed_changes": "a yellow cube",
        "branch_observed": "expected",
        "changes_outside_target": False,
    }
    server.script([{"content": {**seen, **LENIENT}}])
    item = judged_item()
    assert run(judge(item)) is True and judge.failed_thresholds(item) == ""


def test_exact_content_needs_instruction_following_4(server: FakeOpenAI, tmp_path: Path) -> None:
    _, judge = stages(server, tmp_path, p=0.0)
    seen = {
        "observed_changes": "a sign",
        "branch_observed": "not_conditional",
        "changes_outside_target": False,
    }
    item = judged_item()
    item.plan = InstructionPlan(style="render")
    server.script([{"content": {**seen, **LENIENT, "instruction_following": 3}}])
    assert run(judge(item)) is False and "instruction_following 3.0 < 4" in judge.failed_thresholds(item)
    item.plan = InstructionPlan(style="synthesis")  # not exact content: 3 passes
    server.script([{"content": {**seen, **LENIENT, "instruction_following": 3}}])
    assert run(judge(item)) is True
