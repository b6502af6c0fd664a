"""The model calls of an evaluation: editors (a pipeline's edit backend, a plugin, or any in-process editor) and
judges (a benchmark's protocol, or the pipeline's own judge stage), all through the engine's ModelCaller.

So every call is cached by the sha256 of its request under `<out>/cache/` (a rerun makes no call; an
interrupted evaluation resumes), rate limited per provider+model, retried, priced and charged to the budget,
exactly as in synthesis.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from typing import Protocol as TypingProtocol

from ..backends.base import BadRequest, EditRequest, MalformedReply, SafetyBlocked, TextRequest
from ..backends.registry import create_backend
from ..core.config import BackendSpec, PipelineConfig
from ..core.errors import ConfigError, UniEditError
from ..core.ledger import Ledger
from ..engine.calls import ModelCaller
from ..engine.coordinator import Coordinator
from ..run.cache import ResponseCache
from ..stages.base import StageContext
from ..stages.edit import EditStage
from ..stages.judge import JudgeStage
from .items import EvalItem
from .presets import JudgeReplyError, Protocol


class EvalConfigError(UniEditError):
    """`--model`, `--baseline` or the judge cannot be set up as given."""


@dataclass
class Verdict:
    figures: dict[str, float] | None = None
    error: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)
    #: the scores each judge reply gave (call -> field -> value), from which `figures` follow
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)


class Editor(TypingProtocol):
    label: str
    description: dict[str, Any]

    async def edit(self, item: EvalItem, ledger: Ledger) -> bytes: ...

    async def aclose(self) -> None: ...


def coordinator_for(config: PipelineConfig) -> Coordinator:
    return Coordinator(rate_limits={k: v.model_dump() for k, v in config.limits.rate_limits.items()},
                       max_cost_usd=config.limits.max_cost_usd)


def _caller(stage: str, name: str, spec: BackendSpec, capability: str, config: PipelineConfig,
            cache: ResponseCache, coordinator: Coordinator) -> ModelCaller:
    try:
        backend = create_backend(name, spec, capability, seed=config.seed)
    except UniEditError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's constructor: say which backend and why
        raise EvalConfigError(f"backend {name!r} ({spec.type}) cannot be created: {exc}") from None
    return ModelCaller(stage, backend, cache=cache, coordinator=coordinator, prices=config.prices,
                       retry=config.retry, rate_limited=backend.provider != "builtin", backend_name=name)


def backend_spec(model: str, config: PipelineConfig) -> tuple[str, BackendSpec]:
    """`--model`: a backend named in the pipeline, `edit` (the pipeline's edit stage), or a plugin class."""
    if model == "edit":
        model = config.stages.edit.backend
    if model in config.backends:
        return model, config.backends[model]
    if ":" in model and "." in model.split(":", 1)[0]:
        return model, BackendSpec(type=model, model=model.rsplit(":", 1)[-1])
    raise EvalConfigError(
        f"--model {model}: not a backend of pipeline {config.name!r} ({', '.join(sorted(config.backends))}), "
        "not `edit`, not a plugin class (package.module:Class) and not a model directory"
    )


class BackendEditor:
    """An edit backend through ModelCaller: the source image and the item's instruction, nothing else."""

    def __init__(self, label: str, model: str, config: PipelineConfig, cache: ResponseCache,
                 coordinator: Coordinator) -> None:
        name, spec = backend_spec(model, config)
        self.label = label
        self.caller = _caller(EditStage.name, name, spec, "edit", config, cache, coordinator)
        self.model = spec.model
        self.description = {"kind": "backend", "backend": name, "type": spec.type, "model": spec.model}
        self._started = False

    async def edit(self, item: EvalItem, ledger: Ledger) -> bytes:
        if not self._started:
            start = getattr(self.caller.backend, "start", None)
            if start is not None:
                await start()
            self._started = True
        context = {"task_category": item.category}
        if item.extra.get("edit_program"):  # an export row of the offline world: the builtin editor reads it
            program = item.extra["edit_program"]
            context["edit_program"] = json.loads(program) if isinstance(program, str) else program
            meta = item.extra.get("record_meta")
            context["meta"] = (json.loads(meta) if isinstance(meta, str) else meta) or {}
        request = EditRequest(model=self.model, instruction=item.instruction, image=item.source, context=context)
        reply = await self.caller.edit(request, ledger)
        return reply.image

    async def aclose(self) -> None:
        await self.caller.backend.aclose()


class ProtocolJudge:
    """A benchmark's judge protocol on the pipeline's judge backend (or `--judge NAME`)."""

    def __init__(self, protocol: Protocol, backend: str, config: PipelineConfig, cache: ResponseCache,
                 coordinator: Coordinator) -> None:
        if backend not in config.backends:
            raise EvalConfigError(f"--judge {backend}: not a backend of pipeline {config.name!r}")
        spec = config.backends[backend]
        if spec.type == "builtin":
            raise EvalConfigError(
                f"the builtin judge cannot read {protocol.name}'s prompts: pass a pipeline with a vision-language "
                "judge (--pipeline openai, uniedit or local-vllm) or --judge <backend>"
            )
        self.protocol = protocol
        self.caller = _caller(JudgeStage.name, backend, spec, "text", config, cache, coordinator)
        self.model = spec.model
        self.description = {"backend": backend, "type": spec.type, "model": spec.model, **protocol.describe()}

    async def judge(self, item: EvalItem, edited: bytes, ledger: Ledger) -> Verdict:
        try:
            calls = self.protocol.calls(item, edited)
        except JudgeReplyError as exc:
            return Verdict(error=f"not judged: {exc}")
        requests = [TextRequest(
            task=f"eval/{self.protocol.name}/{call.name}", model=self.model, prompt=call.prompt, images=call.images,
            response_schema=call.schema(), schema_name=f"{self.protocol.name}_{call.name}".replace("-", "_"),
            params=call.params) for call in calls]
        # all of an item's calls at once: in batch mode every one of them is deferred to the same wave
        outcomes = await asyncio.gather(*(self.caller.text(r, ledger) for r in requests), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, (SafetyBlocked, BadRequest,
                                                                               MalformedReply)):
                raise outcome  # batch pending, budget, outage, a wrong key: not a property of this sample
        replies: dict[str, dict[str, Any]] = {}
        for call, outcome in zip(calls, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                return Verdict(error=f"judge_failed: {call.name}: {outcome}")
            replies[call.name] = outcome.data
        try:
            figures = self.protocol.figures(item, replies)
        except (JudgeReplyError, KeyError) as exc:
            return Verdict(error=f"judge_failed: {exc}")
        reasons = {call.name: str(replies[call.name].get(call.reason_field, ""))[:2000] for call in calls}
        scores = {call.name: {k: replies[call.name].get(k) for k in call.scores} for call in calls}
        return Verdict(figures=figures, reasons=reasons, replies=scores)

    async def aclose(self) -> None:
        await self.caller.backend.aclose()


class PipelineJudge:
    """An export split judged by the pipeline's own judge stage (prompt, thresholds, builtin or real)."""

    axes = ("instruction_following", "visual_quality", "coherence", "score", "passed")

    def __init__(self, config: PipelineConfig, cache: ResponseCache, coordinator: Coordinator) -> None:
        spec = config.stages.judge
        if spec.backend not in config.backends:
            raise ConfigError(f"stages.judge.backend {spec.backend!r} is not a backend of the pipeline")
        self.caller = _caller(JudgeStage.name, spec.backend, config.backends[spec.backend], "text", config, cache,
                              coordinator)
        model = config.backends[spec.backend].model
        self.stage = JudgeStage(StageContext(config=config, callers={JudgeStage.name: self.caller},
                                                models={JudgeStage.name: model}))
        self.description = {
            "preset": "pipeline", "title": f"the judge stage of pipeline {config.name!r}",
            "backend": spec.backend, "type": config.backends[spec.backend].type, "model": model,
            "thresholds": dict(spec.thresholds), "axes": list(self.axes),
            "reproduced": ["the pipeline's judge stage: its prompt, backend, thresholds and acceptance rule"],
            "differs": [],
        }

    async def judge(self, item: EvalItem, edited: bytes, ledger: Ledger) -> Verdict:
        from ..core.records import VQARecord
        from ..stages.base import Rejected, WorkItem

        x = item.extra
        program = x.get("edit_program")
        meta = x.get("record_meta")
        record = VQARecord(id=item.key, source="eval", image=item.source, question=x.get("original_question") or "",
                           answer=x.get("original_answer") or "", category=item.category,
                           meta=(json.loads(meta) if isinstance(meta, str) else meta) or {})
        work = WorkItem(record=record, shard=0, image=item.source, task_category=item.category,
                        process_answer=x.get("process_answer") or "", instruction=item.instruction,
                        edit_program=json.loads(program) if isinstance(program, str) else program,
                        edited_image=edited, ledger=ledger)
        try:
            passed = await self.stage(work)
        except Rejected as exc:
            return Verdict(error=f"judge_failed: {exc.detail or exc.reason.value}")
        figures = {k: float(v) for k, v in work.scores.items() if k in self.axes}
        figures["score"] = float(work.score) if work.score is not None else 0.0
        figures["passed"] = float(bool(passed))
        return Verdict(figures=figures, reasons={"analysis": work.analysis or ""})

    async def aclose(self) -> None:
        await self.caller.backend.aclose()
