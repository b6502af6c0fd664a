"""The reasoning trace of a sample: question → answer → branch → edit, built from the plan and the known answer,
and the check that a trace (templated or phrased by a model) never contradicts the plan.

The engine knows, for every record, the question, the true answer, the plan's candidate and expected branch, and
the edit each branch asks for; so the trace is correct by construction when templated, and checkable when a
model phrases it: it must name the expected branch's edit, must not present the wrong branch's edit as the one
carried out, and where it states the answer ("the answer is X") X must be the true answer.
"""

from __future__ import annotations

import re
from typing import Literal

from ..core.plan import InstructionPlan, PlanCondition
from .answers import normalise_answer, normalise_text, same_answer

ReasoningMode = Literal["off", "template", "model"]

#: "the answer is X" / "answer would be X": what a trace states as the answer
_STATED_ANSWER = re.compile(
    r"\banswer\s+(?:is|=|would\s+be|must\s+be)\s+[\"'“‘]?([^\"'”’;,\n]{1,60}?)[\"'”’]?(?:[.;,](?:\s|$)|\n|$)",
    re.IGNORECASE,
)


def intended_effect(
    plan: InstructionPlan | None, instruction: str | None, branch_edit: str | None = None
) -> str | None:
    """The edit that should be visible afterwards: the expected branch's edit for a conditional plan, else the
    edit the rewriter described (`branch_edit`), else the instruction itself."""
    if plan is not None and plan.conditional and plan.expected_edit:
        return plan.expected_edit
    return (branch_edit or "").strip() or (instruction or "").strip() or None


#: conditions in the trace; never "answer is X" (that phrase states an answer, and check_trace reads it so)
_OPERATOR_TEXT = {
    "eq": "equals {0}",
    "ne": "differs from {0}",
    "lt": "is below {0}",
    "gt": "is above {0}",
    "between": "lies between {0} and {1}",
    "parity": "is {0}",
    "one_of": "is one of {all}",
    "statement": "is yes (its statement is true)",
}


def _condition_text(condition: PlanCondition) -> str:
    return f"the value asked by question {condition.question + 1} {condition.worded(_OPERATOR_TEXT)}"


def _walk(plan: InstructionPlan) -> str:
    """Step 3 for a plan with a branch tree: every condition on the path, whether it holds, and where that
    leads (a switch: the case of the answer)."""
    if plan.operator == "switch":
        case = plan.path[0].removeprefix("case:") if plan.path else ""
        return f"3. Branch: the instruction switches on the answer over {', '.join(plan.operands)}; the case {case} applies."
    top = next(c for c in plan.conditions if c.place == "top")
    joined = next((c for c in plan.conditions if c.place == "join"), None)
    parts = [f"the condition {_condition_text(top)} {'holds' if top.holds else 'does not hold'}"]
    if joined is not None:
        parts.append(f"{plan.join} {_condition_text(joined)} {'holds' if joined.holds else 'does not hold'}")
    first = plan.path[0] if plan.path else "then"
    parts.append(f"so the {'first (then)' if first == 'then' else 'second (else)'} branch applies")
    inner = next((c for c in plan.conditions if c.place == first), None)
    if inner is not None and len(plan.path) > 1:
        parts.append(
            f"inside it, {_condition_text(inner)} {'holds' if inner.holds else 'does not hold'}, so its "
            f"{'then' if plan.path[1] == 'then' else 'else'} branch applies"
        )
    return "3. Branch: " + "; ".join(parts) + "."


def template_trace(question: str, answer: str, plan: InstructionPlan | None, effect: str | None) -> str:
    """The four steps as plain sentences; a pure function of the plan and the answer. Several embedded
    questions each get their answer in step 2; step 3 walks the whole path of the plan's branch tree."""
    answer = (answer or "").strip()
    steps = [f"1. Question: {question.strip()}", f"2. Answer: looking at the image, the answer is {answer}."]
    if plan is not None and len(plan.questions) > 1:
        asked = "; ".join(f"({i + 1}) {q.strip()}" for i, q in enumerate(plan.questions))
        answered = "; ".join(f"({i + 1}) {a.strip()}" for i, a in enumerate(plan.answers))
        steps[0] = f"1. Questions: {asked}"
        steps[1] = f"2. Answers: looking at the image, the answer is {answer}; all answers: {answered}."
    if plan is not None and plan.conditional and plan.conditions and plan.path and (
        plan.depth > 1 or plan.join or plan.operator not in (None, "eq")
    ):
        steps.append(_walk(plan))
    elif plan is not None and plan.conditional and plan.candidate is not None:
        holds = plan.expected_branch == "then"
        steps.append(
            f"3. Branch: the instruction tests whether the answer is {plan.candidate}; "
            f"{'it is' if holds else 'it is not'}, so the {'first (then)' if holds else 'second (else)'} "
            "branch applies."
        )
    else:
        steps.append(
            f"3. Branch: a {plan.style if plan else 'direct'} instruction, so the edit uses the answer."
        )
    steps.append(f"4. Edit: {(effect or '').strip()}")
    return "\n".join(steps)


def _mentions(text: str, phrase: str) -> bool:
    return bool(phrase) and normalise_text(phrase) in normalise_text(text)


def check_trace(trace: str, plan: InstructionPlan | None, answer: str, effect: str | None) -> str | None:
    """What a trace gets wrong against the plan ('rule: detail'), else None."""
    if not trace.strip():
        return "empty: the trace is empty"
    expected = plan.expected_edit if plan is not None and plan.conditional else effect
    if expected and not _mentions(trace, expected):
        return f"expected edit: the trace does not name the expected branch's edit {expected!r}"
    if plan is not None and plan.conditional:
        for wrong in plan.wrong_edits:
            if _mentions(trace, wrong) and not _mentions(wrong, expected or "") and not _mentions(expected or "", wrong):
                return f"wrong branch: the trace names another path's edit {wrong!r}"
    for match in _STATED_ANSWER.finditer(trace):
        before = trace[max(0, match.start() - 16) : match.start()].lower()
        stated = match.group(1).strip()
        if re.search(r"\b(whether|if)\b", before) or re.match(r"not\b", stated, re.IGNORECASE):
            continue  # a condition posed ("whether the answer is X") or denied, not an answer stated
        if not stated or not answer:
            continue
        # the true answer may hold punctuation ("[0.54, 0.33]", "12.5 cm"): what follows "is" starting with it counts
        rest = trace[match.start(1) : match.start(1) + len(answer) + 8]
        if normalise_text(rest).startswith(normalise_text(answer)):
            continue
        if not same_answer(stated, answer) and normalise_answer(stated) != normalise_answer(answer):
            return f"answer: the trace states the answer is {stated!r}, the true answer is {answer!r}"
    return None
