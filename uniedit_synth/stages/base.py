"""What flows between stages: the WorkItem, the Rejected signal, and the shared stage context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from ..backends.base import (
    BackendError,
    EditReply,
    EditRequest,
    MalformedReply,
    SafetyBlocked,
    TextReply,
    TextRequest,
)
from ..core.config import PipelineConfig, stage_def
from ..core.ledger import Ledger
from ..core.plan import InstructionPlan
from ..core.prompts import Prompt, load_prompt
from ..core.records import RejectReason, Sample, VQARecord


class Caller(Protocol):
    """How a stage calls its model: engine/calls.py ModelCaller (cache, rate limits, retries, cost ledger)."""

    async def text(self, request: TextRequest, ledger: Ledger) -> TextReply: ...

    async def edit(self, request: EditRequest, ledger: Ledger) -> EditReply: ...


class Rejected(Exception):
    """A stage's verdict that a record leaves the pipeline as a reject."""

    def __init__(self, reason: RejectReason, detail: str = ""):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class WorkItem:
    """One record on its way through the stages; every field a later stage or the Sample needs."""

    record: VQARecord
    shard: int
    image: bytes = b""
    task_category: str | None = None
    process_answer: str | None = None
    instruction: str | None = None
    edit_program: dict[str, Any] | None = None
    plan: InstructionPlan | None = None
    edited_image: bytes | None = None
    scores: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    analysis: str | None = None
    attempts: int = 0
    ledger: Ledger = field(default_factory=Ledger)
    prompt_versions: dict[str, str] = field(default_factory=dict)
    #: judged edits that failed before a later attempt (rows of attempts/, preference negatives)
    failed_attempts: list[Sample] = field(default_factory=list)
    #: question → answer → branch → edit (reasoning.py) and the expected branch's edit
    reasoning: str | None = None
    intended_effect: str | None = None
    #: with a judge cascade: the current attempt's route, deciding judge and both judges' scores
    judge_cascade: dict[str, Any] | None = None
    #: with `stages.judge.localise_edit`: the deciding judge's box of where the edit belongs (fractions)
    judge_region: list[float] | None = None
    #: the deciding judge's observations (observed_changes, branch_observed, changes_outside_target)
    judge_evidence: dict[str, Any] | None = None
    #: multi-turn chains (engine/chains.py): this item's turn (1-based), its chain's id and the previous row's id
    turn: int = 1
    chain_id: str | None = None
    parent_id: str | None = None
    #: what a stage without a field of its own produced, by stage name (the rows' `outputs` column)
    outputs: dict[str, Any] = field(default_factory=dict)
    #: the validated image's perceptual fingerprint (hex), set by the validate stage while screening is on
    fingerprint: str | None = None
    #: (the source bytes, the source as the pixel gates read them: method/pixel_gates.SourceView), decoded
    #: once per record (validation decodes the image anyway: with_source_view, bytes None until the edit stage
    #: pairs it with item.image); the bytes tell a stale view from a current one
    source_view: tuple[bytes | None, Any] | None = None


def with_source_view(
    hook: Callable[[Any], None] | None, item: WorkItem, enabled: bool
) -> Callable[[Any], None] | None:
    """`hook` (validation's callback with the decoded source image) extended to leave the pixel gates' view of
    that image on `item`: the edit stage then measures every attempt without decoding the source again."""
    if not enabled:
        return hook

    def both(image: Any) -> None:
        from ..method.pixel_gates import source_view

        if hook is not None:
            hook(image)
        item.source_view = (None, source_view(image))

    return both


@dataclass
class StageContext:
    """What every stage needs: the config, its model caller and prompt loading."""

    config: PipelineConfig
    callers: dict[str, Caller]
    models: dict[str, str]
    #: the templates loaded so far: read once per worker, as the run's pipeline hash saw them at its start
    #: (the stages ask for their prompt for every record; a stat each)
    _prompts: dict[str, Prompt] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def prompts_dir(self) -> Path:
        return self.config.prompts_path()

    def prompt(self, relative: str) -> Prompt:
        prompt = self._prompts.get(relative)
        if prompt is None:
            prompt = self._prompts[relative] = load_prompt(self.prompts_dir, relative)
        return prompt

    async def ask(
        self,
        stage: str,
        item: WorkItem,
        prompt: Prompt,
        fields: dict[str, str],
        *,
        reply_model: type[ReplyT],
        schema: dict[str, Any],
        schema_name: str,
        context: dict[str, Any],
        failure: RejectReason | None = None,
        images: list[bytes] | None = None,
        repair: str = "",
        task: str | None = None,
        via: str | None = None,
    ) -> ReplyT:
        """One structured text call for `stage`: render the prompt (VQA text as delimited data), call the
        model through the engine (cache, limits, retries, cost), validate the reply. A safety refusal becomes
        a `safety_blocked` reject, any other failure a `failure` reject (by default the stage table's
        failure reason of `stage`). `task` names the request's task when it is not the stage's own (the
        rewriter's reasoning follow-up); `via` picks another caller of the stage (the cascade's expensive judge)."""
        caller = via or stage
        item.prompt_versions[task or stage] = prompt.version
        request = TextRequest(
            task=task or stage,
            model=self.models[caller],
            system=prompt.system,
            prompt=prompt.render(**fields) + (f"\n{repair}\n" if repair else ""),
            images=images or [],
            response_schema=schema,
            schema_name=schema_name,
            params=getattr(self.config.stages, stage).params,
            context=context,
        )
        try:
            reply = await self.callers[caller].text(request, item.ledger)
            return reply_model.model_validate(reply.data)
        except SafetyBlocked as exc:
            raise Rejected(RejectReason.safety_blocked, f"{stage}: {exc}") from None
        except (BackendError, ValidationError) as exc:
            detail = str(exc) if isinstance(exc, MalformedReply) else str(exc).splitlines()[0]
            raise Rejected(failure or stage_def(stage).failure_reason, f"{stage}: {detail}") from None


ReplyT = TypeVar("ReplyT", bound=BaseModel)
