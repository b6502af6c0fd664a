"""The instruction plan (plan.py) and the rewrite / judge stages that use it, the latter through the real
`openai` SDK against the fake OpenAI server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.fakes import FakeOpenAI
from uniedit_synth.backends.openai_backend import OpenAIText
from uniedit_synth.core.config import RetrySpec, load_pipeline
from uniedit_synth.core.errors import ConfigError
from uniedit_synth.core.records import RejectReason, VQARecord
from uniedit_synth.engine.calls import ModelCaller
from uniedit_synth.engine.coordinator import Coordinator
from uniedit_synth.method.answers import mentions_answer, same_answer
from uniedit_synth.method.plan import DEFAULT_STYLE_MIX, InstructionPlan, distractor, draw_plan
from uniedit_synth.run.cache import ResponseCache
from uniedit_synth.stages.base import Rejected, StageContext, WorkItem
from uniedit_synth.stages.judge import JudgeStage
from uniedit_synth.stages.rewrite import RewriteStage, is_no_op

KEY = "sk-test-plan-key"


# ---------------------------------------------------------------- the plan, drawn in code


def test_plan_is_seeded_by_pipeline_seed_and_record_id() -> None:
    first = draw_plan(0, "scenes/0-000001", "color", "purple")
    assert first == draw_plan(0, "scenes/0-000001", "color", "purple")
    plans = {draw_plan(s, f"r{i}", "color", "purple").model_dump_json() for s in (0, 1) for i in range(40)}
    assert len(plans) > 3


def test_release_coin_flip_for_style_and_candidate() -> None:
    plans = [draw_plan(0, f"r{i}", "color", "purple") for i in range(2000)]
    styles = Counter(p.style for p in plans)
    assert 0.45 <= styles["conditional"] / 2000 <= 0.55 and set(styles) == {"conditional", "synthesis"}
    conditional = [p for p in plans if p.conditional]
    share = sum(p.candidate_is_answer for p in conditional) / len(conditional)
    assert 0.45 <= share <= 0.55
    for plan in conditional:
        assert plan.expected_branch == ("then" if plan.candidate_is_answer else "else")
        assert same_answer(plan.candidate, "purple") == plan.candidate_is_answer
        assert plan.then_edit is None and plan.else_edit is None
    for category, style in (
        ("ocr", "render"),
        ("caption", "render"),
        ("location", "transform"),
    ):
        assert {draw_plan(0, f"r{i}", category, "x").style for i in range(50)} == {style}
    # beyond the release (its mix: pipelines/uniedit.yaml): a math result is also a condition's number
    assert {draw_plan(0, f"r{i}", "math", "7").style for i in range(50)} == {"conditional", "render"}
    assert all(p.candidate is None for p in plans if not p.conditional)


def test_configured_mix_and_p() -> None:
    styles = {"count": {"conditional": 1.0}}
    plans = [draw_plan(3, f"r{i}", "count", "4", styles, 0.2) for i in range(500)]
    assert all(p.conditional for p in plans)
    assert 0.15 <= sum(p.candidate_is_answer for p in plans) / 500 <= 0.25
    never = [draw_plan(3, f"r{i}", "count", "4", styles, 0.0) for i in range(100)]
    assert not any(p.candidate_is_answer for p in never)
    assert DEFAULT_STYLE_MIX["color"] == {"conditional": 0.5, "synthesis": 0.5}


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ("purple", "color"),
        ("grey", "color"),
        ("cube", "shape"),
        ("7", "number"),
        ("1", "number"),
        ("left", "side"),
    ],
)
def test_distractors_are_same_kind_and_differ_under_the_normaliser(answer: str, kind: str) -> None:
    import random

    for seed in range(40):
        other = distractor(answer, random.Random(seed))
        assert other is not None and not same_answer(other, answer)
        if kind == "number":
            assert other.isdigit() and 1 <= int(other) and abs(int(other) - int(answer)) <= 2
    assert distractor("George Orwell", random.Random(0)) is None  # asked of the rewriter instead


def test_answer_space_bounds_the_distractor_and_rules_out_undecidable_conditions() -> None:
    import random

    space = ["1", "2", "3", "4", "5"]
    for seed in range(60):
        other = distractor("5", random.Random(seed), space)
        assert other in ("3", "4")
    plans = [
        draw_plan(0, f"r{i}", "count", "1", {"count": {"conditional": 1, "synthesis": 1}}, answer_space=["1"])
        for i in range(50)
    ]
    assert not any(p.conditional for p in plans)  # one possible answer: a condition would be decided


def test_style_names_are_validated() -> None:
    with pytest.raises(ConfigError, match="unknown style"):
        load_pipeline("default", overrides={"stages": {"rewrite": {"styles": {"color": {"riddle": 1}}}}})
    with pytest.raises(ConfigError, match="candidate_is_answer_p"):
        load_pipeline("default", overrides={"stages": {"rewrite": {"candidate_is_answer_p": 1.5}}})


@pytest.mark.parametrize(
    ("edit", "no_op"),
    [
        ("leave it unchanged", True),
        ("Leave the sphere as it is", True),
        ("do nothing", True),
        ("keep it as is", True),
        ("keep the object untouched", True),
        ("do not change anything", True),
        ("make no changes", True),
        ("no change", True),
        ("nothing", True),
        ("paint it red", False),
        ("add a small yellow cube beside it", False),
        ("keep its shape but paint it red", False),
    ],
)
def test_no_op_branches_are_recognised(edit: str, no_op: bool) -> None:
    assert is_no_op(edit) == no_op


# ---------------------------------------------------------------- rewrite and judge through the real SDK


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 130, 140)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv("UE_PLAN_TEST_KEY", KEY)
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


#: what issue 25 added to the plan (operators, embedded questions, the branch tree)
LOGIC_FIELDS = (
    "operator", "operands", "questions", "answers", "depth", "join", "conditions", "path", "leaves", "parameter",
    "answer_in_condition",
)  # fmt: skip
RELEASE_LOGIC_SETTING = {"operators": ["eq"], "nest_p": 0, "join_p": 0, "parameter_p": 0, "count_arithmetic": False}


def stages(server: FakeOpenAI, tmp_path: Path, p: float) -> tuple[RewriteStage, JudgeStage]:
    config = load_pipeline(
        "uniedit",
        overrides={
            "backends": {
                "gpt4o": {"base_url": server.base_url, "api_key_env": "UE_PLAN_TEST_KEY", "timeout_s": 5}
            },
            # the release's single equality test (the logic beyond it: tests/unit/test_logic_*.py)
            "stages": {
                "rewrite": {
                    "styles": {"color": {"conditional": 1.0}},
                    "candidate_is_answer_p": p,
                    "logic": RELEASE_LOGIC_SETTING,
                }
            },
        },
    )
    backend = OpenAIText(config.backends["gpt4o"])
    cache = ResponseCache(tmp_path / "cache")
    callers = {
        name: ModelCaller(
            name,
            backend,
            cache=cache,
            coordinator=Coordinator({}),
            prices={},
            retry=RetrySpec(max_attempts=1),
            rate_limited=False,
        )
        for name in ("rewrite", "judge")
    }
    ctx = StageContext(
        config=config, callers=callers, models={"rewrite": "gpt-4o-2024-11-20", "judge": "gpt-4o-2024-11-20"}
    )
    return RewriteStage(ctx), JudgeStage(ctx)


def purple_item() -> WorkItem:
    record = VQARecord(
        id="test/tiny-sphere",
        source="test",
        image=png(),
        question="There is another tiny sphere that is the same material as the small green sphere; what is its colour?",
        answer="purple",
        category="color",
        meta={"answer_space": ["purple", "green"]},
    )
    return WorkItem(record=record, shard=0, image=png(), task_category="color", process_answer="purple")


RELEASE_STYLE = {
    "instruction": (
        "Determine the colour of the tiny sphere made of the same material as the small green sphere. If it is "
        "purple, repaint it red without changing its shape or size; if not, place a small yellow cube right "
        "beside it. Refine the image with a visually appealing, harmonious look."
    ),
    "then_edit": "repaint the tiny sphere red without changing its shape or size",
    "else_edit": "place a small yellow cube right beside the tiny sphere",
    "candidate": None,
}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def rewrite_requests(server: FakeOpenAI) -> list[Any]:
    return [r for r in server.requests if r.task == "rewrite"]


def prompt_text(request: Any) -> str:
    return "\n".join(
        m["content"] if isinstance(m["content"], str) else " ".join(p.get("text", "") for p in m["content"])
        for m in request.body["messages"]
    )


def test_release_style_reply_with_the_answer_as_candidate_is_accepted(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    server.script([{"content": RELEASE_STYLE}])
    rewrite, _ = stages(server, tmp_path, p=1.0)
    item = run(rewrite(purple_item()))
    release_fields = set(InstructionPlan.model_fields) - set(LOGIC_FIELDS)  # the plan as the release had it
    assert item.plan.model_dump(include=release_fields) == InstructionPlan(
        style="conditional",
        candidate="purple",
        candidate_is_answer=True,
        expected_branch="then",
        then_edit=RELEASE_STYLE["then_edit"],
        else_edit=RELEASE_STYLE["else_edit"],
        closing=item.plan.closing,  # drawn per record (test_closing.py)
    ).model_dump(include=release_fields)
    assert item.plan.operator == "eq" and item.plan.depth == 1 and item.plan.path == ["then"]
    assert [leaf.edit for leaf in item.plan.leaves] == [RELEASE_STYLE["then_edit"], RELEASE_STYLE["else_edit"]]
    assert item.instruction == RELEASE_STYLE["instruction"]
    [request] = rewrite_requests(server)
    sent = request.body["response_format"]["json_schema"]["schema"]
    assert set(sent["properties"]) == {"instruction", "then_edit", "else_edit", "candidate", "branches"}
    assert sorted(sent["required"]) == sorted(sent["properties"])  # strict structured outputs: nullable, required
    assert "<vqa_plan>style: conditional\ncandidate: 'purple'" in prompt_text(request)
    assert "choose ONE" not in prompt_text(request)


def test_the_same_reply_with_a_distractor_candidate_is_a_leak(server: FakeOpenAI, tmp_path: Path) -> None:
    server.script([{"content": RELEASE_STYLE}])
    rewrite, _ = stages(server, tmp_path, p=0.0)
    item = purple_item()
    with pytest.raises(Rejected) as caught:
        run(rewrite(item))
    assert caught.value.reason == RejectReason.leaks_answer and "purple" in caught.value.detail
    assert item.plan.candidate == "green" and item.plan.candidate_is_answer is False
    assert item.plan.expected_branch == "else"
    assert len(rewrite_requests(server)) == 1  # a leak is not repaired


def test_a_no_op_else_branch_gets_one_repair_request_then_rewrite_failed(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    lazy = {
        **RELEASE_STYLE,
        "instruction": RELEASE_STYLE["instruction"].replace(
            "if not, place a small yellow cube right beside it", "otherwise, leave it unchanged"
        ),
        "else_edit": "leave it unchanged",
    }
    server.script([{"content": lazy}, {"content": lazy}])
    rewrite, _ = stages(server, tmp_path, p=1.0)
    with pytest.raises(Rejected) as caught:
        run(rewrite(purple_item()))
    assert caught.value.reason == RejectReason.rewrite_failed
    assert "visible edit" in caught.value.detail and "else_edit" in caught.value.detail
    assert "after one repair request" in caught.value.detail
    first, second = rewrite_requests(server)
    assert "broke a rule of the plan (visible edit" in prompt_text(second)
    assert "broke a rule" not in prompt_text(first)


def test_a_repaired_reply_is_accepted(server: FakeOpenAI, tmp_path: Path) -> None:
    same = {**RELEASE_STYLE, "else_edit": RELEASE_STYLE["then_edit"]}
    server.script([{"content": same}, {"content": RELEASE_STYLE}])
    rewrite, _ = stages(server, tmp_path, p=1.0)
    item = run(rewrite(purple_item()))
    assert item.plan.else_edit == RELEASE_STYLE["else_edit"] and len(rewrite_requests(server)) == 2


def test_the_candidate_must_be_in_the_condition(server: FakeOpenAI, tmp_path: Path) -> None:
    vague = {
        **RELEASE_STYLE,
        "instruction": "Find the tiny sphere. If it looks nice, repaint it red; if not, add a cube.",
    }
    server.script([{"content": vague}, {"content": vague}])
    rewrite, _ = stages(server, tmp_path, p=1.0)
    with pytest.raises(Rejected) as caught:
        run(rewrite(purple_item()))
    assert (
        caught.value.reason == RejectReason.rewrite_failed and "candidate in condition" in caught.value.detail
    )


def test_the_judge_gets_the_branch_edits_never_the_answer(server: FakeOpenAI, tmp_path: Path) -> None:
    _, judge = stages(server, tmp_path, p=0.0)
    item = purple_item()
    item.plan = InstructionPlan(
        style="conditional",
        candidate="green",
        candidate_is_answer=False,
        expected_branch="else",
        then_edit="repaint the tiny sphere red",
        else_edit="place a small yellow cube beside the tiny sphere",
    )
    item.instruction = "Determine the colour of the tiny sphere. If it is green, repaint it red; if not, place a small yellow cube beside it."
    item.edited_image = png()
    server.set_reply(
        "judge", {"instruction_following": 2, "visual_quality": 5, "coherence": 5, "analysis": "wrong branch"}
    )
    passed = run(judge(item))
    assert not passed
    [request] = [r for r in server.requests if r.task == "judge"]
    text = prompt_text(request)
    assert (
        "Expected outcome (the branch that applies): place a small yellow cube beside the tiny sphere" in text
    )
    assert "Wrong outcome" in text and "repaint the tiny sphere red" in text
    outcome = text.split("<vqa_outcome>")[1].split("</vqa_outcome>")[0]
    assert not mentions_answer(outcome, "purple")
    assert "Reference answer" not in text.split("=== USER ===")[-1]
    assert json.loads(json.dumps(item.scores)) == {
        "instruction_following": 2,
        "visual_quality": 5,
        "coherence": 5,
    }
