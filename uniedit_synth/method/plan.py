"""The instruction plan: what kind of instruction a record gets, drawn in code before the rewrite call.

The Uni-Edit release flips a coin in code for the instruction style (`third_process.py`:
`random.random() < 0.5`), it does not let the language model choose. Here the engine draws, per record and
seeded by (pipeline seed, record id) so resume and reruns get the same plan:

* `style` from the per-category mix in the pipeline YAML (`stages.rewrite.styles`);
* for `conditional`: whether the condition's candidate is the answer (Bernoulli p,
  `stages.rewrite.candidate_is_answer_p`, default 0.5), the candidate itself (the answer, or a same-kind
  distractor that differs from it under `normalise_answer`: from the record's own answer space when the
  source knows it, else from a vocabulary, else asked of the rewriter), and so the expected branch.

The rewriter fills in `then_edit` / `else_edit`; the judge is told the expected branch's edit (never the
answer) and the other one as the wrong outcome. The plan is a column of every row.

The logic beyond "the answer is the candidate" is drawn from its own seeded stream (method/logic.py), so the
draws above stay as they were: the operator (eq, ne, lt, gt, between, parity, one_of; `statement` for a
yes/no question, `switch` with one case per option for a multiple-choice one), a second question joined
with and / or, a condition nested in one branch (depth 2), and a count that sets a branch's amount. Other
questions about the same image come from `record.siblings` (`source.group_by_image`).

The plan also draws the instruction's closing sentence (`closing`, its own seeded draw so the other draws
stay as they were): a preservation clause ("change nothing else"), worded in one of
len(PRESERVE_CORES) x len(PRESERVE_TAILS) ways, so no wording ends more than a few per cent of the rows.
The release ends every instruction with RELEASE_CLOSING, a request for a global aesthetic change that
invites the editor to re-render the whole image; a pipeline that sets `stages.rewrite.aesthetics_directive`
(or the release judge preset) gets that fixed sentence instead.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from typing import Any

from ..core.plan import InstructionPlan, PlanCondition, PlanLeaf, PlanParameter
from .answers import mentions_answer, normalise_answer, same_answer
from .logic import (
    NUMERIC_OPERATORS,
    RELEASE_LOGIC,
    VALUE_OPERATORS,
    LogicSettings,
    as_number,
    draw_condition,
    draw_parameter,
    join_truth,
    numeric_space,
    reaching,
    switch_options,
)

#: The release's mix: a fair coin between a conditional branch and a synthesis for colour, shape and count
#: (third_process.py: random.random() < 0.5); text-like answers are rendered on a medium; location questions
#: transform the located object; knowledge answers are generated (or written, for a person) into the scene —
#: and here also a conditional on the answers the knowledge question could have given, where the source
#: gives them (the `uniedit` pipeline keeps the release's synthesis only).
DEFAULT_STYLE_MIX: dict[str, dict[str, float]] = {
    "color": {"conditional": 0.5, "synthesis": 0.5},
    "shape": {"conditional": 0.5, "synthesis": 0.5},
    "count": {"conditional": 0.5, "synthesis": 0.5},
    "ocr": {"render": 1.0},
    "caption": {"render": 1.0},
    # math answers are numbers: half of them a condition on the result (lt, gt, between, parity …)
    "math": {"conditional": 0.5, "render": 0.5},
    "location": {"transform": 1.0},
    # knowledge: a condition only on answers the question could have given (knowledge_space), else synthesis
    "knowledge": {"conditional": 0.5, "synthesis": 0.5},
    # a yes/no question is a binary condition on its statement; a multiple-choice one a switch over its options
    "yes_no": {"conditional": 1.0},
    "multi-choice": {"conditional": 1.0},
    "default": {"conditional": 0.5, "synthesis": 0.5},
}
DEFAULT_CANDIDATE_P = 0.5

#: same-kind distractors when the source gives no answer space
COLOR_WORDS: tuple[str, ...] = (
    "red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "gray", "cyan", "black", "white",
)  # fmt: skip
SHAPE_WORDS: tuple[str, ...] = ("cube", "sphere", "cylinder", "cone", "pyramid", "torus", "prism", "disk")
SIDE_WORDS: tuple[str, ...] = ("left", "right")
YES_NO: tuple[str, ...] = ("yes", "no")
VOCABULARIES: tuple[tuple[str, ...], ...] = (COLOR_WORDS, SHAPE_WORDS, SIDE_WORDS, YES_NO)
_NUMBER = re.compile(r"-?\d+")


#: the Uni-Edit release's closing sentence (data_gen/system2.py), kept for reproducing the release
RELEASE_CLOSING = "Refine the image with a visually appealing effect."
PRESERVE_CORES: tuple[str, ...] = (
    "Change nothing else",
    "Leave everything else exactly as it is",
    "Keep the rest of the image unchanged",
    "Do not alter anything else",
    "Make no other changes",
    "Everything else must stay as it is",
    "Preserve the rest of the scene exactly",
    "Touch nothing else",
    "Keep every other detail as it is",
    "Leave the rest of the picture untouched",
    "Keep all other content unchanged",
    "Apart from this edit, keep the picture exactly as it was",
)
PRESERVE_TAILS: tuple[str, ...] = (
    ".",
    ", including the background and the lighting.",
    "; the framing, the lighting and the other objects stay as they are.",
    ": same framing, same lighting, same objects.",
)


def plan_rng(seed: int, record_id: str) -> random.Random:
    digest = hashlib.sha256(f"uniedit-plan/{seed}/{record_id}".encode()).hexdigest()
    return random.Random(digest)


def draw_closing(seed: int, record_id: str, answer: str = "", *others: str) -> str:
    """The record's preservation clause, seeded by (pipeline seed, record id) apart from the plan's other
    draws; never one that names the answer ("… the lighting …" for the answer lighting would be a leak), nor
    an embedded sibling question's answer (`others`: "make no other changes" for a sibling answered no)."""
    rng = plan_rng(seed, f"{record_id}/closing")
    options = [f"{core}{tail}" for core in PRESERVE_CORES for tail in PRESERVE_TAILS]
    rng.shuffle(options)
    avoid = [a for a in (answer, *others) if a]
    return next((o for o in options if not any(mentions_answer(o, a) for a in avoid)), options[0])


def style_mix(category: str, styles: dict[str, dict[str, float]] | None) -> dict[str, float]:
    """The configured mix for a category (the config's `default` entry, else the built-in one)."""
    table = {**DEFAULT_STYLE_MIX, **(styles or {})}
    return table.get(category) or table["default"]


def distractor(answer: str, rng: random.Random, answer_space: Sequence[str] | None = None) -> str | None:
    """A same-kind value that differs from `answer` under the normaliser, or None when nothing fits.

    Numbers: a different count near the true one (never below 1 for a positive answer: a count that
    exists by construction is never tested against 0). With an answer space (what the question could
    have answered), only values from it, so the condition's truth always depends on the answer.
    """
    norm = normalise_answer(answer)
    if answer_space:
        options = [str(v) for v in answer_space if not same_answer(str(v), norm)]
        if _NUMBER.fullmatch(norm):
            n = int(norm)
            near = sorted(
                (o for o in options if _NUMBER.fullmatch(normalise_answer(o))),
                key=lambda o: abs(int(normalise_answer(o)) - n),
            )
            options = [o for o in near if abs(int(normalise_answer(o)) - n) <= 2] or near[:2]
        return rng.choice(options) if options else None
    if _NUMBER.fullmatch(norm):
        n = int(norm)
        low = 1 if n >= 1 else 0
        options = [str(v) for v in range(n - 2, n + 3) if v != n and v >= low]
        return rng.choice(options)
    for vocabulary in VOCABULARIES:
        if norm in vocabulary or any(same_answer(norm, word) for word in vocabulary):
            return rng.choice([w for w in vocabulary if not same_answer(w, norm)])
    return None


def knowledge_space(question: str, answer: str, answer_space: Sequence[str] | None) -> list[str] | None:
    """The values a knowledge condition may test: the answer space less the values the question's own words
    name (a named value is settled by reading the question: "the one object that is not red"), the answer
    kept; None when fewer than two remain or there is no answer space (a generic vocabulary, or a test on the
    kind of answer such as "if it is a person", would be decided by the wording, not by answering)."""
    if not answer_space:
        return None
    kept = [
        str(v) for v in answer_space
        if same_answer(str(v), answer) or not (question and mentions_answer(question, str(v)))
    ]  # fmt: skip
    if len({normalise_answer(v) for v in kept}) < 2:
        return None
    return kept


def _own_operands(condition: PlanCondition | None, others: Sequence[str]) -> PlanCondition | None:
    """A sibling's condition, or None when one of its operands is another embedded question's answer ("if
    the count of cubes is below 2" beside a question answered 2 would state that answer)."""
    if condition is None or any(same_answer(o, a) for o in condition.operands for a in others if a):
        return None
    return condition


def _sibling(sibling: Any) -> tuple[str, str, str | None, list[str] | None]:
    """(question, answer, category, answer space) of a sibling (a records.SiblingQA or a dict like one)."""
    get = sibling.get if isinstance(sibling, dict) else lambda k, d=None: getattr(sibling, k, d)
    meta = get("meta") or {}
    space = meta.get("answer_space") if isinstance(meta, dict) else None
    return (
        str(get("question") or ""),
        str(get("answer") or ""),
        get("category"),
        [str(v) for v in space] if isinstance(space, list) else None,
    )


def _leaves(top_paths: list[str], nested: PlanCondition | None) -> list[PlanLeaf]:
    out = []
    for path in top_paths:
        if nested is not None and nested.place == path:
            out += [PlanLeaf(path=f"{path}/then"), PlanLeaf(path=f"{path}/else")]
        else:
            out.append(PlanLeaf(path=path))
    return out


def draw_plan(
    seed: int,
    record_id: str,
    category: str,
    answer: str,
    styles: dict[str, dict[str, float]] | None = None,
    candidate_is_answer_p: float = DEFAULT_CANDIDATE_P,
    answer_space: Sequence[str] | None = None,
    closing: str | None = None,
    question: str = "",
    siblings: Sequence[Any] = (),
    logic_settings: LogicSettings = RELEASE_LOGIC,
) -> InstructionPlan:
    """The plan for one record; a pure function of its arguments. `closing`: a fixed closing sentence (the
    pipeline's directive); None draws a preservation clause. `siblings`: other questions about the same
    image (records.SiblingQA), which the logic may embed. `logic_settings`: what the logic may draw (the rewrite
    stage passes `stages.rewrite.logic`, every form by default); the default here is the release's single
    equality test."""
    settings = logic_settings
    fixed_closing = closing
    closing = closing or draw_closing(seed, record_id, answer)
    rng = plan_rng(seed, record_id)
    logic = plan_rng(seed, f"{record_id}/logic")
    mix = {k: float(v) for k, v in style_mix(category, styles).items() if float(v) > 0}
    names = sorted(mix)
    style = rng.choices(names, weights=[mix[n] for n in names])[0] if names else "synthesis"
    if (
        style == "conditional"
        and answer_space is not None
        and len({normalise_answer(str(v)) for v in answer_space}) < 2
    ):
        # a condition on a question with one possible answer would be decided in advance
        others = [n for n in names if n != "conditional"]
        style = rng.choices(others, weights=[mix[n] for n in others])[0] if others else "synthesis"
    if style == "conditional" and category == "knowledge":
        # both branches plausible for the question: a knowledge condition tests answers it could have given
        # (its answer space), never a value its own words name, nor a kind of answer its wording settles
        answer_space = knowledge_space(question, answer, answer_space)
        if answer_space is None:
            others = [n for n in names if n != "conditional"]
            style = rng.choices(others, weights=[mix[n] for n in others])[0] if others else "synthesis"
    questions, answers = [question], [answer]
    # a sibling whose question names this record's answer (or whose answer this question names) would give
    # one answer away in the other's words: it is not embedded
    pool = [
        s for s in map(_sibling, siblings)
        if s[0] and s[1] and not mentions_answer(s[0], answer) and not (question and mentions_answer(question, s[1]))
    ]  # fmt: skip
    logic.shuffle(pool)
    gated = style in ("synthesis", "render") and pool and logic.random() < settings.join_p
    if gated:  # another question decides the branch; this record's answer drives the edit on the then-path
        q, a, cat, space = pool[0]
        excluded = ("eq", "statement", *(o for o in NUMERIC_OPERATORS if o not in settings.operators))
        gate = _own_operands(draw_condition(1, a, space, cat, logic, exclude=excluded[2:]), [answer])
        if gate is not None:
            path = ["then" if gate.holds else "else"]
            if fixed_closing is None:
                closing = draw_closing(seed, record_id, answer, a)
            return InstructionPlan(
                style="conditional", candidate_is_answer=gate.holds, answer_in_condition=False,
                expected_branch=path[0], closing=closing, operator=gate.operator, operands=gate.operands,
                questions=[question, q], answers=[answer, a], depth=1, conditions=[gate], path=path,
                leaves=[PlanLeaf(path="then"), PlanLeaf(path="else")],
                parameter=PlanParameter(question=0, formula="answer", path="then"),
            )  # fmt: skip
    if style != "conditional":
        parameter = None
        if style == "synthesis" and category == "count" and settings.count_arithmetic:  # capped count arithmetic on the answer itself
            parameter = draw_parameter(0, answer, "", logic)
        counting = [s for s in pool if (as_number(s[1]) or 0) >= 1]
        if style == "synthesis" and category in ("color", "shape") and counting and logic.random() < settings.parameter_p:
            # "add as many cubes of that colour as there are spheres": the sibling's count sets the amount
            q, a, _cat, _space = counting[0]
            parameter = draw_parameter(1, a, "", logic, adding_only=True)
            if parameter is not None:
                questions.append(q)
                answers.append(a)
        if fixed_closing is None and len(answers) > 1:
            closing = draw_closing(seed, record_id, answer, *answers[1:])
        return InstructionPlan(
            style=style, closing=closing, questions=questions, answers=answers, parameter=parameter
        )
    is_answer = rng.random() < candidate_is_answer_p
    other = distractor(answer, rng, answer_space)
    if is_answer:
        candidate: str | None = (answer or "").strip()
    else:
        candidate = other  # None: the rewriter proposes one, validated ≠ answer
    norm = normalise_answer(answer)
    if category == "multi-choice":
        options = switch_options(answer, answer_space, logic)
        if options is not None:
            path = [f"case:{norm}"]
            return InstructionPlan(
                style="conditional", candidate_is_answer=True, answer_in_condition=True, closing=closing, operator="switch",
                operands=options, questions=questions, answers=answers, depth=1,
                conditions=[PlanCondition(operator="switch", operands=options, holds=True)],
                path=path, leaves=[PlanLeaf(path=f"case:{o}") for o in options],
            )  # fmt: skip
    top: PlanCondition | None = None
    excluded = ("eq", "statement", *(o for o in NUMERIC_OPERATORS if o not in settings.operators))
    if category == "yes_no" or norm in ("yes", "no"):
        top = draw_condition(0, answer, answer_space, "yes_no", logic)
    elif candidate is not None:
        eq_share = (NUMERIC_OPERATORS if as_number(norm) is not None else VALUE_OPERATORS)["eq"]
        if logic.random() >= eq_share and len(settings.operators) > 1:
            space = answer_space if answer_space else _vocabulary_space(answer)
            top = draw_condition(0, answer, space, category, logic, exclude=excluded, want=is_answer)
    if top is None:  # the release's test: "the answer is the candidate"
        top = PlanCondition(operator="eq", operands=[candidate] if candidate else [], holds=is_answer)
    conditions = [top]
    join = None
    second: PlanCondition | None = None
    if pool and logic.random() < settings.join_p:
        q, a, cat, space = pool.pop()
        second = draw_condition(len(questions), a, space, cat, logic, place="join", exclude=excluded[2:])
        second = _own_operands(second, answers)
        if second is not None:
            questions.append(q)
            answers.append(a)
            join = logic.choice(("and", "or"))
            conditions.append(second)
    truth = join_truth(join, top.holds, second.holds if second else None)
    nested: PlanCondition | None = None
    if logic.random() < settings.nest_p and (top.operands or pool):
        branch = logic.choice(("then", "else"))
        if pool:
            q, a, cat, space = pool.pop()
            nested = draw_condition(len(questions), a, space, cat, logic, place=branch, exclude=excluded[2:])
            nested = _own_operands(nested, answers)
            if nested is not None:
                questions.append(q)
                answers.append(a)
        elif join is None:
            space = numeric_space(norm, answer_space) if as_number(norm) is not None else answer_space
            space = space or _vocabulary_space(answer) or []
            # the branch whose reaching answers still differ (an eq's then-branch has only one)
            reach = {b: set(reaching(top, space, b)) for b in ("then", "else")}
            fits = [b for b in (branch, "else" if branch == "then" else "then") if len(reach[b]) >= 2]
            if fits:
                nested = draw_condition(
                    0, answer, sorted(reach[fits[0]]), category, logic, place=fits[0], exclude=excluded[1:]
                )
        if nested is not None:
            conditions.append(nested)
    path = ["then" if truth else "else"]
    if nested is not None and nested.place == path[0]:
        path.append("then" if nested.holds else "else")
    leaves = _leaves(["then", "else"], nested)
    parameter: PlanParameter | None = None
    numeric = [s for s in pool if as_number(s[1]) is not None and as_number(s[1]) >= 1]
    if numeric and logic.random() < settings.parameter_p:
        q, a, _cat, _space = numeric[0]
        parameter = draw_parameter(len(questions), a, logic.choice(leaves).path, logic)
        if parameter is not None:
            questions.append(q)
            answers.append(a)
    if fixed_closing is None and len(answers) > 1:
        closing = draw_closing(seed, record_id, answer, *answers[1:])
    in_condition = top.operator == "eq" and is_answer or any(
        c.question == 0 and any(same_answer(o, answer) for o in c.operands) for c in conditions
    )
    return InstructionPlan(
        style="conditional",
        candidate=candidate if top.operator == "eq" else None,
        candidate_is_answer=top.holds,
        answer_in_condition=bool(in_condition),
        expected_branch=path[0],  # type: ignore[arg-type]
        closing=closing,
        operator=top.operator,
        operands=top.operands,
        questions=questions,
        answers=answers,
        depth=2 if nested is not None else 1,
        join=join,
        conditions=conditions,
        path=path,
        leaves=leaves,
        parameter=parameter,
    )


def _vocabulary_space(answer: str) -> list[str] | None:
    """A same-kind answer space from the built-in vocabularies (colours, shapes, sides, yes/no)."""
    norm = normalise_answer(answer)
    for vocabulary in VOCABULARIES:
        if any(same_answer(norm, word) for word in vocabulary):
            return list(vocabulary)
    return None
