"""The rewrite stage's text gates through the real `openai` SDK against the fake server: swapped branches, a
no-op branch in other words and the same edit reworded each get one repair request, then `rewrite_failed`;
a good record whose question names the answer's word is not a leak."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import FakeOpenAI
from tests.unit.test_rewrite_plan import (
    KEY,
    RELEASE_STYLE,
    prompt_text,
    purple_item,
    rewrite_requests,
    run,
    stages,
)
from uniedit_synth.core.records import RejectReason, VQARecord
from uniedit_synth.stages.base import Rejected, WorkItem

SWAPPED = {**RELEASE_STYLE, "then_edit": RELEASE_STYLE["else_edit"], "else_edit": RELEASE_STYLE["then_edit"]}
NO_OP = {
    **RELEASE_STYLE,
    "instruction": RELEASE_STYLE["instruction"].replace(
        "if not, place a small yellow cube right beside it", "if not, the picture should stay exactly the way it looks now"
    ),
    "else_edit": "the picture should stay exactly the way it looks now",
}
SAME = {
    **RELEASE_STYLE,
    "instruction": (
        "Determine the colour of the tiny sphere made of the same material as the small green sphere. If it is "
        "purple, repaint it white; if not, paint it in a white colour. Change nothing else."
    ),
    "then_edit": "repaint the tiny sphere white",
    "else_edit": "paint the tiny sphere in a white colour",
}
#: the reported edits say one thing, the instruction's clauses the other way round
LYING = {
    **RELEASE_STYLE,
    "instruction": (
        "Determine the colour of the tiny sphere made of the same material as the small green sphere. Unless it "
        "is purple, repaint it red; otherwise place a small yellow cube right beside it. Change nothing else."
    ),
}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv("UE_PLAN_TEST_KEY", KEY)
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@pytest.mark.parametrize(
    ("bad", "rule"),
    [
        (SWAPPED, "swapped"),
        (LYING, "swapped"),
        (NO_OP, "visible edit"),
        (SAME, "distinct branches"),
    ],
)
def test_one_repair_request_then_rewrite_failed(server: FakeOpenAI, tmp_path: Path, bad: dict, rule: str) -> None:
    server.script([{"content": bad}, {"content": bad}])
    rewrite, _ = stages(server, tmp_path, p=1.0)
    with pytest.raises(Rejected) as caught:
        run(rewrite(purple_item()))
    assert caught.value.reason == RejectReason.rewrite_failed
    assert rule in caught.value.detail and "after one repair request" in caught.value.detail
    first, second = rewrite_requests(server)
    assert rule in prompt_text(second) and "broke a rule" not in prompt_text(first)


@pytest.mark.parametrize("bad", [SWAPPED, NO_OP, SAME, LYING])
def test_a_repaired_reply_passes(server: FakeOpenAI, tmp_path: Path, bad: dict) -> None:
    server.script([{"content": bad}, {"content": RELEASE_STYLE}])
    rewrite, _ = stages(server, tmp_path, p=1.0)
    item = run(rewrite(purple_item()))
    assert item.plan.then_edit == RELEASE_STYLE["then_edit"] and len(rewrite_requests(server)) == 2


def test_the_question_naming_the_answer_word_is_not_a_leak(server: FakeOpenAI, tmp_path: Path) -> None:
    record = VQARecord(
        id="test/square", source="test", image=purple_item().image, category="color", answer="red",
        question="What colour is the square left of the red circle?", meta={"answer_space": ["red", "blue"]},
    )
    item = WorkItem(record=record, shard=0, image=record.image, task_category="color", process_answer="red")
    reply = {
        "instruction": (
            "Work out the colour of the square left of the red circle. If it is blue, enlarge the square; "
            "otherwise, add a small green cone beside it. Change nothing else."
        ),
        "then_edit": "enlarge the square", "else_edit": "add a small green cone beside the square", "candidate": None,
    }
    server.script([{"content": reply}])
    rewrite, _ = stages(server, tmp_path, p=0.0)
    done = run(rewrite(item))
    assert done.plan.candidate == "blue" and done.instruction == reply["instruction"]
    leaky = {**reply, "instruction": reply["instruction"].replace("enlarge the square", "paint the square red")}
    server.script([{"content": leaky}])
    item.record = record.model_copy(update={"id": "test/square-2"})
    with pytest.raises(Rejected) as caught:
        run(rewrite(item))
    assert caught.value.reason == RejectReason.leaks_answer
