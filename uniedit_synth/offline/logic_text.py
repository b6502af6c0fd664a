"""Phrasing a plan-following program (logic_program.py) as an instruction: every embedded question posed,
each condition in words (its operator and operands, never which way it comes out), the branch tree as
clauses, and one edit text per leaf for the reply's `branches`."""

from __future__ import annotations

import random
from typing import Any

from ..method.answers import number_words
from .instructions import (
    AESTHETICS_DIRECTIVE,
    LEAD_INS,
    _quoted,
    candidate_condition,
    capitalise,
    scene_action,
    scene_intro,
    with_article,
)
from .questions import noun_phrase
from .world import Scene

#: questions are named by letter: a digit or an ordinal ("(2)", "the second") could state a count answer
LETTERS = ("A", "B", "C")
MULTI_INTROS = (
    "answer these questions about the picture: {qs}",
    "work out the answers to {qs}",
    "look at the image and settle {qs}",
    "find out {qs}",
)


def _number(value: Any, rng: random.Random) -> str:
    n = int(value)
    return number_words(n) if 0 <= n <= 20 and rng.random() < 0.4 else str(n)


def _noun(query: dict[str, Any], index: int, multi: bool) -> str:
    """How a condition names the answer it tests."""
    if multi:
        return f"the answer to question {LETTERS[index]}"
    kind = query["type"]
    if kind == "choice":
        return "the answer"
    if kind == "count":
        return "the count"
    if kind in ("board", "count_arith"):
        return "the result"
    if kind == "read":
        return "the word"
    if kind == "side":
        return "that side"
    if kind == "attr":
        return "that colour" if query["attr"] == "color" else "that shape"
    return "the answer"


def _value(query: dict[str, Any], raw: Any, rng: random.Random) -> str:
    inner = query.get("query", query) if query["type"] == "choice" else query
    if inner["type"] in ("count", "count_arith", "board"):
        return _number(raw, rng)
    if inner["type"] == "attr" and inner["attr"] == "shape":
        return with_article(str(raw))
    return str(raw)


def condition_words(
    condition: dict[str, Any], queries: list[dict[str, Any]], category: str, rng: random.Random, multi: bool
) -> str:
    """One plan condition in words; its operands always follow an "if" / "when" in the same clause."""
    index = condition["question"]
    query = queries[index]
    op, operands = condition["operator"], [str(o) for o in condition.get("operands", [])]
    if op == "statement":
        return str(query["statement"])
    noun = _noun(query, index, multi)
    if op == "eq" and not multi and query["type"] not in ("choice", "verify"):
        return candidate_condition(query, operands[0], category, rng)
    value = [_value(query, o, rng) for o in operands] if op != "parity" else operands
    if op == "eq":
        return f"{noun} is {value[0]}"
    if op == "ne":
        return rng.choice((f"{noun} is not {value[0]}", f"{noun} is anything other than {value[0]}"))
    if op == "lt":
        return rng.choice((f"{noun} is less than {value[0]}", f"{noun} is below {value[0]}"))
    if op == "gt":
        return rng.choice((f"{noun} is greater than {value[0]}", f"{noun} is above {value[0]}"))
    if op == "between":
        return f"{noun} is between {value[0]} and {value[1]}"
    if op == "parity":
        return rng.choice((f"{noun} is an {operands[0]} number", f"{noun} is {operands[0]}"))
    if op == "one_of":
        listed = " or ".join(value)
        return rng.choice((f"{noun} is {listed}", f"{noun} is either {listed}"))
    raise ValueError(f"no phrasing for operator {op!r}")


def parameter_words(action: dict[str, Any], queries: list[dict[str, Any]], multi: bool, rng: random.Random) -> str:
    """A count parameter's edit: the amount said through the question, never as a number."""
    index = int(action.get("question", 0))
    source = f"the answer to question {LETTERS[index]}" if multi else "that count"
    if action["op"] == "keep_one":
        plural = noun_phrase(queries[index]["filter"], plural=True)
        return rng.choice((f"remove all the {plural} but one", f"take away every one of the {plural} except one"))
    obj = action["object"]
    if "$answer" in obj.values():  # the record's own answer: "cubes of that same colour"
        attr = next(k for k, v in obj.items() if v == "$answer")
        rest = {k: v for k, v in obj.items() if v != "$answer"}
        tail = "of that same colour" if attr == "color" else "of that same shape"
        things, thing = f"{noun_phrase(rest, plural=True)} {tail}", f"{noun_phrase(rest)} {tail}"
    else:
        things, thing = noun_phrase(obj, plural=True), noun_phrase(obj)
    if action["count"]["formula"] == "plus_one":  # no number word: "one more" would state an answer of 1
        return rng.choice(
            (f"add as many {things} as {source} and then another {thing}, on free spots of the floor",
             f"place {things} on empty places of the floor, as many as {source} and a further {thing} on top")
        )  # fmt: skip
    return rng.choice(
        (f"add exactly as many {things} as {source} on free spots of the floor",
         f"place {source} in {things} on empty places of the floor")
    )  # fmt: skip


def leaf_words(
    action: dict[str, Any], queries: list[dict[str, Any]], category: str, scene: Scene, rng: random.Random, multi: bool
) -> str:
    if "question" in action:
        return parameter_words(action, queries, multi, rng)
    return scene_action(action, queries[0], category, scene, rng)


def intro_words(questions: list[str], queries: list[dict[str, Any]], category: str, scene: Scene, rng: random.Random) -> str:
    if len(questions) == 1:
        return scene_intro(queries[0], questions[0], category, scene, rng)
    quoted = [f"({LETTERS[i]}) {_quoted(q)}" for i, q in enumerate(questions)]
    qs = ", ".join(quoted[:-1]) + f" and {quoted[-1]}"
    return capitalise(f"{rng.choice(LEAD_INS)}{rng.choice(MULTI_INTROS).format(qs=qs)}").rstrip(".") + "."


def plan_instruction(
    program: dict[str, Any],
    plan: dict[str, Any],
    questions: list[str],
    queries: list[dict[str, Any]],
    category: str,
    scene: Scene,
    rng: random.Random,
) -> tuple[str, str | None, str | None, list[dict[str, str]]]:
    """(instruction, then_edit, else_edit, branches) for a program from logic_program.plan_program."""
    multi = len(questions) > 1
    intro = intro_words(questions, queries, category, scene, rng)
    if plan.get("style") != "conditional":
        action = leaf_words(program["if_true"], queries, category, scene, rng, multi)
        body = rng.choice((f"{intro} Then {action}.", f"{intro} {capitalise(action)}."))
        return f"{body} {AESTHETICS_DIRECTIVE}", None, None, []
    conditions = plan["conditions"]
    top = next(c for c in conditions if c["place"] == "top")
    if top["operator"] == "switch":
        return _switch(program, top, queries, category, scene, rng, intro)
    words = condition_words(top, queries, category, rng, multi)
    joined = next((c for c in conditions if c["place"] == "join"), None)
    if joined is not None:
        words = f"{words} {plan['join']} {condition_words(joined, queries, category, rng, multi)}"
    branches: list[dict[str, str]] = []
    texts: dict[str, str] = {}
    for branch, key in (("then", "if_true"), ("else", "if_false")):
        node = program[key]
        inner = next((c for c in conditions if c["place"] == branch), None)
        if inner is None:
            texts[branch] = leaf_words(node, queries, category, scene, rng, multi)
            branches.append({"path": branch, "edit": texts[branch]})
            continue
        first = leaf_words(node["if_true"], queries, category, scene, rng, multi)
        second = leaf_words(node["if_false"], queries, category, scene, rng, multi)
        branches += [{"path": f"{branch}/then", "edit": first}, {"path": f"{branch}/else", "edit": second}]
        condition = condition_words(inner, queries, category, rng, multi)
        texts[branch] = rng.choice(
            (f"if {condition}, {first}, and if not, {second}", f"when {condition}, {first}, but otherwise {second}")
        )
    templates = [
        f"{intro} If {words}, {texts['then']}; otherwise, {texts['else']}.",
        f"{intro} Then, if {words}, {texts['then']}. If not, {texts['else']}.",
        f"{intro} When {words}, {texts['then']}; in every other case, {texts['else']}.",
    ]
    return f"{rng.choice(templates)} {AESTHETICS_DIRECTIVE}", texts["then"], texts["else"], branches


def _switch(
    program: dict[str, Any],
    top: dict[str, Any],
    queries: list[dict[str, Any]],
    category: str,
    scene: Scene,
    rng: random.Random,
    intro: str,
) -> tuple[str, str | None, str | None, list[dict[str, str]]]:
    """One clause per option: "if it is red, …; if it is blue, …; if it is green, …"."""
    options = [str(o) for o in top["operands"]]
    actions, node = [], program
    for _ in options[:-1]:
        actions.append(node["if_true"])
        node = node["if_false"]
    actions.append(node)
    lead = rng.choice(("if the answer is", "if it is", "when the answer is"))
    clauses, branches = [], []
    for option, action in zip(options, actions, strict=True):
        edit = leaf_words(action, queries, category, scene, rng, False)
        clauses.append(f"{lead} {_value(queries[0], option, rng)}, {edit}")
        branches.append({"path": f"case:{option}", "edit": edit})
    body = capitalise("; ".join(clauses))
    return f"{intro} {body}. {AESTHETICS_DIRECTIVE}", None, None, branches
