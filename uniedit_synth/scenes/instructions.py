"""Phrasing an edit program as a natural-language edit instruction that embeds the question.

The builtin rewriter's prose: several templates per question kind and per condition / action, chosen by a
seeded rng, always in the shape "answer <question>; if <condition on the answer>, <edit>; otherwise,
<other edit>", ending with the aesthetics directive. Phrasing is a pure function of (program, question,
scene, rng); keeping the answer out of the text is checked by the caller (questions.mentions_answer).
"""

from __future__ import annotations

import random
from typing import Any

from .questions import describe, noun_phrase, slot_phrase
from .world import ROW_NAMES, Board, Scene, Sign

AESTHETICS_DIRECTIVE = "Keep the lighting and style of the scene unchanged."
COLUMN_PHRASES = (
    "at the far left",
    "just left of the centre",
    "just right of the centre",
    "at the far right",
)


def with_article(phrase: str) -> str:
    return f"{'an' if phrase[:1] in 'aeiou' else 'a'} {phrase}"


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _quoted(question: str) -> str:
    return f'"{question.strip()}"'


def _generic_intros(question: str) -> list[str]:
    return [
        f"Answer the question {_quoted(question)} by looking at the image.",
        f"First work out the answer to this question about the picture: {question.strip()}",
        f"Look carefully at the scene and answer {_quoted(question)} for yourself.",
    ]


def scene_intro(query: dict[str, Any], question: str, category: str, scene: Scene, rng: random.Random) -> str:
    intros = _generic_intros(question)
    if category != "knowledge":  # a paraphrase would give away the fact a knowledge question tests
        kind = query["type"]
        if kind == "count":
            plural = noun_phrase(query["filter"], plural=True)
            intros += [f"Count the {plural} in the scene.", f"Work out how many {plural} there are."]
        elif kind == "attr":
            ref, word = describe(query["ref"]), "colour" if query["attr"] == "color" else "shape"
            intros += [f"Work out the {word} of {ref}.", f"Look at {ref} and note its {word}."]
        elif kind == "side":
            intros += [f"Work out which half of the picture {describe(query['ref'])} stands in."]
        elif kind == "read":
            intros += [f"Read the word on {slot_phrase(scene, query['slot'], 'sign')}."]
        elif kind == "board":
            intros += [f"Solve the calculation on {slot_phrase(scene, query['slot'], 'board')}."]
        elif kind == "count_arith":
            p1, p2 = (noun_phrase(f, plural=True) for f in query["filters"])
            intros += (
                [f"Add the number of {p1} to the number of {p2}."]
                if query["op"] == "+"
                else [f"Subtract the number of {p2} from the number of {p1}."]
            )
    return rng.choice(intros)


def _answer_noun(query: dict[str, Any]) -> str:
    if query["type"] in ("board", "count_arith"):
        return "the result"
    if query["type"] == "read":
        return "the word"
    return "that number"


def _subject(query: dict[str, Any], category: str) -> str:
    """How a condition names the object the question is about. Knowledge questions keep it indirect: "the
    metal object" would give away the fact (magnets attract metal) the question tests."""
    ref = query.get("ref")
    if ref is None or category == "knowledge":
        return "that object"
    return describe(ref)


def scene_condition(query: dict[str, Any], test: dict[str, Any], category: str, rng: random.Random) -> str:
    op = test["op"]
    noun = _answer_noun(query)
    subject = _subject(query, category)
    if op == "even":
        return f"{noun} is even"
    if op == "odd":
        return f"{noun} is odd"
    if op == "gt":
        return rng.choice((f"{noun} is greater than {test['value']}", f"{noun} is more than {test['value']}"))
    if op == "lt":
        return rng.choice((f"{noun} is less than {test['value']}", f"{noun} is smaller than {test['value']}"))
    if op == "warm":
        return rng.choice(("that colour is a warm one", "the colour is warm, like fire or sunshine"))
    if op == "rolls":
        return rng.choice(
            (f"{subject} could roll across the floor", f"the shape of {subject} would let it roll")
        )
    if op == "flat_top":
        return rng.choice(
            (f"{subject} has a flat top", f"something could be stacked flat on top of {subject}")
        )
    if op == "pointed":
        return rng.choice((f"{subject} has a pointed tip", f"the shape of {subject} ends in a sharp point"))
    if op == "is_side":
        return f"{subject} stands in the {test['value']} half of the picture"
    if op == "same_as":
        other = test["other"]
        if other["type"] == "side":
            return f"{subject} stands in the same half of the picture as {describe(other['ref'])}"
        word = "colour" if other["attr"] == "color" else "shape"
        return f"{subject} has the same {word} as {describe(other['ref'])}"
    if op == "len_gt":
        return f"the word has more than {test['value']} letters"
    if op == "vowel_start":
        return "the word starts with a vowel"
    raise ValueError(f"no phrasing for test op {op!r}")


def _cell_phrase(cell: list[int]) -> str:
    col, row = cell
    return f"{COLUMN_PHRASES[col]} of the {ROW_NAMES[row]} row"


def _slot_where(slot: str) -> str:
    return "in the middle of the wall" if slot == "middle" else f"on the {slot} of the wall"


def scene_action(
    action: dict[str, Any], query: dict[str, Any], category: str, scene: Scene, rng: random.Random
) -> str:
    op = action["op"]
    if op in ("recolor", "remove", "resize"):
        selector = action["target"]
        if action.get("every"):
            target = f"every {noun_phrase(selector)}"
        elif selector == query.get("ref"):
            target = _subject(query, category)
        else:
            target = describe(selector)
        if op == "remove":
            return rng.choice((f"remove {target}", f"take {target} out of the scene", f"delete {target}"))
        if op == "resize":
            if action["size"] == "large":
                return rng.choice((f"make {target} larger", f"enlarge {target}"))
            return rng.choice((f"make {target} smaller", f"shrink {target}"))
        if action["color"] == "$answer":
            return rng.choice(
                (f"paint {target} in that same colour", f"recolour {target} to match that colour")
            )
        return rng.choice((f"paint {target} {action['color']}", f"recolour {target} {action['color']}"))
    if op == "add":
        spec = action["object"]
        where = _cell_phrase(action["cell"])
        if spec["color"] == "$answer":
            thing = with_article(f"{spec['size']} {spec['material']} {spec['shape']} of that same colour")
        elif spec["shape"] == "$answer":
            thing = with_article(
                f"{spec['size']} {spec['color']} {spec['material']} object of that same shape"
            )
        else:
            thing = with_article(noun_phrase(spec))
        return rng.choice((f"add {thing} {where}", f"place {thing} {where}"))
    if op == "write_text":
        what = _answer_noun(query) if action["text"] == "$answer" else f'the word "{action["text"]}"'
        item = scene.wall_item(action["slot"])
        if isinstance(item, Board):
            board = slot_phrase(scene, action["slot"], "board")
            return f"write {what} on {board} in place of the question mark"
        if isinstance(item, Sign):
            return f"write {what} on the blank panel {_slot_where(action['slot'])}"
        return rng.choice(
            (
                f"hang a new sign {_slot_where(action['slot'])} with {what} written on it",
                f"put up a white sign {_slot_where(action['slot'])} showing {what}",
            )
        )
    raise ValueError(f"no phrasing for action op {op!r}")


def assemble(intro: str, condition: str, if_true: str, if_false: str, rng: random.Random) -> str:
    body = rng.choice(
        (
            f"{intro} If {condition}, {if_true}; otherwise, {if_false}.",
            f"{intro} Then, if {condition}, {if_true}. If not, {if_false}.",
            f"{intro} When {condition}, {if_true}; in every other case, {if_false}.",
            f"{intro} {capitalise(if_true)} if {condition}, or else {if_false}.",
        )
    )
    return f"{body} {AESTHETICS_DIRECTIVE}"


def scene_instruction(
    program: dict[str, Any], question: str, category: str, scene: Scene, rng: random.Random
) -> str:
    """The instruction for a scene program: the question embedded, the branch logic, the directive."""
    query = program["condition"]["query"]
    return assemble(
        scene_intro(query, question, category, scene, rng),
        scene_condition(query, program["condition"]["test"], category, rng),
        scene_action(program["if_true"], query, category, scene, rng),
        scene_action(program["if_false"], query, category, scene, rng),
        rng,
    )


def generic_condition(test: dict[str, Any]) -> str:
    op = test["op"]
    if op == "even":
        return "the answer is an even number"
    if op == "gt":
        return f"the answer is a number greater than {test['value']}"
    if op == "warm":
        return "the answer is a warm colour"
    if op == "affirmative":
        return "the answer is affirmative"
    if op == "single_word":
        return "the answer is a single word"
    if op == "len_gt":
        return f"the answer is longer than {test['value']} characters"
    raise ValueError(f"no phrasing for generic test op {op!r}")


def generic_action(action: dict[str, Any], rng: random.Random) -> str:
    corner = f"the {action['corner']} corner"
    if action["op"] == "panel":
        return rng.choice(
            (
                f"write the answer in black on a white panel in {corner}",
                f"draw a white panel in {corner} with the answer written on it",
            )
        )
    if action["op"] == "swatch":
        return f"fill a solid panel in {corner} with that colour"
    return f"tint {corner} of the image {action['color']}"


def generic_instruction(program: dict[str, Any], question: str, rng: random.Random) -> str:
    """The instruction for a generic program (an image from outside the offline world)."""
    return assemble(
        rng.choice(_generic_intros(question)),
        generic_condition(program["condition"]["test"]),
        generic_action(program["if_true"], rng),
        generic_action(program["if_false"], rng),
        rng,
    )
