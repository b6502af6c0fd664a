"""Ground-truth checks of offline-world rows: no-op edits, conditions decided in advance, answer leaks,
branch balance and instruction openings; and the builtin judge's precision / recall per editor flaw kind.

The offline world knows everything about a row (the scene, the question's query, the edit program), so
these checks are exact. They back the acceptance tests of the instruction plan and
`benchmarks/data_quality.py`.
"""

from __future__ import annotations

import io
import random
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
from PIL import Image

from ..core.plan import InstructionPlan
from ..method.answers import leaks_answer
from ..method.logic import plan_leak
from .flaws import FLAWS, LOGIC_PROBES, apply_flaw, expected_edited_png
from .observe import observe
from .program import decided_conditions, scene_of
from .verify import verify
from .world import COLORS, MATERIALS, SHAPES, SIZES

#: the judge's observations that reject an edit whatever the scores (as stages/judge.py decides)
_REJECTED_BRANCHES = ("other", "both", "none")


def evidence_ok(seen: dict[str, Any]) -> bool:
    return seen.get("branch_observed") not in _REJECTED_BRANCHES and not seen.get("changes_outside_target")

OPENING_WORDS = 5
_WORD = re.compile(r"[a-z0-9']+")


def opening(instruction: str, words: int = OPENING_WORDS) -> str:
    """An instruction's opening: its first `words` words, lowercased (quotes and punctuation dropped)."""
    return " ".join(_WORD.findall(instruction.lower())[:words])


def same_pixels(first: bytes | None, second: bytes | None) -> bool:
    if first is None or second is None:
        return False
    if first == second:
        return True
    with Image.open(io.BytesIO(first)) as a, Image.open(io.BytesIO(second)) as b:
        return a.size == b.size and np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def _plan(row: dict[str, Any]) -> dict[str, Any]:
    plan = row.get("instruction_plan")
    return plan if isinstance(plan, dict) else {}


def row_leak(row: dict[str, Any]) -> str | None:
    """The answer form an accepted row's instruction gives away (the plan's candidate-in-condition excepted)."""
    plan = _plan(row)
    if "depth" in plan:  # a drawn plan: every embedded question's answer, as the rewrite stage checks it
        return plan_leak(
            row.get("edit_instruction") or "",
            InstructionPlan.model_validate(plan),
            row.get("original_answer") or "",
            row.get("process_answer"),
            row.get("original_question") or "",
        )
    return leaks_answer(
        row.get("edit_instruction") or "",
        row.get("original_answer"),
        row.get("process_answer"),
        candidate_is_answer=bool(plan.get("candidate_is_answer")),
        question=row.get("original_question"),
    )


def row_decided(row: dict[str, Any]) -> list[str]:
    """Conditions of a scene row whose truth is the same for every answer the question could have."""
    program, meta = row.get("edit_program"), row.get("record_meta") or {}
    if not isinstance(program, dict) or program.get("kind") != "scene" or "scene" not in meta:
        return []
    return decided_conditions(scene_of(meta), program)


def quality_figures(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Figures over accepted rows (dicts as `records.sample_to_row` writes them, JSON columns decoded)."""
    total = no_op = decided = leaks = nested = 0
    balance: dict[str, Counter] = {}
    answer_share = Counter()
    styles = Counter()
    openings: list[str] = []
    accepted: list[dict[str, Any]] = []
    for row in rows:
        if not row.get("accepted"):
            continue
        accepted.append(row)
        total += 1
        source = (row.get("source_image") or {}).get("bytes")
        edited = (row.get("edited_image") or {}).get("bytes")
        no_op += same_pixels(source, edited)
        decided += bool(row_decided(row))
        leaks += row_leak(row) is not None
        openings.append(opening(row.get("edit_instruction") or ""))
        plan = _plan(row)
        styles[plan.get("style") or "none"] += 1
        if plan.get("style") == "conditional":
            category = row.get("task_category") or "others"
            balance.setdefault(category, Counter())[plan.get("expected_branch") or "?"] += 1
            answer_share[bool(plan.get("candidate_is_answer"))] += 1
            nested += int(plan.get("depth") or 0) == 2
    conditional = sum(answer_share.values())
    logic = logic_figures(accepted)
    per_thousand = len(set(openings)) * 1000 / total if total else 0.0
    return {
        "rows": total,
        "no_op": no_op,
        "decided_in_advance": decided,
        "leaks": leaks,
        "styles": dict(styles),
        "conditional": conditional,
        "candidate_is_answer_share": round(answer_share[True] / conditional, 4) if conditional else None,
        "nested_share": round(nested / conditional, 4) if conditional else None,
        "branch_balance": {k: dict(v) for k, v in sorted(balance.items())},
        "distinct_openings": len(set(openings)),
        "distinct_openings_per_1000": round(per_thousand, 1),
        **logic,
    }


#: what a sentence skeleton masks: the quoted question, numbers (digits and number words), colours, shapes,
#: sizes / materials and sign words, so that only the sentence's own wording is compared
_QUOTED = re.compile(r'"[^"]*"|“[^”]*”')
_NUMBER_WORDS = (
    "zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
    "seventeen|eighteen|nineteen|twenty"
)
_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"\b(\d+|{_NUMBER_WORDS})\b"), "<n>"),
    (re.compile(r"\b(" + "|".join(sorted(COLORS, key=len, reverse=True)) + r")\b"), "<colour>"),
    (re.compile(r"\b(" + "|".join(SHAPES) + r")s?\b"), "<shape>"),
    (re.compile(r"\b(" + "|".join((*SIZES, *MATERIALS)) + r")\b"), "<attr>"),
    (re.compile(r"\b[A-Z]{2,}\b"), "<word>"),
)


def skeletons(instruction: str) -> set[str]:
    """An instruction's sentence skeletons: each sentence lowercased with the quoted question, numbers,
    colours, shapes, sizes, materials and sign words masked."""
    text = _QUOTED.sub("<question>", instruction)
    text = _MASKS[-1][0].sub("<word>", text).lower()
    for pattern, mask in _MASKS[:-1]:
        text = pattern.sub(mask, text)
    sentences = re.split(r"(?<=[.!?])\s+", text)
    return {" ".join(s.split()) for s in sentences if s.strip()}


def logic_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The plan's logic over accepted rows: operators (share of conditional rows), embedded questions per row,
    depth, category mix, and the share of rows holding the most common sentence skeleton."""
    operators: Counter = Counter()
    questions: Counter = Counter()
    depth: Counter = Counter()
    categories: Counter = Counter()
    sentence_rows: Counter = Counter()
    conditional = 0
    for row in rows:
        plan = _plan(row)
        categories[row.get("task_category") or "others"] += 1
        questions[max(1, len([q for q in plan.get("questions") or [] if q]))] += 1
        depth[int(plan.get("depth") or 0)] += 1
        if plan.get("style") == "conditional":
            conditional += 1
            operators[plan.get("operator") or "eq"] += 1
        for skeleton in skeletons(row.get("edit_instruction") or ""):
            sentence_rows[skeleton] += 1
    total = len(rows) or 1
    top, top_rows = sentence_rows.most_common(1)[0] if sentence_rows else ("", 0)
    return {
        "operators": {k: round(v / (conditional or 1), 4) for k, v in operators.most_common()},
        "questions_per_row": dict(sorted(questions.items())),
        "two_or_more_questions_share": round(sum(v for k, v in questions.items() if k >= 2) / total, 4),
        "depth": dict(sorted(depth.items())),
        "depth2_share_of_conditional": round(depth[2] / (conditional or 1), 4),
        "category_mix": {k: round(v / total, 4) for k, v in categories.most_common()},
        "top_skeleton": top,
        "top_skeleton_share": round(top_rows / total, 4),
    }


def judge_probe(
    records: Iterable[tuple[bytes, dict[str, Any], dict[str, Any]]], seed: int = 0
) -> dict[str, dict[str, float]]:
    """The builtin judge against an independent truth, per flaw kind: for every (source image, program,
    meta), the correct edit and one edit per flaw kind; truth = pixel-identical to the expected render. The
    judge accepts as the stage decides: scores over the bar and observations that reject nothing.

    Per kind: `n` probes whose edit really is wrong, `rejected` share of them (recall of the rejection);
    `correct`: the expected edits, with precision / recall of acceptance over all probes."""
    kinds: dict[str, Counter] = {kind: Counter() for kind in (*FLAWS, *LOGIC_PROBES, "correct")}
    accepted_right = accepted_wrong = right_total = 0
    rng = random.Random(seed)
    for source, program, meta in records:
        good = expected_edited_png(source, program, meta)
        probes = [("correct", good)]
        for flaw in (*FLAWS, *LOGIC_PROBES):
            bad, applied = apply_flaw(source, program, meta, flaw, random.Random(rng.random()))
            probes.append((applied, bad))
        for kind, edited in probes:
            truth = same_pixels(edited, good)
            verdict = verify(source, edited, program, meta)
            seen = observe(source, edited, program, meta)  # the builtin judge's observations decide too
            accepted = verdict.ok and verdict.scores["instruction_following"] >= 3 and evidence_ok(seen)
            if truth:
                right_total += 1
                accepted_right += accepted
                kinds["correct"]["n"] += 1
                kinds["correct"]["accepted"] += accepted
            else:
                accepted_wrong += accepted
                kinds[kind]["n"] += 1
                kinds[kind]["rejected"] += not accepted
    out: dict[str, dict[str, float]] = {}
    for kind, counts in kinds.items():
        if counts["n"] == 0:
            continue
        key = "accepted" if kind == "correct" else "rejected"
        out[kind] = {"n": counts["n"], key: round(counts[key] / counts["n"], 4)}
    accepted_total = accepted_right + accepted_wrong
    out["overall"] = {
        "precision": round(accepted_right / accepted_total, 4) if accepted_total else 1.0,
        "recall": round(accepted_right / right_total, 4) if right_total else 1.0,
    }
    return out
