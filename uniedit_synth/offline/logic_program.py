"""A scene program that implements an instruction plan's logic exactly: its operators, the questions it
embeds (the record's own and its siblings'), a condition nested in one branch, a multiple-choice switch and
a count that sets a branch's amount. The plan (method/plan.py) decides the logic; this module only picks
visible, distinct actions for its leaves and checks them on the scene.

Program shape (version 3, a superset of program.py's): the top test may be `{"op": "and" | "or", "tests":
[...]}`; a test with its own `"query"` tests another question about the scene; operators beyond eq / lt /
gt are `{"op": ..., "operands": [...]}`; a switch is a chain of eq tests (case k's test in case k-1's else
branch, the last case the final else); a count parameter is `add_count` with `"count": {"query": q,
"formula": same | plus_one}` or `keep_one` (remove all but one of the counted objects).
"""

from __future__ import annotations

import json
import random
from typing import Any

from .choose import (
    _answer_actions,
    _leaf_scenes,
    _plain_actions,
    new_object,
    pick_distractor,
    scene_program,
    typed_candidate,
)
from .program import ANSWER, LOGIC_OPS, ProgramError, decided_conditions
from .questions import QueryError, answer_query, select

PROGRAM_VERSION = 3


def plan_queries(plan: dict[str, Any], spec: dict[str, Any], siblings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The query of every question the plan embeds: the record's own, then each sibling's by its text."""
    queries = [spec["query"]]
    for text in plan.get("questions", [])[1:]:
        match = next((s for s in siblings if s.get("question") == text), None)
        meta = (match or {}).get("meta") or {}
        if "question_spec" not in meta:
            raise ProgramError(f"the plan embeds {text!r}, which is not a sibling of this offline record")
        queries.append(meta["question_spec"]["query"])
    return queries


def _typed(query: dict[str, Any], value: Any, raw: str) -> int | str:
    if query["type"] == "choice":
        return int(raw) if isinstance(value, int) else str(raw)
    return typed_candidate(query, value, raw)


def condition_test(condition: dict[str, Any], queries: list[dict[str, Any]], scene: Any) -> dict[str, Any]:
    """A plan condition as a program test (`query` added when it is not the program's own question)."""
    query = queries[condition["question"]]
    value = answer_query(scene, query)
    op, operands = condition["operator"], [str(o) for o in condition.get("operands", [])]
    if op == "eq":
        test: dict[str, Any] = {"op": "eq", "value": _typed(query, value, operands[0])}
    elif op in ("lt", "gt"):
        test = {"op": op, "value": int(operands[0])}
    elif op in LOGIC_OPS:
        test = {"op": op, "operands": operands}
    else:
        raise ProgramError(f"no program test for operator {op!r}")
    if condition["question"] != 0:
        test["query"] = query
    return test


def _parameter_action(
    parameter: dict[str, Any], queries: list[dict[str, Any]], scene: Any, rng: random.Random, avoid: tuple[str, ...],
    category: str = "",
) -> dict[str, Any]:
    query = queries[parameter["question"]]
    if parameter["formula"] == "answer":  # the record's answer used by the edit (that colour, that word…)
        options = _answer_actions(scene, query, answer_query(scene, query), rng, avoid, set(), category)
        if not options:
            raise ProgramError("no edit that uses this answer fits the scene")
        return rng.choice(options)
    if query["type"] != "count":
        raise ProgramError("a count parameter needs a counting question")
    if parameter["formula"] == "all_but_one":
        return {"op": "keep_one", "target": query["filter"], "question": parameter["question"]}
    free = scene.free_cells()
    if int(parameter["value"]) > len(free):  # a wrong count shows either way (one fewer always fits)
        raise ProgramError("not enough free cells for the count")
    cells = [list(c) for c in rng.sample(free, len(free))]
    count = {"query": query if parameter["question"] else None, "formula": parameter["formula"]}
    fixed = {}
    own = queries[0]
    if parameter["question"] and parameter["path"] == "" and own["type"] == "attr" and own["attr"] in ("color", "shape"):
        fixed = {own["attr"]: ANSWER}  # a synthesis: the new objects take this record's answer
    return {"op": "add_count", "object": new_object(rng, avoid, **fixed), "count": count, "cells": cells,
            "question": parameter["question"]}  # fmt: skip


def plan_program(
    scene: Any,
    spec: dict[str, Any],
    plan: dict[str, Any],
    siblings: list[dict[str, Any]],
    rng: random.Random,
    avoid: tuple[str, ...],
    tries: int = 24,
) -> dict[str, Any]:
    """A program for `plan` (a dumped InstructionPlan with `leaves`, or a synthesis with a count parameter)
    whose leaves are visible, pairwise different edits and whose conditions are not decided in advance."""
    queries = plan_queries(plan, spec, siblings)
    query = queries[0]
    category = str(spec.get("category") or "")
    ref = query.get("ref") if query["type"] != "verify" else query["query"].get("ref")
    try:
        ref_ids = {o.id for o in select(scene, ref)} if ref is not None else set()
    except QueryError:
        ref_ids = set()
    operands = tuple(str(o) for c in plan.get("conditions", []) for o in c.get("operands", []))
    avoids = tuple(a for a in (*avoid, *operands) if a)
    parameter = plan.get("parameter")
    original = scene.model_dump()
    for _ in range(tries):
        if plan.get("style") != "conditional":  # a synthesis whose amount is the count (capped)
            program = {
                "kind": "scene", "version": PROGRAM_VERSION,
                "condition": {"query": query, "test": {"op": "always"}},
                "if_true": _parameter_action(parameter, queries, scene, rng, avoids, category), "if_false": None,
            }  # fmt: skip
        else:
            program = _conditional(plan, queries, scene, rng, avoids, ref, ref_ids, category)
            if program is None:
                continue
        leaves = _leaf_scenes(scene, program)
        if leaves is None or original in leaves:
            continue
        if len({json.dumps(x, sort_keys=True) for x in leaves}) < len(leaves):
            continue
        if decided_conditions(scene, program):
            continue
        return program
    raise ProgramError("no edit program with distinct, visible leaves fits this plan on this scene")


def _conditional(
    plan: dict[str, Any],
    queries: list[dict[str, Any]],
    scene: Any,
    rng: random.Random,
    avoids: tuple[str, ...],
    ref: dict[str, Any] | None,
    ref_ids: set[int],
    category: str,
) -> dict[str, Any] | None:
    leaves = [leaf["path"] for leaf in plan["leaves"]]
    plain = _plain_actions(scene, queries[0], rng, avoids, ref, ref_ids, category)
    parameter = plan.get("parameter")
    pinned: dict[str, dict[str, Any]] = {}
    if parameter:
        pinned[parameter["path"]] = _parameter_action(parameter, queries, scene, rng, avoids, category)
    free = [p for p in leaves if p not in pinned]
    if len(plain) < len(free):
        return None
    actions = dict(zip(free, rng.sample(plain, len(free)), strict=True)) | pinned
    conditions = plan["conditions"]
    top = next(c for c in conditions if c["place"] == "top")
    if top["operator"] == "switch":
        options = [str(o) for o in top["operands"]]
        value = answer_query(scene, queries[0])
        node: Any = actions[f"case:{options[-1]}"]
        for option in reversed(options[:-1]):
            test = {"op": "eq", "value": _typed(queries[0], value, option)}
            node = {"test": test, "if_true": actions[f"case:{option}"], "if_false": node}
        program = {"kind": "scene", "version": PROGRAM_VERSION,
                   "condition": {"query": queries[0], "test": node["test"]},
                   "if_true": node["if_true"], "if_false": node["if_false"]}  # fmt: skip
        return program
    test = condition_test(top, queries, scene)
    joined = next((c for c in conditions if c["place"] == "join"), None)
    if joined is not None:
        test = {"op": plan["join"], "tests": [test, condition_test(joined, queries, scene)]}
    branches: dict[str, Any] = {}
    for branch in ("then", "else"):
        inner = next((c for c in conditions if c["place"] == branch), None)
        if inner is None:
            branches[branch] = actions[branch]
        else:
            branches[branch] = {
                "test": condition_test(inner, queries, scene),
                "if_true": actions[f"{branch}/then"],
                "if_false": actions[f"{branch}/else"],
            }
    program = {"kind": "scene", "version": PROGRAM_VERSION, "condition": {"query": queries[0], "test": test},
               "if_true": branches["then"], "if_false": branches["else"]}  # fmt: skip
    if top["operator"] == "eq":
        program["candidate"] = str(top["operands"][0])
    return program


#: the plan fields of the release's forms (one equality test, or no condition)
RELEASE_PLAN_KEYS = ("style", "candidate", "candidate_is_answer", "expected_branch", "then_edit", "else_edit")


def follows_logic(plan: dict[str, Any]) -> bool:
    """A drawn plan beyond the release's forms (an operator other than eq, a joined or nested condition, a
    switch, a count parameter) is followed exactly by logic_program.py; the release's forms by choose.py."""
    if plan.get("parameter"):
        return True
    if not plan.get("leaves"):
        return False
    return plan.get("operator") not in (None, "eq") or int(plan.get("depth") or 0) > 1 or bool(plan.get("join"))


def with_candidate(plan: dict[str, Any], scene: Any, spec: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A plan whose eq test has no candidate (the rewriter is asked for one) gets a distractor here."""
    conditions = plan.get("conditions") or []
    top = next((c for c in conditions if c.get("place") == "top"), None)
    if top is None or top["operator"] != "eq" or top.get("operands"):
        return plan
    value = answer_query(scene, spec["query"])
    candidate = str(pick_distractor(scene, spec["query"], value, rng))
    fixed = [{**c, "operands": [candidate]} if c is top else c for c in conditions]
    return {**plan, "conditions": fixed, "operands": [candidate]}


def program_for_plan(
    scene: Any, spec: dict[str, Any], plan: dict[str, Any], siblings: list[dict[str, Any]], rng: random.Random,
    avoid: tuple[str, ...],
) -> dict[str, Any]:
    """The program the builtin rewriter writes for a drawn plan: logic_program for the forms beyond the
    release's (follows_logic), choose.scene_program for the release's own."""

    if follows_logic(plan):
        return plan_program(scene, spec, with_candidate(plan, scene, spec, rng), siblings, rng, avoid)
    return scene_program(scene, spec, rng, avoid=avoid[0] if avoid else "", plan=plan)
