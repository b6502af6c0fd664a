"""Phrasing an edit program as a natural-language edit instruction that embeds the question.

The builtin rewriter's prose, chosen by a seeded rng and following the instruction plan: a conditional
reads "<opening: the question> If <the answer is the candidate>, <edit>; otherwise, <other edit>" (the
other edit itself a condition in about 30 % of rows); synthesis, render and transform read "<opening>
<edit that uses the answer>". Every instruction ends with the aesthetics directive. Openings combine a
lead-in, a way of posing the question and the question's own wording, so they vary as much as the
questions do. Phrasing is a pure function of (program, question, scene, rng); keeping the answer out of
the text is checked by the caller (answers.leaks_answer).
"""

from __future__ import annotations

import random
from typing import Any

from ..method.answers import number_words
from .program import is_nested
from .questions import describe, noun_phrase, slot_phrase
from .world import ROW_NAMES, Board, Scene, Sign

AESTHETICS_DIRECTIVE = "Keep the lighting and style of the scene unchanged."
COLUMN_PHRASES = (
    "at the far left",
    "just left of the centre",
    "just right of the centre",
    "at the far right",
)
LEAD_INS = (
    "",
    "First, ",
    "To begin, ",
    "Before you edit anything, ",
    "Looking only at the original image, ",
    "Using the original picture, ",
    "As a first step, ",
    "To start, ",
    "Carefully, ",
    "Without guessing, ",
    "In the original scene, ",
    "Start here: ",
    "Before changing a pixel, ",
    "Take a close look and ",
)
POSINGS = (
    "answer the question {q}",
    "work out the answer to {q}",
    "figure out {q}",
    "determine the answer to this question: {q}",
    "solve this question about the picture: {q}",
    "find out {q}",
    "settle the question {q}",
    "look at the image and answer {q}",
    "decide, from what you see, {q}",
)


def with_article(phrase: str) -> str:
    return f"{'an' if phrase[:1] in 'aeiou' else 'a'} {phrase}"


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _quoted(question: str) -> str:
    return f'"{question.strip()}"'


def _own_wordings(query: dict[str, Any], scene: Scene) -> list[str]:
    """Ways to pose the question in the rewriter's own words (not for knowledge: a paraphrase would give
    away the fact the question tests)."""
    kind = query["type"]
    if kind == "count":
        plural = noun_phrase(query["filter"], plural=True)
        return [
            f"count the {plural} in the scene",
            f"work out how many {plural} there are",
            f"tally up the {plural}",
            f"note how many {plural} stand on the floor",
        ]
    if kind == "attr":
        ref, word = describe(query["ref"]), "colour" if query["attr"] == "color" else "shape"
        return [
            f"work out the {word} of {ref}",
            f"look at {ref} and note its {word}",
            f"identify the {word} of {ref}",
        ]
    if kind == "side":
        return [f"work out which half of the picture {describe(query['ref'])} stands in"]
    if kind == "read":
        return [f"read the word on {slot_phrase(scene, query['slot'], 'sign')}"]
    if kind == "board":
        return [f"solve the calculation on {slot_phrase(scene, query['slot'], 'board')}"]
    if kind == "count_arith":
        p1, p2 = (noun_phrase(f, plural=True) for f in query["filters"])
        if query["op"] == "+":
            return [f"add the number of {p1} to the number of {p2}"]
        return [f"subtract the number of {p2} from the number of {p1}"]
    return []


def scene_intro(query: dict[str, Any], question: str, category: str, scene: Scene, rng: random.Random) -> str:
    posings = [p.format(q=_quoted(question)) for p in POSINGS]
    if category != "knowledge":
        posings += _own_wordings(query, scene) * 3  # as likely as the quoted question
    lead = rng.choice(LEAD_INS)
    return capitalise(f"{lead}{rng.choice(posings)}").rstrip(".") + "."


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


def _number(value: Any, rng: random.Random) -> str:
    n = int(value)
    return number_words(n) if 0 <= n <= 20 and rng.random() < 0.4 else str(n)


def candidate_condition(query: dict[str, Any], candidate: Any, category: str, rng: random.Random) -> str:
    """The condition "the answer is <candidate>" in words; the candidate always follows an "if" / "when"."""
    kind = query["type"]
    if kind == "choice":  # a multiple-choice question: the condition is on the value it asks for
        return candidate_condition(query["query"], candidate, category, rng)
    if kind == "verify":  # a yes/no question: its statement, or the statement denied
        statement = str(query["statement"])
        return statement if str(candidate).lower() == "yes" else f"it is not true that {statement}"
    subject = _subject(query, category)
    if kind in ("count", "count_arith", "board"):
        c = _number(candidate, rng)
        noun = _answer_noun(query)
        options = [f"{noun} is {c}", f"{noun} comes to exactly {c}", f"{noun} equals {c}"]
        if kind == "count":
            options += [f"you count exactly {c}", f"the count is {c}"]
        return rng.choice(options)
    if kind == "attr" and query["attr"] == "color":
        return rng.choice((f"it is {candidate}", f"that colour is {candidate}", f"{subject} is {candidate}"))
    if kind == "attr":
        thing = with_article(str(candidate))
        return rng.choice((f"it is {thing}", f"that shape is {thing}", f"{subject} is shaped like {thing}"))
    if kind == "side":
        return rng.choice((f"it stands in the {candidate} half", f"that side is the {candidate} one"))
    if kind == "read":
        return rng.choice((f"the word is {candidate}", f"the sign reads {candidate}"))
    raise ValueError(f"no phrasing for a candidate on query {kind!r}")


def scene_condition(query: dict[str, Any], test: dict[str, Any], category: str, rng: random.Random) -> str:
    op = test["op"]
    if op == "eq":
        return candidate_condition(query, test["value"], category, rng)
    noun = "it" if query["type"] in ("count", "count_arith", "board") else _answer_noun(query)
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


def _object_phrase(spec: dict[str, Any]) -> str:
    if spec["color"] == "$answer":
        return f"{spec['size']} {spec['material']} {spec['shape']} of that same colour"
    if spec["shape"] == "$answer":
        return f"{spec['size']} {spec['color']} {spec['material']} object of that same shape"
    return noun_phrase(spec)


def scene_action(
    action: dict[str, Any], query: dict[str, Any], category: str, scene: Scene, rng: random.Random
) -> str:
    op = action["op"]
    if op in ("recolor", "remove", "resize", "transform"):
        selector = action["target"]
        if action.get("every"):
            target = rng.choice(
                (f"every {noun_phrase(selector)}", f"all the {noun_phrase(selector, plural=True)}")
            )
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
        if op == "transform":
            into = action["into"]
            thing = with_article(f"{into['color']} {into['material']} {into['shape']}")
            return rng.choice(
                (
                    f"turn {target} into {thing}, keeping its place and size",
                    f"transform {target} into {thing} in the same spot",
                )
            )
        if action["color"] == "$answer":
            return rng.choice(
                (f"paint {target} in that same colour", f"recolour {target} to match that colour")
            )
        return rng.choice((f"paint {target} {action['color']}", f"recolour {target} {action['color']}"))
    if op == "keep_one":
        plural = noun_phrase(action["target"], plural=True)
        return rng.choice((f"remove all the {plural} but one", f"take away every one of the {plural} except one"))
    if op == "add" and isinstance(action["cell"], dict):  # at the answered place: that half of the picture
        thing = with_article(_object_phrase(action["object"]))
        row = ROW_NAMES[action["cell"]["row"]]
        return rng.choice(
            (f"place {thing} in the {row} row on that same side of the picture, next to the middle",
             f"add {thing} to the {row} row in that half of the image, as close to the centre as there is room")
        )  # fmt: skip
    if op == "add":
        thing = with_article(_object_phrase(action["object"]))
        where = _cell_phrase(action["cell"])
        return rng.choice((f"add {thing} {where}", f"place {thing} {where}"))
    if op == "add_count":
        things = noun_phrase(action["object"], plural=True)
        return rng.choice(
            (
                f"add exactly that many {things} on empty spots of the floor",
                f"place that same number of {things} in free places on the floor",
            )
        )
    if op == "write_text":
        what = _answer_noun(query) if action["text"] == "$answer" else f'the word "{action["text"]}"'
        if action.get("worked"):
            what = rng.choice(("the calculation worked out, ending in the result", "the working and the result"))
        item = scene.wall_item(action["slot"])
        if isinstance(item, Board):
            board = slot_phrase(scene, action["slot"], "board")
            return f"write {what} on {board} in place of the question mark"
        if isinstance(item, Sign) and item.text:
            return f"write {what} on {slot_phrase(scene, action['slot'], 'sign')} in place of its word"
        if isinstance(item, Sign):
            return f"write {what} on the blank panel {_slot_where(action['slot'])}"
        return rng.choice(
            (
                f"hang a new sign {_slot_where(action['slot'])} with {what} written on it",
                f"put up a white sign {_slot_where(action['slot'])} showing {what}",
            )
        )
    raise ValueError(f"no phrasing for action op {op!r}")


def branch_text(
    node: dict[str, Any], query: dict[str, Any], category: str, scene: Scene, rng: random.Random
) -> str:
    """One branch as words: an action, or a nested condition with its two actions."""
    if not is_nested(node):
        return scene_action(node, query, category, scene, rng)
    inner = scene_condition(query, node["test"], category, rng)
    first = scene_action(node["if_true"], query, category, scene, rng)
    second = scene_action(node["if_false"], query, category, scene, rng)
    return rng.choice(
        (
            f"if {inner}, {first}, and if not, {second}",
            f"when {inner}, {first}, but otherwise {second}",
        )
    )


def assemble(
    intro: str, condition: str, if_true: str, if_false: str, rng: random.Random, nested: bool
) -> str:
    templates = [
        f"{intro} If {condition}, {if_true}; otherwise, {if_false}.",
        f"{intro} Then, if {condition}, {if_true}. If not, {if_false}.",
        f"{intro} When {condition}, {if_true}; in every other case, {if_false}.",
    ]
    if not nested:
        templates.append(f"{intro} {capitalise(if_true)} if {condition}, or else {if_false}.")
    return f"{rng.choice(templates)} {AESTHETICS_DIRECTIVE}"


def scene_instruction_parts(
    program: dict[str, Any], question: str, category: str, scene: Scene, rng: random.Random
) -> tuple[str, str | None, str | None]:
    """(instruction, then_edit, else_edit) for a scene program; the branch edits are None without a
    condition."""
    query = program["condition"]["query"]
    intro = scene_intro(query, question, category, scene, rng)
    test = program["condition"]["test"]
    if test["op"] == "always":
        action = scene_action(program["if_true"], query, category, scene, rng)
        body = rng.choice((f"{intro} Then {action}.", f"{intro} {capitalise(action)}."))
        return f"{body} {AESTHETICS_DIRECTIVE}", None, None
    then_edit = branch_text(program["if_true"], query, category, scene, rng)
    else_edit = branch_text(program["if_false"], query, category, scene, rng)
    condition = scene_condition(query, test, category, rng)
    text = assemble(intro, condition, then_edit, else_edit, rng, is_nested(program["if_false"]))
    return text, then_edit, else_edit


def generic_condition(test: dict[str, Any]) -> str:
    op = test["op"]
    if op == "eq":
        return f"the answer is {test['value']}"
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


def generic_instruction_parts(
    program: dict[str, Any], question: str, rng: random.Random
) -> tuple[str, str | None, str | None]:
    """(instruction, then_edit, else_edit) for a generic program (an image from outside the offline world)."""
    intro = (
        capitalise(f"{rng.choice(LEAD_INS)}{rng.choice(POSINGS).format(q=_quoted(question))}").rstrip(".")
        + "."
    )
    test = program["condition"]["test"]
    if test["op"] == "always":
        action = generic_action(program["if_true"], rng)
        return f"{intro} Then {action}. {AESTHETICS_DIRECTIVE}", None, None
    then_edit, else_edit = generic_action(program["if_true"], rng), generic_action(program["if_false"], rng)
    return assemble(intro, generic_condition(test), then_edit, else_edit, rng, False), then_edit, else_edit
