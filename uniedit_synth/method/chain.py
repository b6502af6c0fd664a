"""What a chain's next turn asks when the image is not from the offline world: a question the plan picks from
the facts the previous turn established, with its answer known by construction.

A turn's verified edit establishes facts the code knows without looking at the image: the judge saw the
expected branch's edit (the intended effect) carried out, and not the other branch's edit. The next turn asks
about one of them ("Does the picture show this change: …?"), so its answer ("yes" / "no") is the plan's, not a
model's; the rewriter only phrases the instruction around the question, as for any other record.

A synthesis-style turn's intended effect is its whole instruction ("Work out the colour …, then add a mug painted
in that colour next to it. Keep the rest."): too long to quote, so the question quotes its action clause, the
first clause that asks for a visible change ("add a mug painted in that colour next to it"); the judge verified
the instruction was carried out, so that change was made and the answer is "yes".
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Any

from ..core.plan import InstructionPlan
from .answers import normalise_text
from .edit_meaning import is_visible_edit

QUESTION_TEMPLATE = "Does the picture show this change: {edit}?"


#: an edit longer than this is an instruction, not an edit description: not asked about
MAX_EDIT_CHARS = 160


def _edit_phrase(edit: str | None) -> str:
    """The edit as the question quotes it: of a whole instruction (a synthesis style's intended effect), the
    sentence after its quoted question; empty when that is not a short description of one edit (questions
    nested inside questions)."""
    phrase = (edit or "").strip()
    if '"' in phrase:  # an instruction that quotes its question: the edit is what follows the question
        phrase = re.sub(r"^[\s.,;:!?]*(?:(?:and|then)\b[\s,]*)*", "", phrase.rsplit('"', 1)[1], flags=re.IGNORECASE)
        phrase = re.split(r"(?<=[.!])\s", phrase, maxsplit=1)[0]
    phrase = phrase.strip().rstrip(".!?").strip()
    if len(phrase) > MAX_EDIT_CHARS or any(mark in phrase for mark in ('"', "?", "\n")):
        return ""
    return phrase


#: where a synthesis instruction's clauses part: sentence ends, commas, semicolons and "then"
_CLAUSE_BREAK = re.compile(r"[.;:!?,\n]|\s(?:and\s+)?then\s", re.IGNORECASE)
_CLAUSE_LEAD = re.compile(r"^(?:(?:and|then|so|also|finally|next)\b\s*)+", re.IGNORECASE)


def _action_clause(instruction: str | None) -> str:
    """Of a whole instruction (not a conditional), the first clause that asks for a visible change, as the
    question quotes it; empty when none is short enough."""
    text = re.sub(r'"[^"]*"|\u201c[^\u201d]*\u201d', " ", instruction or "")  # a quoted question is no action
    for piece in _CLAUSE_BREAK.split(text):
        clause = _CLAUSE_LEAD.sub("", " ".join(piece.split()))
        head, _, rest = clause.partition(" and ")
        if rest and not is_visible_edit(head) and is_visible_edit(rest):
            clause = rest  # "answer it and draw that many stars": the action is the second half
        if clause and is_visible_edit(clause):
            return _edit_phrase(clause)
    return ""


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
    done = next((p for p in map(_edit_phrase, (
        intended_effect, plan.expected_edit if plan is not None else None, plan.then_edit if plan is not None else None,
        instruction)) if p), "")
    if not done and (plan is None or not plan.conditional):
        # a synthesis-style turn: its intended effect is the whole instruction; ask about its action clause
        # (a conditional's clauses are not all carried out, so none is picked from its text)
        done = next((p for p in map(_action_clause, (intended_effect, instruction)) if p), "")
    if done:
        facts.append((QUESTION_TEMPLATE.format(edit=done), "yes"))
    wrong = _edit_phrase(plan.wrong_edit) if plan is not None and plan.conditional else ""
    if wrong and wrong != done:
        facts.append((QUESTION_TEMPLATE.format(edit=wrong), "no"))
    before = normalise_text(previous_question)
    facts = [f for f in facts if normalise_text(f[0]) != before]
    if not facts:
        return None
    coin = hashlib.sha256(f"uniedit-chain-fact/{seed}/{chain_id}/{turn}".encode()).digest()[0]
    return facts[coin % len(facts)]


def chain_totals(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's chain figures summed over its shards' manifest entries (`chains`, written by engine/chains.py):
    chain lengths kept, full chains, chains dropped (shorter than min_turns), and breaks by turn and reason.
    Empty for a single-turn run."""
    found = [e["chains"] for e in entries if isinstance(e.get("chains"), dict)]
    if not found:
        return {}
    lengths: Counter = Counter()
    breaks: dict[str, Counter] = {}
    for counts in found:
        lengths.update(counts.get("lengths", {}))
        for turn, reasons in counts.get("breaks", {}).items():
            breaks.setdefault(turn, Counter()).update(reasons)
    return {"chains": {
        "turns": max(c.get("turns", 1) for c in found),
        "min_turns": max(c.get("min_turns", 1) for c in found),
        "kept": sum(lengths.values()),
        "full": sum(c.get("full", 0) for c in found),
        "dropped": sum(c.get("dropped", 0) for c in found),
        "failed_first_turn": sum(c.get("failed_first_turn", 0) for c in found),
        "lengths": dict(sorted(lengths.items(), key=lambda kv: int(kv[0]))),
        "breaks": {t: dict(sorted(c.items())) for t, c in sorted(breaks.items(), key=lambda kv: int(kv[0]))},
    }}


def format_chain_totals(chains: dict[str, Any]) -> list[str]:
    """The chain lines of `uniedit stats` (none for a single-turn run)."""
    if not chains:
        return []
    lengths = ", ".join(f"{k} turn{'s' if k != '1' else ''}: {v}" for k, v in chains["lengths"].items()) or "none"
    lines = ["", f"chains ({chains['turns']} turns, min {chains['min_turns']}): {chains['kept']} kept, "
             f"{chains['full']} full, {chains['dropped']} dropped as too short, "
             f"{chains['failed_first_turn']} failed at turn 1",
             f"  lengths: {lengths}"]
    for turn, reasons in chains["breaks"].items():
        lines.append(f"  broke at turn {turn}: " + ", ".join(f"{r} {n}" for r, n in reasons.items()))
    return lines
