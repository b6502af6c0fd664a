"""The offline world's next chain turn: the scene an accepted edit left behind, and a new question about it.

Turn k of a chain (engine/chains.py) edits turn k-1's accepted image. On the offline world that image is the
re-rendered program, so the scene it shows is known exactly: `apply_program(scene, program)`. A question about
that scene, drawn from the same generators as the source's (questions.py), has an answer known by construction.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from ..method.answers import normalise_text
from .program import ProgramError, apply_program, decode_rgb, scene_of
from .questions import SCENE_CATEGORIES, QueryError, generate_question, plausible_answers
from .render import render_image


class NoNextTurn(ValueError):
    """The previous turn's result admits no next turn (its program does not fit, no new question fits)."""


def is_scene_turn(meta: dict[str, Any], program: dict[str, Any] | None) -> bool:
    return meta.get("world") == "scenes" and "scene" in meta and isinstance(program, dict) and (
        program.get("kind") == "scene"
    )


def next_scene_turn(
    meta: dict[str, Any],
    program: dict[str, Any],
    edited_png: bytes,
    previous_question: str,
    *,
    seed: int,
    chain_id: str,
    turn: int,
    avoid_categories: tuple[str, ...] = (),
    prefer: str | None = None,
) -> tuple[str, str, str, dict[str, Any]]:
    """(question, answer, category, meta) of turn `turn`, asked about the scene `edited_png` shows.

    The edited image must show the program's scene pixel for pixel (the judge tolerates a few stray pixels;
    a question whose truth rests on the scene does not), and the question differs from the previous turn's.
    Seeded by (seed, chain, turn): a rerun draws the same question."""
    try:
        after = apply_program(scene_of(meta), program)
        shown = np.asarray(decode_rgb(edited_png))
    except ProgramError as exc:
        raise NoNextTurn(f"the previous turn's program does not give a scene: {exc}") from None
    if not np.array_equal(shown, np.asarray(render_image(after))):
        raise NoNextTurn("the accepted edit does not show its program's scene exactly")
    rng = random.Random(f"uniedit-chain/{seed}/{chain_id}/{turn}")
    categories = [c for c in SCENE_CATEGORIES if c not in avoid_categories]
    rng.shuffle(categories)
    if prefer in categories:  # the record's own kind of question first, when it still fits the scene
        categories.remove(prefer)
        categories.insert(0, prefer)
    before = normalise_text(previous_question)
    for category in categories:
        for _ in range(4):
            try:
                question, answer, spec = generate_question(after, category, rng)
            except QueryError:
                break
            if normalise_text(question) != before:
                return question, answer, category, {
                    "world": "scenes",
                    "scene": after.model_dump(mode="json"),
                    "question_spec": spec,
                    "answer_space": [str(v) for v in plausible_answers(after, spec["query"])],
                }
    raise NoNextTurn("no new question fits the edited scene")
