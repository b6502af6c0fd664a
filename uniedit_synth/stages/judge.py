"""The judge stage: scores an edit against thresholds — three axes (instruction following, visual quality,
coherence) from both images, or the Uni-Edit release's visual-quality-only check of the edited image."""

from __future__ import annotations

from ..records import RejectReason
from .base import StageContext, WorkItem
from .schemas import JUDGE_SCHEMA, RELEASE_JUDGE_SCHEMA, JudgeReply, ReleaseJudgeReply


def judge_outcome(item: WorkItem) -> str:
    """What the judge is told the right outcome is. For a conditional plan: the expected branch's edit and
    the other branch's edit as the wrong outcome, never the answer (the judge must not need it, and a
    judge that sees the answer can be swayed by the instruction naming it). Otherwise the reference answer,
    which the edit renders or uses."""
    plan = item.plan
    if plan is not None and plan.conditional and plan.expected_edit and plan.wrong_edit:
        return (
            f"Expected outcome (the branch that applies): {plan.expected_edit}\n"
            f"Wrong outcome (the other branch; an edit showing it has instruction_following 1 or 2): "
            f"{plan.wrong_edit}"
        )
    return f"Reference answer: {item.process_answer or ''}"


class JudgeStage:
    name = "judge"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.spec = ctx.config.stages.judge

    async def __call__(self, item: WorkItem) -> bool:
        """Score the item's current edit; returns whether it passes every threshold."""
        if self.spec.preset == "release":
            await self._visual_quality(item)
        else:
            await self._three_axes(item)
        return all(item.scores.get(name, 0) >= bar for name, bar in self.spec.thresholds.items())

    async def _three_axes(self, item: WorkItem) -> None:
        record = item.record
        parsed = await self.ctx.ask(
            self.name,
            item,
            self.ctx.prompt(self.spec.prompt or "judge.txt"),
            {
                "instruction": item.instruction or "",
                "question": record.question,
                "outcome": judge_outcome(item),
                # for prompts written before plans; empty for a conditional: the judge never sees the answer
                "process_answer": "" if item.plan and item.plan.conditional else item.process_answer or "",
            },
            reply_model=JudgeReply,
            schema=JUDGE_SCHEMA,
            schema_name="judgement",
            images=[item.image, item.edited_image or b""],
            context={
                "instruction": item.instruction,
                "edit_program": item.edit_program,
                "meta": record.meta,
                "question": record.question,
                "process_answer": item.process_answer,
                "task_category": item.task_category,
                "plan": item.plan.model_dump(mode="json") if item.plan else None,
            },
            failure=RejectReason.judge_failed,
        )
        item.scores = {
            "instruction_following": parsed.instruction_following,
            "visual_quality": parsed.visual_quality,
            "coherence": parsed.coherence,
        }
        item.score = round(sum(item.scores.values()) / 3, 4)
        item.analysis = parsed.analysis

    async def _visual_quality(self, item: WorkItem) -> None:
        """The release's fifth_process_filter.py: the edited image alone, no instruction or question."""
        parsed = await self.ctx.ask(
            self.name,
            item,
            self.ctx.prompt(self.spec.prompt or "judge_release.txt"),
            {},
            reply_model=ReleaseJudgeReply,
            schema=RELEASE_JUDGE_SCHEMA,
            schema_name="judge_visual_quality",
            images=[item.edited_image or b""],
            context={"preset": "release", "task_category": item.task_category},
            failure=RejectReason.judge_failed,
        )
        item.scores = {"visual_quality": parsed.score}
        item.score = float(parsed.score)
        item.analysis = parsed.analysis

    def failed_thresholds(self, item: WorkItem) -> str:
        misses = [
            f"{name} {item.scores.get(name)} < {bar}"
            for name, bar in self.spec.thresholds.items()
            if item.scores.get(name, 0) < bar
        ]
        return "; ".join(misses)
