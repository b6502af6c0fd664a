"""The table of stages: STAGE_TABLE, one StageDef per stage in order, and the names derived from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import create_model

from .reasons import RejectReason
from .specs import ClassifySpec, EditSpec, JudgeSpec, RewriteSpec, StageBase, StageOptions


@dataclass(frozen=True)
class StageDef:
    """One stage of the pipeline. STAGE_TABLE lists them in order, and everything stage-specific derives from
    it: the worker's order, semaphores, backends and capability map, `stages.<name>` in the YAML (the `Stages`
    model), `--concurrency`, the prompt files that are hashed, the model roles of the rows' `models` column,
    the funnel in stats.json and the report's charts. A new stage is one module (a class built with the
    StageContext, whose `async __call__(item)` returns the item or raises `Rejected`) plus one line here; a
    model stage adds its prompt (and writes what it produces into `item.outputs`, the rows' `outputs` column).
    """

    name: str
    #: the backend kind the stage calls ("text" or "edit"); None: the stage calls no model
    capability: Literal["text", "edit"] | None
    #: "module:Class" of the stage, imported by the worker
    cls: str
    #: the reject reason of a record whose call at this stage failed
    failure_reason: RejectReason
    #: the YAML model of `stages.<name>`; None: no entry. A model stage needs a StageBase (its `backend`): left at
    #: StageOptions, it gets one whose prompt is `<name>.txt` (model_stage_spec)
    spec: type[StageOptions] | None = StageOptions
    #: the other reasons this stage rejects records with (where the report says a record left)
    reasons: tuple[RejectReason, ...] = ()
    #: runs after the category caps are decided in shard order (the cheap stages run before)
    after_caps: bool = False
    #: a False verdict sends the record back to this earlier stage, while that stage's `max_attempts` allow
    retries: str | None = None
    #: the key of the stage's model in the rows' `models` column (None: the stage's name)
    role: str | None = None
    #: runs on every record before the dedup / decontamination screen and any model stage (the input check);
    #: it has no `stages:` entry, and its concurrency follows the CPU count
    before_screen: bool = False

    def __post_init__(self) -> None:
        if self.capability is not None and self.spec is StageOptions:
            object.__setattr__(self, "spec", model_stage_spec(self.name))


def model_stage_spec(name: str) -> type[StageBase]:
    """`stages.<name>` of a model stage without a spec class of its own: a StageBase (backend, concurrency,
    params, mode, batch) whose prompt file is `<name>.txt` in the prompts folder (hashed like every prompt)."""
    title = "".join(part.title() for part in name.replace("-", "_").split("_"))
    return create_model(f"{title}Spec", __base__=StageBase, prompt=(str | None, f"{name}.txt"))


STAGE_TABLE: tuple[StageDef, ...] = (
    StageDef("validate", None, "uniedit_synth.stages.validate:ValidateStage", RejectReason.invalid_input, None,
             (RejectReason.duplicate_id, RejectReason.merged), before_screen=True),
    StageDef("classify", "text", "uniedit_synth.stages.classify:ClassifyStage", RejectReason.classify_failed,
             ClassifySpec, (RejectReason.filtered_category, RejectReason.category_capped), role="classifier"),
    StageDef("rewrite", "text", "uniedit_synth.stages.rewrite:RewriteStage", RejectReason.rewrite_failed,
             RewriteSpec, (RejectReason.leaks_answer,), after_caps=True, role="rewriter"),
    StageDef("edit", "edit", "uniedit_synth.stages.edit:EditStage", RejectReason.edit_failed, EditSpec,
             (RejectReason.safety_blocked, RejectReason.no_op_edit, RejectReason.over_edited), after_caps=True,
             role="editor"),
    StageDef("judge", "text", "uniedit_synth.stages.judge:JudgeStage", RejectReason.judge_failed, JudgeSpec,
             (RejectReason.low_score,), after_caps=True, retries="edit"),
)

#: every stage's name in order (the funnel's rows)
STAGE_NAMES: tuple[str, ...] = tuple(d.name for d in STAGE_TABLE)
#: the stages configured under `stages:` in the YAML
CONFIGURED_STAGES: tuple[StageDef, ...] = tuple(d for d in STAGE_TABLE if d.spec is not None)
#: the stages that call a model (they can run in batch mode: `stages.<name>.mode`)
MODEL_STAGES: tuple[str, ...] = tuple(d.name for d in STAGE_TABLE if d.capability is not None)
#: stage name -> the backend capability it calls ("text" or "edit"), for the stages that call a model
CAPABILITY: dict[str, str] = {d.name: d.capability for d in STAGE_TABLE if d.capability is not None}
#: model stage name -> its key in the rows' `models` column (classify → classifier, …, judge → judge)
MODEL_ROLES: dict[str, str] = {d.name: d.role or d.name for d in STAGE_TABLE if d.capability is not None}
#: the stages a judged failure repeats (edit … judge): their calls belong to an attempt
ATTEMPT_STAGES: tuple[str, ...] = tuple(
    name for d in STAGE_TABLE if d.retries
    for name in STAGE_NAMES[STAGE_NAMES.index(d.retries):STAGE_NAMES.index(d.name) + 1]
)
#: reject reason -> the stage a record with it left at
EXIT_STAGE: dict[str, str] = {
    reason.value: d.name for d in STAGE_TABLE for reason in (d.failure_reason, *d.reasons)
}


def stage_def(name: str) -> StageDef:
    for definition in STAGE_TABLE:
        if definition.name == name:
            return definition
    raise KeyError(name)
