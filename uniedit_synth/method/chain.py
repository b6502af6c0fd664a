"""What a chain's next turn asks when the image is not from the offline world: a question the plan picks from
the facts the previous turn established, with its answer known by construction.

A turn's verified edit establishes facts the code knows without looking at the image: the judge saw the
expected branch's edit (the intended effect) carried out, and not the other branch's edit. The next turn asks
about one of them ("Does the picture show this change: …?"), so its answer ("yes" / "no") is the plan's, not a
model's; the rewriter only phrases the instruction around the question, as for any other record.
"""

from __future__ import annotations

import hashlib

from ..core.plan import InstructionPlan
from .answers import normalise_text

QUESTION_TEMPLATE = "Does the picture show this change: {edit}?"


def _edit_phrase(edit: str) -> str:
    return edit.strip().rstrip(".!?").strip()


def fact_question(
    plan: InstructionPlan | None,
    intended_effect: str | None,
    instruction: str | None,
    previous_question: str,
    *,
    seed: int,
    chain_id: str,
    turn: int,
) -> tuple[str, str] | None:
    """(question, answer) about the previous turn's verified edit, or None when it established no fact
    that can be asked without repeating the previous question.

    The facts: its intended effect was carried out ("yes"), and, for a conditional, its other branch's edit
    was not ("no"). Which one is asked is a seeded coin flip (seed, chain, turn), so both answers occur."""
    facts: list[tuple[str, str]] = []
    done = intended_effect or (plan.expected_edit if plan is not None else None) or instruction
    if done and _edit_phrase(done):
        facts.append((QUESTION_TEMPLATE.format(edit=_edit_phrase(done)), "yes"))
    wrong = plan.wrong_edit if plan is not None and plan.conditional else None
    if wrong and _edit_phrase(wrong):
        facts.append((QUESTION_TEMPLATE.format(edit=_edit_phrase(wrong)), "no"))
    before = normalise_text(previous_question)
    facts = [f for f in facts if normalise_text(f[0]) != before]
    if not facts:
        return None
    coin = hashlib.sha256(f"uniedit-chain-fact/{seed}/{chain_id}/{turn}".encode()).digest()[0]
    return facts[coin % len(facts)]
