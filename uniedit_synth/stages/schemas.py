"""The structured replies the text stages ask for: pydantic models and the strict JSON schemas sent to models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from ..core.records import TASK_CATEGORIES


class ClassifyReply(BaseModel):
    task_category: str
    process_answer: str

    @field_validator("task_category")
    @classmethod
    def _known(cls, value: str) -> str:
        value = value.strip().lower().replace(" ", "_")
        value = {"multi_choice": "multi-choice", "multichoice": "multi-choice", "yes/no": "yes_no"}.get(value, value)
        if value not in TASK_CATEGORIES:
            raise ValueError(f"task_category {value!r} is not one of {TASK_CATEGORIES}")
        return value


class BranchEdit(BaseModel):
    """One outcome of the reply's branch tree: the plan's path ("then", "else/then", "case:red") and the
    edit the instruction asks for on it."""

    path: str
    edit: str


class RewriteReply(BaseModel):
    """The rewriter's structured reply: the instruction and, for a conditional plan, its branch tree: one
    edit per outcome path of the plan in `branches` (for a plain if/else, `then_edit` / `else_edit` say the
    same), and the candidate, when the plan asked the rewriter for a distractor."""

    instruction: str = Field(min_length=8)
    then_edit: str | None = None
    else_edit: str | None = None
    candidate: str | None = None
    branches: list[BranchEdit] | None = None
    #: with `stages.rewrite.reasoning: rewrite_call`: the reasoning trace, written with the instruction
    reasoning: str | None = None
    edit_program: dict[str, Any] | None = None  # the builtin rewriter's machine-checkable program


class ReasoningReply(BaseModel):
    """The rewriter's reasoning follow-up: the trace as numbered steps."""

    reasoning: str = Field(min_length=8)


class ReleaseJudgeReply(BaseModel):
    """The release judge's reply (system3.system_prompt1): an analysis and a visual-quality score 1–5."""

    analysis: str = ""
    score: float = Field(ge=1, le=5)


#: what the judge saw of the plan's branches: the expected branch's edit, the other one's, both, neither, or
#: an instruction without a condition
BRANCHES_OBSERVED = ("expected", "other", "both", "none", "not_conditional")
#: observations that reject an edit whatever its scores (stages/judge.py)
REJECTED_BRANCHES = frozenset({"other", "both", "none"})


class JudgeReply(BaseModel):
    """The three-axis judge's reply, evidence first: what changed, which branch it shows, whether anything
    outside the target changed, the analysis, then the scores. The observations are optional here (a custom
    prompt in JSON mode may leave them out); the schema sent to the model requires them."""

    observed_changes: str = ""
    branch_observed: Literal["expected", "other", "both", "none", "not_conditional"] | None = None
    changes_outside_target: bool | None = None
    analysis: str = ""
    instruction_following: float = Field(ge=1, le=5)
    visual_quality: float = Field(ge=1, le=5)
    coherence: float = Field(ge=1, le=5)
    #: with `stages.judge.localise_edit`: [x0, y0, x1, y1] as fractions of the image, where the edit belongs
    edit_region: list[float] | None = None

    @field_validator("edit_region")
    @classmethod
    def _box(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return None
        if len(value) != 4 or not all(0 <= v <= 1 for v in value) or value[0] >= value[2] or value[1] >= value[3]:
            raise ValueError("edit_region must be [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        return value


def _strict(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


CLASSIFY_SCHEMA = _strict(
    {
        "task_category": {"type": "string", "enum": list(TASK_CATEGORIES)},
        "process_answer": {"type": "string"},
    }
)
_NULLABLE_STRING = {"type": ["string", "null"]}
# Only `instruction` is required: a JSON-mode model may leave out the null branch fields of a plan without
# branches (OpenAI's strict structured outputs make every key required anyway: backends/openai_backend.py).
REWRITE_SCHEMA = {
    **_strict(
        {
            "instruction": {"type": "string"},
            "then_edit": _NULLABLE_STRING,
            "else_edit": _NULLABLE_STRING,
            "candidate": _NULLABLE_STRING,
            # the branch tree: one {path, edit} per outcome path the plan lists (nested or switch plans)
            "branches": {
                "type": ["array", "null"],
                "items": _strict({"path": {"type": "string"}, "edit": {"type": "string"}}),
            },
        }
    ),
    "required": ["instruction"],
}
# Observations before scores: with structured outputs a model writes the keys in schema order, so it
# states what it sees (and reasons) before it commits to a number.
JUDGE_SCHEMA = _strict(
    {
        "observed_changes": {"type": "string"},
        "branch_observed": {"type": "string", "enum": list(BRANCHES_OBSERVED)},
        "changes_outside_target": {"type": "boolean"},
        "analysis": {"type": "string"},
        "instruction_following": {"type": "integer", "minimum": 1, "maximum": 5},
        "visual_quality": {"type": "integer", "minimum": 1, "maximum": 5},
        "coherence": {"type": "integer", "minimum": 1, "maximum": 5},
    }
)
RELEASE_JUDGE_SCHEMA = _strict(
    {
        "analysis": {"type": "string"},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
    }
)
REASONING_SCHEMA = _strict({"reasoning": {"type": "string"}})
#: the three-axis judge asked also for the box of the region the instruction asked to change
JUDGE_LOCALISED_SCHEMA = _strict(
    {**JUDGE_SCHEMA["properties"], "edit_region": {"type": "array", "items": {"type": "number"}}}
)
LOCALISE_REQUEST = (
    "Also give `edit_region`: [x0, y0, x1, y1], the box of the region the instruction asked to change, as fractions "
    "(0 to 1) of the image's width and height, in the same JSON object."
)
#: the rewrite reply with the reasoning trace in the same call (`stages.rewrite.reasoning: rewrite_call`)
REWRITE_WITH_REASONING_SCHEMA = {
    **REWRITE_SCHEMA,
    "properties": {**REWRITE_SCHEMA["properties"], "reasoning": _NULLABLE_STRING},
}
REASONING_IN_REWRITE_REQUEST = (
    "Also give `reasoning`: four short numbered steps (1. Question, 2. Answer: \"the answer is <the reference "
    "answer>\", 3. Branch: which branch of your instruction applies and why, 4. Edit: the edit of that branch, "
    "quoted word for word), in the same JSON object."
)
