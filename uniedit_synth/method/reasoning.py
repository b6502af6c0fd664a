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

from ..core.plan import InstructionPlan
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


def template_trace(question: str, answer: str, plan: InstructionPlan | None, effect: str | None) -> str:
    """The four steps as plain sentences; a pure function of the plan and the answer."""
    answer = (answer or "").strip()
    steps = [f"1. Question: {question.strip()}", f"2. Answer: looking at the image, the answer is {answer}."]
    if plan is not None and plan.conditional and plan.candidate is not None:
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
        wrong = plan.wrong_edit
        if wrong and _mentions(trace, wrong) and not _mentions(wrong, expected or ""):
            return f"wrong branch: the trace names the other branch's edit {wrong!r}"
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
