"""The logic of a conditional plan: operators, their truth on normalised answers, and the seeded draws of
operands, joined conditions, nested conditions, switches and count parameters (method/plan.py calls these).

Every truth here is computed from answers under `normalise_answer`; the rewriter is told an operator and its
operands, never which branch holds. An operand set is only drawn when its truth is *not* decided in advance:
over the answer space the question could have answered (or the answers that reach a nested branch), the
condition must hold for some and fail for others.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.plan import InstructionPlan, PlanCondition, PlanParameter
from .answers import leaks_answer, normalise_answer, same_answer

#: operators of a condition on one answer; `statement` is a yes/no question's own statement ("the large sphere
#: is red"), `switch` a multiple-choice question with one branch per option
OPERATORS: tuple[str, ...] = ("eq", "ne", "lt", "gt", "between", "parity", "one_of", "statement", "switch")
NUMERIC_OPERATORS: dict[str, float] = {
    "eq": 0.25, "ne": 0.1, "lt": 0.15, "gt": 0.15, "between": 0.15, "parity": 0.1, "one_of": 0.1,
}  # fmt: skip
VALUE_OPERATORS: dict[str, float] = {"eq": 0.45, "ne": 0.25, "one_of": 0.3}
@dataclass(frozen=True)
class LogicSettings:
    """What the plan may draw (core/specs.py LogicSpec, `stages.rewrite.logic`)."""

    operators: tuple[str, ...] = ("eq", "ne", "lt", "gt", "between", "parity", "one_of")
    nest_p: float = 0.35
    join_p: float = 0.5
    parameter_p: float = 0.5
    count_arithmetic: bool = True


#: the release's logic: one equality test, no nesting, no second question, "add exactly that many"
RELEASE_LOGIC = LogicSettings(operators=("eq",), nest_p=0.0, join_p=0.0, parameter_p=0.0, count_arithmetic=False)
FULL_LOGIC = LogicSettings()
#: most new objects a count may ask for ("add one more than there are cubes": at most this many)
MAX_NEW_OBJECTS = 6
#: a multiple-choice switch has at least this many cases and at most SWITCH_MAX
SWITCH_MIN, SWITCH_MAX = 3, 4
_NUMBER = re.compile(r"-?\d+")


def as_number(value: str) -> int | None:
    norm = normalise_answer(str(value))
    return int(norm) if _NUMBER.fullmatch(norm) else None


def holds(operator: str, operands: Sequence[str], answer: str) -> bool:
    """Does the condition `operator(operands)` hold for `answer` (normalised)? `switch` has no truth."""
    norm = normalise_answer(str(answer))
    if operator == "eq":
        return same_answer(norm, operands[0])
    if operator == "ne":
        return not same_answer(norm, operands[0])
    if operator == "one_of":
        return any(same_answer(norm, o) for o in operands)
    if operator == "statement":
        return norm == "yes"
    number = as_number(norm)
    if number is None:
        raise ValueError(f"operator {operator!r} needs a number, the answer is {answer!r}")
    if operator == "lt":
        return number < int(operands[0])
    if operator == "gt":
        return number > int(operands[0])
    if operator == "between":
        return int(operands[0]) <= number <= int(operands[1])
    if operator == "parity":
        return number % 2 == (0 if operands[0] == "even" else 1)
    raise ValueError(f"unknown operator {operator!r}")


def decided(operator: str, operands: Sequence[str], space: Sequence[str]) -> bool:
    """Is the condition's truth the same for every answer of `space` (decided in advance)?"""
    try:
        return len({holds(operator, operands, v) for v in space}) < 2
    except ValueError:
        return True


def numeric_space(answer: str, space: Sequence[str] | None) -> list[str]:
    """The numbers a count-like question could have answered: its answer space, else a window around it."""
    if space:
        numbers = [str(as_number(v)) for v in space if as_number(v) is not None]
        if numbers:
            return sorted(set(numbers), key=int)
    n = as_number(answer) or 0
    return [str(v) for v in range(max(0, n - 3), n + 4)]


def draw_operands(
    operator: str, answer: str, space: Sequence[str], rng: random.Random, want: bool | None = None
) -> list[str] | None:
    """Operands for `operator` such that its truth depends on the answer over `space` (None: none fits).
    The operands make the condition hold for `answer` when `want` (a fair coin when None) and that is
    possible, so both branches come up about as often."""
    want = rng.random() < 0.5 if want is None else want
    options: list[list[str]] = []
    values = list(dict.fromkeys(normalise_answer(v) for v in space))
    if operator in ("eq", "ne"):
        options = [[v] for v in values]
    elif operator == "one_of":
        for size in (2, 3):
            for _ in range(12):
                if len(values) > size:
                    options.append(sorted(rng.sample(values, size)))
    elif operator in ("lt", "gt"):
        options = [[v] for v in values]
    elif operator == "between":
        numbers = sorted({int(v) for v in values if as_number(v) is not None})
        options = [[str(a), str(b)] for a in numbers for b in numbers if b - a in (1, 2)]
    elif operator == "parity":
        options = [["even"], ["odd"]]
    usable = [o for o in options if not decided(operator, o, values)]
    if not usable:
        return None
    try:
        preferred = [o for o in usable if holds(operator, o, answer) == want]
    except ValueError:
        return None
    return rng.choice(preferred or usable)


def draw_condition(
    question: int,
    answer: str,
    space: Sequence[str] | None,
    category: str | None,
    rng: random.Random,
    place: str = "top",
    exclude: tuple[str, ...] = (),
    want: bool | None = None,
) -> PlanCondition | None:
    """One condition on one question's answer: a statement for yes/no, else an operator drawn by the kind
    of answer (numbers: all seven; other values: eq, ne, one_of), with operands from its answer space."""
    norm = normalise_answer(answer)
    if category == "yes_no" or norm in ("yes", "no"):
        if "statement" in exclude or norm not in ("yes", "no"):
            return None
        return PlanCondition(place=place, question=question, operator="statement", holds=norm == "yes")
    if as_number(norm) is not None:
        table, values = NUMERIC_OPERATORS, numeric_space(norm, space)
    else:
        if not space:
            return None
        table, values = VALUE_OPERATORS, [str(v) for v in space]
    names = [n for n in sorted(table) if n not in exclude]
    while names:
        operator = rng.choices(names, weights=[table[n] for n in names])[0]
        operands = draw_operands(operator, norm, values, rng, want)
        if operands is not None:
            return PlanCondition(
                place=place, question=question, operator=operator, operands=operands,
                holds=holds(operator, operands, norm),
            )  # fmt: skip
        names.remove(operator)
    return None


def reaching(condition: PlanCondition, space: Sequence[str], branch: str) -> list[str]:
    """The answers of `space` that reach `branch` ("then" / "else") of a condition on the same question."""
    want = branch == "then"
    out = []
    for value in space:
        try:
            if holds(condition.operator, condition.operands, value) == want:
                out.append(value)
        except ValueError:
            continue
    return out


def switch_options(answer: str, space: Sequence[str] | None, rng: random.Random) -> list[str] | None:
    """The cases of a multiple-choice switch: the question's options (SWITCH_MIN..SWITCH_MAX of them, the
    answer among them), in a drawn order; None when there are too few."""
    values = list(dict.fromkeys(normalise_answer(str(v)) for v in space or ()))
    norm = normalise_answer(answer)
    if norm not in values or len(values) < SWITCH_MIN:
        return None
    others = [v for v in values if v != norm]
    chosen = [norm, *rng.sample(others, min(len(others), SWITCH_MAX - 1))]
    rng.shuffle(chosen)
    return chosen


def draw_parameter(
    question: int, answer: str, path: str, rng: random.Random, adding_only: bool = False
) -> PlanParameter | None:
    """Capped count arithmetic for a branch (or a synthesis): add as many as the answer, one more than the
    answer (never more than MAX_NEW_OBJECTS new objects), or remove all but one of the counted objects."""
    n = as_number(answer)
    if n is None or n < 1:
        return None
    formulas = []
    if n <= MAX_NEW_OBJECTS:
        formulas.append(("same", n))
    if n + 1 <= MAX_NEW_OBJECTS:
        formulas.append(("plus_one", n + 1))
    if n >= 2 and not adding_only:
        formulas.append(("all_but_one", n - 1))
    if not formulas:
        return None
    formula, value = rng.choice(formulas)
    return PlanParameter(question=question, formula=formula, value=value, path=path)


def join_truth(join: str | None, first: bool, second: bool | None) -> bool:
    if join is None or second is None:
        return first
    return (first and second) if join == "and" else (first or second)


def plan_leak(
    instruction: str, plan: InstructionPlan, answer: str, process_answer: str | None = None, question: str = ""
) -> str | None:
    """The answer form an instruction gives away, for every question the plan embeds: the record's answer
    (allowed in the condition when the plan tests it there), and each sibling's answer (allowed in a
    condition only where it is one of that question's operands). The words of every embedded question are
    allowed inside the instruction's copy of it."""
    asked = list(dict.fromkeys(q.strip() for q in (*plan.questions, question) if q and q.strip()))
    questions = " ; ".join(asked) or None
    for text in asked:  # a verbatim copy of a question says no more than the question (a choice's options)
        instruction = re.sub(re.escape(text), " ", instruction, flags=re.IGNORECASE)
    leaked = leaks_answer(
        instruction, answer, process_answer, question=questions,
        candidate_is_answer=bool(plan.candidate_is_answer if plan.answer_in_condition is None else plan.answer_in_condition),
    )  # fmt: skip
    if leaked:
        return leaked
    for index, other in enumerate(plan.answers[1:], 1):
        allow = any(
            c.question == index and any(same_answer(o, other) for o in c.operands) for c in plan.conditions
        )
        leaked = leaks_answer(instruction, other, candidate_is_answer=allow, question=questions)
        if leaked:
            return f"{leaked} (the answer to embedded question {index + 1})"
    return None
