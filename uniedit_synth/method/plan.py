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

from ..core.plan import InstructionPlan
from .answers import mentions_answer, normalise_answer, same_answer

#: The release's mix: a fair coin between a conditional branch and a synthesis for colour, shape and count
#: (third_process.py: random.random() < 0.5); text-like answers are rendered on a medium; location questions
#: transform the located object; knowledge answers are generated (or written, for a person) into the scene.
DEFAULT_STYLE_MIX: dict[str, dict[str, float]] = {
    "color": {"conditional": 0.5, "synthesis": 0.5},
    "shape": {"conditional": 0.5, "synthesis": 0.5},
    "count": {"conditional": 0.5, "synthesis": 0.5},
    "ocr": {"render": 1.0},
    "caption": {"render": 1.0},
    "math": {"render": 1.0},
    "location": {"transform": 1.0},
    "knowledge": {"synthesis": 1.0},
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


def draw_closing(seed: int, record_id: str, answer: str = "") -> str:
    """The record's preservation clause, seeded by (pipeline seed, record id) apart from the plan's other
    draws; never one that names the answer ("… the lighting …" for the answer lighting would be a leak)."""
    rng = plan_rng(seed, f"{record_id}/closing")
    options = [f"{core}{tail}" for core in PRESERVE_CORES for tail in PRESERVE_TAILS]
    rng.shuffle(options)
    return next((o for o in options if not (answer and mentions_answer(o, answer))), options[0])


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


def draw_plan(
    seed: int,
    record_id: str,
    category: str,
    answer: str,
    styles: dict[str, dict[str, float]] | None = None,
    candidate_is_answer_p: float = DEFAULT_CANDIDATE_P,
    answer_space: Sequence[str] | None = None,
    closing: str | None = None,
) -> InstructionPlan:
    """The plan for one record; a pure function of its arguments. `closing`: a fixed closing sentence (the
    pipeline's directive); None draws a preservation clause."""
    closing = closing or draw_closing(seed, record_id, answer)
    rng = plan_rng(seed, record_id)
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
    if style != "conditional":
        return InstructionPlan(style=style, closing=closing)
    is_answer = rng.random() < candidate_is_answer_p
    other = distractor(answer, rng, answer_space)
    if is_answer:
        candidate: str | None = (answer or "").strip()
    else:
        candidate = other  # None: the rewriter proposes one, validated ≠ answer
    return InstructionPlan(
        style="conditional",
        candidate=candidate,
        candidate_is_answer=is_answer,
        expected_branch="then" if is_answer else "else",
        closing=closing,
    )
