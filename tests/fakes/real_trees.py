"""The realistic rewriter's answers to tree plans (tests/fakes/real_models.py): a plan beyond the release's one
equality test (other operators, a condition nested in a branch, a multiple-choice switch, a joined condition)
asks for a `branches` tree, one {path, edit} per path. The fake reads the plan's brief as a model would
(operators and operands in words, the paths), writes an instruction whose clauses follow the tree, and
applies the record's failure kind to the tree: swapped branches (the reply's edits for the holding side and
the other side exchanged against the instruction's own clauses), a no-op leaf, the same edit reworded on two
leaves, a condition on another value than the plan's operand, a form of the answer in a leaf.

The fake knows one answer (the record's): a condition on another embedded question (a join, a parameter) is
read as not holding; real_path's source has no siblings, so its plans never embed one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .real_edits import Box, Stroke

_PATHS = re.compile(r"exactly these paths: (.+?) \(then = ")
_CONDITION = re.compile(
    r"^(condition|joined with '(and|or)' to the condition|nested condition inside the (then|else) branch): "
    r"operator (\w+) on question (\d+): (.*)$",
    re.MULTILINE,
)
_SWITCH = re.compile(r"switch on question (\d+): one clause per option, in this order: (.+?); each option")


@dataclass
class Cond:
    place: str  # top | join | then | else
    operator: str
    operands: list[str]
    question: int = 1
    join: str | None = None

    def phrase(self) -> str:
        """The condition as the instruction says it, after "the answer is"."""
        o = self.operands
        return {
            "eq": o[0], "ne": f"not {o[0]}", "lt": f"less than {o[0]}", "gt": f"greater than {o[0]}",
            "between": f"between {o[0]} and {o[-1]}", "parity": f"an {o[0]} number",
            "one_of": "either " + " or ".join(o), "statement": "yes",
        }.get(self.operator, o[0] if o else "")  # fmt: skip

    def negated(self) -> str:
        return self.operands[0] if self.operator == "ne" else f"not {self.phrase()}"

    def holds(self, answer: str) -> bool:
        a, o = answer.strip().lower(), [x.strip().lower() for x in self.operands]
        number = int(a) if re.fullmatch(r"-?\d+", a) else None
        if self.operator == "eq":
            return a == o[0]
        if self.operator == "ne":
            return a != o[0]
        if self.operator == "one_of":
            return a in o
        if self.operator == "statement":
            return a == "yes"
        if number is None:
            return False
        if self.operator == "lt":
            return number < int(o[0])
        if self.operator == "gt":
            return number > int(o[0])
        if self.operator == "between":
            return int(o[0]) <= number <= int(o[-1])
        if self.operator == "parity":
            return number % 2 == (0 if o[0] == "even" else 1)
        return False


def _operands(operator: str, words: str) -> list[str]:
    text = words.strip()
    for pattern in (
        r"the answer is not (.+)",
        r"less than (\S+)",
        r"greater than (\S+)",
        r"an (even|odd) number",
    ):
        found = re.search(pattern, text)
        if found and (operator in ("ne", "lt", "gt", "parity")):
            return [found.group(1)]
    if operator == "between":
        found = re.search(r"between (\S+) and (\S+)", text)
        return [found.group(1), found.group(2)] if found else []
    if operator == "one_of":
        return [v.strip() for v in text.split(":", 1)[-1].split(",") if v.strip()]
    if operator == "eq":
        return [text.removeprefix("the answer is ").strip()]
    return []


@dataclass
class Tree:
    paths: list[str]
    conditions: list[Cond] = field(default_factory=list)
    switch: list[str] = field(default_factory=list)

    @property
    def top(self) -> Cond | None:
        return next((c for c in self.conditions if c.place == "top"), None)

    def nested(self, branch: str) -> Cond | None:
        return next((c for c in self.conditions if c.place == branch), None)

    def operands(self) -> set[str]:
        return {o.lower() for c in self.conditions for o in c.operands} | {s.lower() for s in self.switch}

    def path_for(self, answer: str, top: Cond | None = None) -> str:
        """The path that holds for the record's answer (a condition on another question: not holding)."""
        if self.switch:
            return f"case:{answer.strip().lower()}"
        top = top or self.top
        if top is None:
            return self.paths[0]
        truth = top.holds(answer)
        join = next((c for c in self.conditions if c.place == "join"), None)
        if join is not None:
            other = join.holds(answer) if join.question == 1 else False
            truth = (truth and other) if join.join == "and" else (truth or other)
        branch = "then" if truth else "else"
        inner = self.nested(branch)
        if inner is None:
            return branch
        return f"{branch}/{'then' if (inner.holds(answer) if inner.question == 1 else False) else 'else'}"


def read_tree(plan: str) -> Tree | None:
    """The tree a plan brief asks for, or None (a plain if/else or no condition)."""
    paths = _PATHS.search(plan)
    if paths is None:
        return None
    tree = Tree([p.strip() for p in paths.group(1).split(",")])
    switch = _SWITCH.search(plan)
    if switch:
        tree.switch = [v.strip() for v in switch.group(2).split(",")]
    for match in _CONDITION.finditer(plan):
        place = "top" if match.group(1) == "condition" else ("join" if match.group(2) else match.group(3))
        operator = match.group(4)
        tree.conditions.append(
            Cond(place, operator, _operands(operator, match.group(6)), int(match.group(5)), match.group(2))
        )
    return tree


#: the leaves' edits, one per path; {d} the target, {c} a colour, {t} a thing
LEAF_EDITS = (
    ("repaint {d} {c}", "target"),
    ("place a small {c} {t} right beside {d}", "beside"),
    ("draw a {c} ring on the floor around {d}", "ring"),
    ("hang a {c} banner on the back wall", "wall"),
)
COUNT_EDITS = (
    ("paint a {c} stripe along the front edge of the floor", (0.05, 0.9, 0.95, 0.96)),
    ("put a small {c} {t} in the front left corner of the floor", (0.03, 0.78, 0.13, 0.9)),
    ("put a small {c} {t} in the front right corner of the floor", (0.87, 0.78, 0.97, 0.9)),
    ("hang a {c} banner on the back wall", (0.3, 0.05, 0.7, 0.14)),
)


def leaf_edits(
    category: str, ref: str, target: Box, colours: list[str], things: tuple[str, ...], seed: int, count: int
) -> list[tuple[str, Stroke]]:
    """`count` different visible edits (text and pixels) for a record's leaves."""
    out: list[tuple[str, Stroke]] = []
    x0, y0, x1, y1 = target
    w, h = (x1 - x0) * 0.6, (y1 - y0) * 0.6
    for i in range(count):
        colour = colours[(seed + i) % len(colours)]
        thing = things[(seed // 7 + i) % len(things)]
        if category == "count":
            text, box = COUNT_EDITS[i % len(COUNT_EDITS)]
            out.append((text.format(c=colour, t=thing), Stroke(box, colour)))
            continue
        text, where = LEAF_EDITS[i % len(LEAF_EDITS)]
        box = {
            "target": target,
            "beside": (min(x1 + 0.01, 0.97 - w), y1 - h, min(x1 + 0.01, 0.97 - w) + w, y1),
            "ring": (max(0.0, x0 - 0.03), y1 - 0.03, min(1.0, x1 + 0.03), min(1.0, y1 + 0.04)),
            "wall": (0.3, 0.05, 0.7, 0.14),
        }[where]
        out.append((text.format(d=ref, c=colour, t=thing), Stroke(box, colour, ellipse=where == "target")))
    return out


def tree_body(tree: Tree, edits: dict[str, str], seed: int, top: Cond | None = None) -> str:
    """The instruction's logic, its clauses following the tree (`edits`: path → the edit the clause says)."""
    if tree.switch:
        parts = [f"if the answer is {option}, {edits[f'case:{option}']}" for option in tree.switch]
        return "; ".join(parts).capitalize() + "."
    top = top or tree.top
    assert top is not None
    join = next((c for c in tree.conditions if c.place == "join"), None)
    condition = f"the answer is {top.phrase()}"
    if join is not None:
        condition += f" {join.join} the answer to question {join.question} is {join.phrase()}"
    inner_then, inner_else = tree.nested("then"), tree.nested("else")
    if inner_then is not None:
        return (
            f"If {condition}, then if it is {inner_then.phrase()}, {edits['then/then']}, otherwise "
            f"{edits['then/else']}. If the answer is {top.negated()}, {edits['else']}."
        )
    if inner_else is not None:
        return (
            f"If {condition}, {edits['then']}. If the answer is {top.negated()}, then if it is "
            f"{inner_else.phrase()}, {edits['else/then']}, otherwise {edits['else/else']}."
        )
    if seed % 2:
        return f"When {condition}, {edits['then']}; in every other case, {edits['else']}."
    return f"If {condition}, {edits['then']}; otherwise, {edits['else']}."
