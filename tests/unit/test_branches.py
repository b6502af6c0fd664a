"""Branches checked against the text (method/branches.py): then_edit must sit in the clause that runs when the
condition holds and else_edit in the other, whatever the connective; a swap is caught."""

from __future__ import annotations

import pytest

from uniedit_synth.method.branches import branch_mismatch, read_branches

Q = "Work out the colour of the tiny sphere."
C = "purple"
#: (instruction template, with {T} the clause that runs when the answer is the candidate and {E} the other)
TEMPLATES = [
    "{q} If it is {c}, {T}; otherwise, {E}.",
    "{q} If it is {c}, {T}. If not, {E}.",
    "{q} If it is {c}, {T}, or else {E}.",
    "{q} {Tc} if it is {c}, or else {E}.",
    "{q} {Tc} if it is {c}; otherwise {E}.",
    "{q} Unless it is {c}, {E}; if it is, {T}.",
    "{q} Unless it is {c}, {E}. Otherwise, {T}.",
    "{q} {Ec} unless it is {c}, in which case {T}.",
    "{q} If it is not {c}, {E}; otherwise, {T}.",
    "{q} If it isn't {c}, {E}. If it is, {T}.",
    "{q} When it isn't {c}, {E}; in every other case, {T}.",
    "{q} When it is {c}, {T}; in every other case, {E}.",
    "{q} Should it be {c}, {T}; otherwise {E}.",
    "{q} Check whether it is {c}: if so, {T}; if not, {E}.",
    "{q} If it is {c}, {T}. If it is any other colour, {E}.",
    "{q} If the answer is {c}, {T}. If the answer is anything else, {E}.",
    "{q} In case it is {c}, {T}; in all other cases, {E}.",
    "{q} If it is {c} then {T}, else {E}.",
    "{q} Then, if it is {c}, {T}. If that is not the case, {E}.",
    "{q} If it is anything other than {c}, {E}; otherwise {T}.",
    "{q} If the answer is different from {c}, {E}; if it is {c}, {T}.",
    "{q} Provided that it is {c}, {T}; failing that, {E}.",
    "{q} As long as it is {c}, {T}. In any other case, {E}.",
    "{q} {Tc} when it is {c}, otherwise {E}.",
    "{q} If it's {c}, {T}, but if it's not, {E}.",
    "{q} If it is {c}, {T} and otherwise {E}.",
    "{q} If the sphere turns out to be {c}, {T}. Should it not be, {E}.",
    "{q} If it is {c}, {T}; if it is not {c}, {E}.",
    "{q} Whenever it is {c}, {T}; else {E}.",
    "{q} Only if it is {c}, {T}; in the other case, {E}.",
    "{q} If {c} is the colour you find, {T}; otherwise {E}.",
    "{q} If it is {c} {T}; otherwise {E}.",
    "{q} If it is {c}, {T}. For any other colour, {E}.",
    "{q} If it is {c}, {T}, but if it is green, {E}.",
    "{q} If it is {c}, {T}. Alternatively, {E}.",
]
#: (then clause as the instruction words it, else clause, then_edit as reported, else_edit as reported)
EDITS = [
    ("repaint it red", "place a small yellow cube beside it",
     "repaint the tiny sphere red", "place a small yellow cube beside the tiny sphere"),
    ("remove the cone", "make the cone larger", "remove the cone", "make the cone larger"),
    ("paint the sphere red", "paint the sphere blue", "paint the sphere red", "paint the sphere blue"),
    ("recolour it gold", "put a little green box next to it",
     "paint the tiny sphere gold", "add a small green cube beside the tiny sphere"),
]
CASES = [(t, e) for t in TEMPLATES for e in EDITS]


def instruction(template: str, edits: tuple[str, str, str, str]) -> str:
    then_clause, else_clause = edits[0], edits[1]
    return template.format(q=Q, c=C, T=then_clause, E=else_clause, Tc=then_clause[:1].upper() + then_clause[1:],
                           Ec=else_clause[:1].upper() + else_clause[1:])


def test_the_table_is_big_enough() -> None:
    assert len(TEMPLATES) >= 30 and len(CASES) >= 120


@pytest.mark.parametrize(("template", "edits"), CASES)
def test_branches_in_their_clauses_pass_and_swapped_ones_are_caught(template: str, edits: tuple) -> None:
    text = instruction(template, edits)
    then_edit, else_edit = edits[2], edits[3]
    branches = read_branches(text, C)
    assert branch_mismatch(text, then_edit, else_edit, C) is None, (text, branches.then_text, branches.else_text)
    swapped = branch_mismatch(text, else_edit, then_edit, C)
    assert swapped is not None and "swapped" in swapped, (text, branches.then_text, branches.else_text)


NESTED = [
    # a nested condition inside the else branch: its "if not" is not the top-level else
    ("{q} If it is {c}, paint it red; otherwise, if the cube is large, remove the cube, and if not, add a cone.",
     "paint the sphere red", "if the cube is large, remove the cube, and if not, add a cone"),
    ("{q} When it is {c}, paint it red; in every other case, when the cube is large, remove it, but otherwise add a cone.",
     "paint the sphere red", "when the cube is large, remove the cube, but otherwise add a cone"),
    # a nested condition inside the then branch
    ("{q} If it is {c}, then if the cube is large, remove the cube, otherwise shrink the cube; if it is not {c}, add a cone.",
     "if the cube is large, remove the cube, otherwise shrink the cube", "add a cone"),
    ("{q} Then, if it is {c}, add a cone. If not, if it is less than 5, put up a sign showing HONEY, and if not, remove the cube.",
     "add a cone", "if it is less than 5, put up a sign showing HONEY, and if not, remove the cube"),
]


@pytest.mark.parametrize(("template", "then_edit", "else_edit"), NESTED)
def test_nested_conditions_stay_inside_their_branch(template: str, then_edit: str, else_edit: str) -> None:
    text = template.format(q=Q, c=C)
    assert branch_mismatch(text, then_edit, else_edit, C) is None, read_branches(text, C)
    assert branch_mismatch(text, else_edit, then_edit, C) is not None


def test_closing_sentence_is_not_a_branch() -> None:
    closing = "Leave everything else exactly as it is."
    text = f"{Q} If it is {C}, paint it red. Otherwise, add a cone. {closing}"
    branches = read_branches(text, C, closing)
    assert branches.then_text == "paint it red" and branches.else_text == "add a cone"


def test_no_condition_on_the_candidate_or_a_missing_branch() -> None:
    assert "no condition" in branch_mismatch(f"{Q} If it looks nice, paint it red; otherwise add a cone.",
                                             "paint it red", "add a cone", C)
    assert "no clause" in branch_mismatch(f"{Q} If it is {C}, paint it red.", "paint it red", "add a cone", C)


def test_edits_that_are_not_in_the_instruction() -> None:
    text = f"{Q} If it is {C}, paint it red; otherwise, add a cone."
    assert "do not appear" in branch_mismatch(text, "rotate the cylinder", "blur the wall", C)
