"""The instruction plan as a row carries it: the model of what kind of instruction a record got and which branch
of it holds. Drawing a plan is the method's (method/plan.py); the model is part of the row contract
(records.Sample.instruction_plan), so it lives with the contracts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

Style = Literal["conditional", "synthesis", "render", "transform"]
STYLES: tuple[str, ...] = ("conditional", "synthesis", "render", "transform")


class InstructionPlan(BaseModel):
    """One record's plan; `then_edit` / `else_edit` come from the rewriter. Nulls where the style has no
    branch."""

    style: Style
    candidate: str | None = None
    candidate_is_answer: bool | None = None
    expected_branch: Literal["then", "else"] | None = None
    then_edit: str | None = None
    else_edit: str | None = None
    #: the sentence the instruction ends with: a drawn preservation clause, or a pipeline's fixed directive
    closing: str | None = None

    @property
    def conditional(self) -> bool:
        return self.style == "conditional"

    @property
    def expected_edit(self) -> str | None:
        return self.then_edit if self.expected_branch == "then" else self.else_edit

    @property
    def wrong_edit(self) -> str | None:
        return self.else_edit if self.expected_branch == "then" else self.then_edit
