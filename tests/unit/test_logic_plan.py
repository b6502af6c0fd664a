"""The plan's logic drawn in code (issue 25): operators and their truth on normalised answers, conditions never
decided in advance, nesting, joins, switches, capped count parameters, the path that holds, the row contract
and the reasoning trace that walks the path."""

from __future__ import annotations

from collections import Counter

import pytest

from uniedit_synth.core.plan import InstructionPlan, PlanLeaf
from uniedit_synth.core.records import Sample, SiblingQA, row_to_sample, samples_to_table
from uniedit_synth.method.logic import FULL_LOGIC, MAX_NEW_OBJECTS, decided, holds, join_truth, reaching
from uniedit_synth.method.plan import draw_plan
from uniedit_synth.method.reasoning import check_trace, template_trace

COUNTS = [str(n) for n in range(1, 9)]
COLOURS = ["red", "blue", "green", "yellow"]


@pytest.mark.parametrize(
    ("operator", "operands", "answer", "expected"),
    [
        ("eq", ["3"], "three", True),
        ("eq", ["red"], "Red.", True),
        ("ne", ["red"], "blue", True),
        ("lt", ["4"], "3", True),
        ("lt", ["4"], "4", False),
        ("gt", ["4"], "five", True),
        ("between", ["2", "4"], "4", True),
        ("between", ["2", "4"], "5", False),
        ("parity", ["even"], "6", True),
        ("parity", ["odd"], "6", False),
        ("one_of", ["red", "blue"], "blue", True),
        ("one_of", ["red", "blue"], "green", False),
        ("statement", [], "Yes", True),
        ("statement", [], "no", False),
    ],
)
def test_operators_hold_on_normalised_answers(operator: str, operands: list, answer: str, expected: bool) -> None:
    assert holds(operator, operands, answer) is expected


def test_a_number_operator_on_a_word_is_an_error_and_counts_as_decided() -> None:
    with pytest.raises(ValueError):
        holds("lt", ["3"], "red")
    assert decided("lt", ["3"], ["red", "blue"]) and not decided("lt", ["3"], ["1", "5"])


def plans(category: str, answer: str, space: list[str] | None, n: int = 300, **kwargs) -> list[InstructionPlan]:
    return [
        draw_plan(0, f"r{i}", category, answer, answer_space=space, question="Q?", logic_settings=FULL_LOGIC, **kwargs)
        for i in range(n)
    ]


def test_every_operator_comes_up_and_no_condition_is_decided_in_advance() -> None:
    seen: Counter[str] = Counter()
    for plan in plans("count", "4", COUNTS, styles={"count": {"conditional": 1.0}}) + plans(
        "color", "red", COLOURS, styles={"color": {"conditional": 1.0}}
    ):
        seen[plan.operator] += 1
        space = COUNTS if plan.answers[0] == "4" else COLOURS
        top = next(c for c in plan.conditions if c.place == "top")
        if top.operands:
            assert not decided(top.operator, top.operands, space), top
        assert top.holds == holds(top.operator, top.operands, plan.answers[0])
        for inner in (c for c in plan.conditions if c.place in ("then", "else")):
            reach = reaching(top, space, inner.place)
            assert not decided(inner.operator, inner.operands, reach), (top, inner, reach)
    assert set(seen) == {"eq", "ne", "lt", "gt", "between", "parity", "one_of"}, seen


def test_the_path_is_computed_from_the_answer_and_the_leaves_match_the_depth() -> None:
    nested = 0
    for plan in plans("count", "4", COUNTS, styles={"count": {"conditional": 1.0}}):
        top = next(c for c in plan.conditions if c.place == "top")
        assert plan.path[0] == ("then" if top.holds else "else") == plan.expected_branch
        inner = next((c for c in plan.conditions if c.place in ("then", "else")), None)
        assert plan.depth == (2 if inner else 1)
        if inner is not None:
            nested += 1
            assert {leaf.path for leaf in plan.leaves} == {
                *(f"{inner.place}/{b}" for b in ("then", "else")), "else" if inner.place == "then" else "then"
            }
            if inner.place == plan.path[0]:
                assert plan.path[1] == ("then" if inner.holds else "else")
        else:
            assert [leaf.path for leaf in plan.leaves] == ["then", "else"]
    assert 0.15 <= nested / 300 <= 0.45, nested


def test_the_plan_is_pure_and_the_release_logic_stays_one_equality_test() -> None:
    first = plans("count", "4", COUNTS, n=50)
    assert first == plans("count", "4", COUNTS, n=50)
    release = [draw_plan(0, f"r{i}", "count", "4", answer_space=COUNTS) for i in range(300)]
    assert {p.operator for p in release if p.conditional} == {"eq"} and {p.depth for p in release} <= {0, 1}
    # the release's draws are unchanged by the logic: same style, candidate and branch as before issue 25
    for old, new in zip(release, plans("count", "4", COUNTS, n=300), strict=True):
        assert old.style == new.style


def test_yes_no_is_a_statement_and_multiple_choice_a_switch_with_a_case_per_option() -> None:
    for plan in plans("yes_no", "no", ["yes", "no"], n=100):
        assert plan.operator == "statement" and plan.path == ["else"] and plan.candidate_is_answer is False
    for plan in plans("multi-choice", "blue", ["red", "blue", "green", "cyan", "pink"], n=100):
        assert plan.operator == "switch" and 3 <= len(plan.operands) <= 4 and "blue" in plan.operands
        assert plan.path == ["case:blue"] and [leaf.path for leaf in plan.leaves] == [f"case:{o}" for o in plan.operands]


def siblings() -> list[SiblingQA]:
    return [
        SiblingQA(id="s/1", question="How many spheres are there?", answer="3", category="count",
                  meta={"answer_space": COUNTS}),
        SiblingQA(id="s/2", question="Is the cube red?", answer="yes", category="yes_no",
                  meta={"answer_space": ["yes", "no"]}),
    ]  # fmt: skip


def test_siblings_are_joined_nested_and_used_as_capped_parameters() -> None:
    joined = nested_on_sibling = parameters = 0
    for plan in plans("color", "red", COLOURS, siblings=siblings(), styles={"color": {"conditional": 1.0}}):
        assert plan.questions[0] == "Q?" and len(plan.questions) == len(plan.answers) <= 3
        by_text = {s.question: s.answer for s in siblings()}
        assert all(by_text[q] == a for q, a in zip(plan.questions[1:], plan.answers[1:], strict=True))
        if plan.join:
            joined += 1
            top, second = plan.conditions[0], plan.conditions[1]
            assert plan.path[0] == ("then" if join_truth(plan.join, top.holds, second.holds) else "else")
        if any(c.place in ("then", "else") and c.question > 0 for c in plan.conditions):
            nested_on_sibling += 1
        if plan.parameter is not None:
            parameters += 1
            p = plan.parameter
            assert plan.answers[p.question] == "3" and p.path in {leaf.path for leaf in plan.leaves}
            assert p.value == {"same": 3, "plus_one": 4, "all_but_one": 2}[p.formula] <= MAX_NEW_OBJECTS
    assert joined > 50 and nested_on_sibling > 15 and parameters > 25, (joined, nested_on_sibling, parameters)


def test_count_synthesis_is_capped_arithmetic() -> None:
    for answer in ("1", "5", "6", "14"):
        for plan in plans("count", answer, None, n=60, styles={"count": {"synthesis": 1.0}}):
            p = plan.parameter
            assert p is not None and p.question == 0
            n = int(answer)
            assert p.value == {"same": n, "plus_one": n + 1, "all_but_one": n - 1}[p.formula]
            assert p.formula == "all_but_one" or p.value <= MAX_NEW_OBJECTS
            assert n > 1 or p.formula != "all_but_one"


def test_expected_and_wrong_edits_follow_the_path_and_the_row_round_trips() -> None:
    plan = next(p for p in plans("count", "4", COUNTS, styles={"count": {"conditional": 1.0}}) if p.depth == 2)
    leaves = [PlanLeaf(path=leaf.path, edit=f"edit {leaf.path}") for leaf in plan.leaves]
    plan = plan.model_copy(update={"leaves": leaves})
    assert plan.expected_edit == f"edit {plan.path_key}"
    assert sorted(plan.wrong_edits) == sorted(f"edit {leaf.path}" for leaf in leaves if leaf.path != plan.path_key)
    sample = Sample(id="x/1", source="x", shard=0, task_category="count", instruction_plan=plan)
    table = samples_to_table([sample])
    assert row_to_sample(table.to_pylist()[0]).instruction_plan == plan
    trace = template_trace("How many cubes?", "4", plan, plan.expected_edit)
    assert check_trace(trace, plan, "4", plan.expected_edit) is None
    assert "the value asked by question 1" in trace and ("inside it" in trace) == (len(plan.path) == 2)
    wrong = trace.replace(plan.expected_edit, plan.wrong_edits[0])
    assert check_trace(wrong, plan, "4", plan.expected_edit) is not None
