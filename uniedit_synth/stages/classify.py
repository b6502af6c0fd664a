"""The classify stage: task category and reference answer (`process_answer`) for each VQA pair.

`process_answer` is the classifier's answer when it gave one, else the source's answer verbatim (units,
decimals, boxes and words as the source wrote them); `normalise_answer` is for comparisons only (leak check).
"""

from __future__ import annotations

from ..core.records import TASK_CATEGORIES, RejectReason
from .base import Rejected, StageContext, WorkItem
from .schemas import CLASSIFY_SCHEMA, ClassifyReply


class ClassifyStage:
    name = "classify"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.spec = ctx.config.stages.classify

    async def __call__(self, item: WorkItem) -> WorkItem:
        record = item.record
        known = record.category if record.category in TASK_CATEGORIES else None
        if not self.spec.enabled or (self.spec.trust_source_category and known):
            item.task_category = known or "others"
            item.process_answer = record.answer
        else:
            parsed = await self.ctx.ask(
                self.name,
                item,
                self.ctx.prompt(self.spec.prompt or "classify.txt"),
                {"question": record.question, "answer": record.answer},
                reply_model=ClassifyReply,
                schema=CLASSIFY_SCHEMA,
                schema_name="classification",
                context={
                    "question": record.question,
                    "answer": record.answer,
                    "source_category": record.category,
                    "meta": record.meta,
                },
                failure=RejectReason.classify_failed,
            )
            item.task_category = parsed.task_category
            item.process_answer = parsed.process_answer.strip() or record.answer
        if item.task_category in self.spec.drop_categories:
            raise Rejected(RejectReason.filtered_category, f"category {item.task_category} is dropped")
        return item
