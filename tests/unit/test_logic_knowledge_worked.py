"""Issue 25 item 5's open parts: knowledge conditions test answers the question could have given (never one
its own words settle), and a count arithmetic's sign shows the working ending in the answer."""

from __future__ import annotations

import random

from uniedit_synth.method.answers import mentions_answer, same_answer
from uniedit_synth.method.logic import FULL_LOGIC
from uniedit_synth.method.plan import draw_plan, knowledge_space
from uniedit_synth.offline import program as prog
from uniedit_synth.offline.choose import _answer_actions
from uniedit_synth.offline.questions import QueryError, generate_question, select
from uniedit_synth.offline.world import Scene, generate_scene
from uniedit_synth.sources.scenes import ScenesSource

KNOWLEDGE_ONLY_CONDITIONAL = {"knowledge": {"conditional": 1.0}}
QUESTION = "What color is the one object here that is not red and would stick to a magnet?"


def test_a_knowledge_condition_never_tests_a_value_the_questions_own_words_settle() -> None:
    """"red" is ruled out by the question's words: a condition on it is decided without answering."""
    tested = set()
    for i in range(200):
        plan = draw_plan(
            0, f"k/{i}", "knowledge", "blue", KNOWLEDGE_ONLY_CONDITIONAL, answer_space=["red", "blue", "green"],
            question=QUESTION, logic_settings=FULL_LOGIC,
        )  # fmt: skip
        assert plan.conditional
        for condition in plan.conditions:
            assert not any(same_answer(o, "red") for o in condition.operands), (condition, plan.candidate)
            tested.update(condition.operands)
        assert plan.candidate is None or not same_answer(plan.candidate, "red")
    assert {"blue", "green"} <= tested  # both branches come up: the answer and the other plausible value


def test_a_knowledge_question_without_two_plausible_answers_gets_no_condition() -> None:
    assert knowledge_space(QUESTION, "blue", None) is None  # no answer space: a generic vocabulary would guess
    assert knowledge_space(QUESTION, "blue", ["red", "blue"]) is None
    for i in range(50):
        for space in (None, ["red", "blue"]):
            plan = draw_plan(
                0, f"k/{i}", "knowledge", "blue", KNOWLEDGE_ONLY_CONDITIONAL, answer_space=space,
                question=QUESTION, logic_settings=FULL_LOGIC,
            )  # fmt: skip
            assert not plan.conditional, (space, plan.conditions)


def test_offline_knowledge_conditions_come_from_the_answer_space() -> None:
    seen = 0
    for record in ScenesSource(count=300, seed=5, categories=["knowledge"], defer_render=True):
        space = [str(v) for v in record.meta["answer_space"]]
        plan = draw_plan(
            0, record.id, "knowledge", record.answer, answer_space=space, question=record.question,
            logic_settings=FULL_LOGIC,
        )  # fmt: skip
        for condition in (c for c in plan.conditions if c.question == 0 and c.operator not in ("parity",)):
            seen += 1
            for operand in condition.operands:
                if condition.operator in ("eq", "ne", "one_of"):
                    assert any(same_answer(operand, v) for v in space), (operand, space)
                assert not mentions_answer(record.question, operand) or same_answer(operand, record.answer)
    assert seen >= 20


def _count_arith_scene() -> tuple[Scene, dict, int]:
    rng = random.Random("worked")
    for _ in range(500):
        scene = generate_scene(rng, size=128)
        try:
            _question, answer, spec = generate_question(scene, "math", rng)
        except QueryError:
            continue
        if spec["query"]["type"] == "count_arith" and scene.free_slots():
            return scene, spec["query"], int(answer)
    raise AssertionError("no count arithmetic question with a free wall slot")


def test_a_count_arithmetics_sign_shows_the_working_ending_in_the_answer() -> None:
    scene, query, value = _count_arith_scene()
    actions = _answer_actions(scene, query, value, random.Random(1), (), set(), "math")
    writes = [a for a in actions if a["op"] == "write_text"]
    assert writes and all(a.get("worked") for a in writes)
    first, second = (len(select(scene, f)) for f in query["filters"])
    edited = prog.apply_action(scene, writes[0], value)
    sign = next(s for s in edited.signs if s.slot == writes[0]["slot"])
    assert sign.text == f"{first} {query['op']} {second} = {value}"


def test_a_siblings_condition_never_states_another_embedded_answer() -> None:
    """"if there are fewer than 2 cubes" beside a question answered 2 would say that answer."""
    from uniedit_synth.core.records import SiblingQA

    sibling = SiblingQA(id="s/c", question="How many cubes are there?", answer="3", category="count",
                        meta={"answer_space": ["1", "2", "3", "4", "5"]})  # fmt: skip
    embedded = 0
    for i in range(300):
        plan = draw_plan(
            0, f"m/{i}", "math", "2", answer_space=["0", "1", "2", "3", "4"], question="What is 1 + 1?",
            siblings=[sibling], logic_settings=FULL_LOGIC,
        )  # fmt: skip
        for condition in plan.conditions:
            if condition.question > 0:
                embedded += 1
                assert not any(same_answer(o, "2") for o in condition.operands), condition
    assert embedded >= 20
