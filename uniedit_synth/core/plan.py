"""The instruction plan as a row carries it: the model of what kind of instruction a record got, the logic it
tests (operators, embedded questions, nesting) and which path of it holds. Drawing a plan is the method's
(method/plan.py, method/logic.py); the model is part of the row contract (records.Sample.instruction_plan),
so it lives with the contracts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Style = Literal["conditional", "synthesis", "render", "transform"]
STYLES: tuple[str, ...] = ("conditional", "synthesis", "render", "transform")


class PlanCondition(BaseModel):
    """One condition of the plan's logic: `operator(operands)` on the answer of `questions[question]`.
    `place`: "top" (decides the first branch), "join" (joined to the top one by `InstructionPlan.join`), or
    "then" / "else" (nested inside that branch: depth 2). `holds` is computed from the answer."""

    place: str = "top"
    question: int = 0
    operator: str
    operands: list[str] = Field(default_factory=list)
    holds: bool

    def worded(self, table: dict[str, str]) -> str:
        """The operator in one of its callers' wordings: `{0}`, `{1}` the operands, `{all}` all of them."""
        return table.get(self.operator, self.operator).format(*self.operands, "", "", all=", ".join(self.operands))


class PlanLeaf(BaseModel):
    """One outcome of the branch tree: its path ("then", "else/then", "case:red") and, once the rewriter has
    answered, its edit."""

    path: str
    edit: str | None = None


class PlanParameter(BaseModel):
    """An answer that sets a branch's edit: a count through `formula` (same, plus_one, all_but_one), capped,
    `value` being the number the edit must show; or (`answer`) the answer itself used by the edit (that
    colour, that shape, that word) while another question decides the branch. `path`: the leaf that uses it
    ("" for an instruction without a condition)."""

    question: int = 0
    formula: Literal["same", "plus_one", "all_but_one", "answer"]
    value: int | None = None
    path: str = ""


class InstructionPlan(BaseModel):
    """One record's plan; the branch edits come from the rewriter. Nulls / empty lists where the style has no
    branch. `then_edit` / `else_edit` / `expected_branch` describe the first level (as before nesting);
    `leaves` and `path` the whole tree."""

    style: Style
    candidate: str | None = None
    #: the top condition holds for the answer (for eq: the candidate is the answer; the release's coin)
    candidate_is_answer: bool | None = None
    expected_branch: Literal["then", "else"] | None = None
    then_edit: str | None = None
    else_edit: str | None = None
    #: the sentence the instruction ends with: a drawn preservation clause, or a pipeline's fixed directive
    closing: str | None = None
    #: the top condition's operator (eq, ne, lt, gt, between, parity, one_of, statement, switch) and operands
    operator: str | None = None
    operands: list[str] = Field(default_factory=list)
    #: every embedded question's text (the record's own first), and its reference answer
    questions: list[str] = Field(default_factory=list)
    answers: list[str] = Field(default_factory=list)
    #: 0 without a condition, 1 for if/else (or a switch), 2 for a condition nested in a branch
    depth: int = 0
    #: how a "join" condition combines with the top one
    join: Literal["and", "or"] | None = None
    conditions: list[PlanCondition] = Field(default_factory=list)
    #: the path that holds, one step per level ("then", then "else" inside it; or "case:<option>")
    path: list[str] = Field(default_factory=list)
    leaves: list[PlanLeaf] = Field(default_factory=list)
    parameter: PlanParameter | None = None
    #: the answer may appear inside the conditions (it is the candidate or one of the operands); None: as
    #: `candidate_is_answer` (plans drawn before operators)
    answer_in_condition: bool | None = None

    @property
    def conditional(self) -> bool:
        return self.style == "conditional"

    @property
    def path_key(self) -> str:
        return "/".join(self.path)

    @property
    def expected_edit(self) -> str | None:
        if self.leaves and self.path:
            return next((leaf.edit for leaf in self.leaves if leaf.path == self.path_key), None)
        return self.then_edit if self.expected_branch == "then" else self.else_edit

    @property
    def wrong_edits(self) -> list[str]:
        """Every other outcome's edit (the wrong paths), for the judge and the trace check."""
        if self.leaves and self.path:
            return [leaf.edit for leaf in self.leaves if leaf.path != self.path_key and leaf.edit]
        wrong = self.else_edit if self.expected_branch == "then" else self.then_edit
        return [wrong] if wrong else []

    @property
    def wrong_edit(self) -> str | None:
        wrong = self.wrong_edits
        return wrong[0] if wrong else None
