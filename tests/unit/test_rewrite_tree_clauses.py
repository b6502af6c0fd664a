"""A tree plan's reply against the instruction's own clauses (stages/rewrite.py `tree_sides_swapped`): the
edits reported under `then` must sit in the clauses that run when the top condition holds."""

from __future__ import annotations

from tests.fakes.real_trees import read_tree, tree_body
from uniedit_synth.core.plan import InstructionPlan, PlanCondition, PlanLeaf
from uniedit_synth.stages.rewrite import check_reply, plan_brief
from uniedit_synth.stages.schemas import RewriteReply

A = "repaint the small cube gold"
B = "place a small teal paper lantern right beside the small cube"
C = "hang a navy banner on the back wall"


def _plan(operator: str, operands: list[str], nested: PlanCondition | None = None) -> InstructionPlan:
    conditions = [PlanCondition(operator=operator, operands=operands, holds=False)]
    paths = ["then", "else"]
    if nested is not None:
        conditions.append(nested)
        paths = (
            ["then/then", "then/else", "else"]
            if nested.place == "then"
            else ["then", "else/then", "else/else"]
        )
    return InstructionPlan(
        style="conditional", operator=operator, operands=operands, depth=2 if nested else 1,
        questions=["How many cubes are there?"], answers=["3"], conditions=conditions,
        path=["else"] if nested is None or nested.place == "then" else ["else", "then"],
        leaves=[PlanLeaf(path=p) for p in paths],
    )  # fmt: skip


def _reply(instruction: str, edits: dict[str, str]) -> RewriteReply:
    return RewriteReply(instruction=instruction, branches=[{"path": p, "edit": e} for p, e in edits.items()])


def test_a_depth_one_tree_whose_edits_are_swapped_against_the_clauses_is_caught() -> None:
    plan = _plan("gt", ["4"])
    text = f"How many cubes are there? If the answer is greater than 4, {A}; otherwise, {B}."
    assert check_reply(plan, _reply(text, {"then": A, "else": B}), "3", "3") is None
    broken = check_reply(plan, _reply(text, {"then": B, "else": A}), "3", "3")
    assert broken is not None and broken.startswith("branches match the text")


def test_ne_reads_is_not_as_the_side_where_the_condition_holds() -> None:
    plan = _plan("ne", ["red"])
    text = f"What colour is the cube? If the answer is not red, {A}; otherwise, {B}."
    assert check_reply(plan, _reply(text, {"then": A, "else": B}), "blue", "blue") is None
    assert "swapped" in (check_reply(plan, _reply(text, {"then": B, "else": A}), "blue", "blue") or "")


def test_a_nested_tree_whose_top_sides_are_exchanged_is_caught() -> None:
    nested = PlanCondition(place="then", operator="eq", operands=["5"], holds=False)
    plan = _plan("gt", ["4"], nested)
    text = (f"How many cubes are there? If the answer is greater than 4, then if it is 5, {A}, otherwise {B}. "
            f"If the answer is not greater than 4, {C}.")  # fmt: skip
    good = {"then/then": A, "then/else": B, "else": C}
    assert check_reply(plan, _reply(text, good), "3", "3") is None
    swapped = {"then/then": C, "then/else": B, "else": A}
    assert "swapped" in (check_reply(plan, _reply(text, swapped), "3", "3") or "")


def test_the_realistic_fake_reads_a_tree_brief_and_writes_clauses_that_follow_it() -> None:
    nested = PlanCondition(place="else", operator="parity", operands=["odd"], holds=True)
    plan = _plan("between", ["5", "6"], nested)
    tree = read_tree(plan_brief(plan))
    assert tree is not None and tree.paths == ["then", "else/then", "else/else"]
    assert (
        tree.path_for("3") == "else/then"
        and tree.path_for("5") == "then"
        and tree.path_for("2") == "else/else"
    )
    edits = {"then": A, "else/then": B, "else/else": C}
    text = "How many cubes are there? " + tree_body(tree, edits, seed=0)
    assert check_reply(plan, _reply(text, edits), "3", "3") is None
