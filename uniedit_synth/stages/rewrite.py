"""The rewrite stage: a VQA pair becomes an edit instruction that embeds the question, checked for answer leaks."""

from __future__ import annotations

from ..prompts import Prompt
from ..records import RejectReason
from .base import Rejected, StageContext, WorkItem
from .schemas import REWRITE_SCHEMA, RewriteReply
from .text import leaks_answer

DEFAULT_AESTHETICS = "Keep the rest of the image unchanged, with natural lighting and a clean, high-quality look."


class RewriteStage:
    name = "rewrite"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.spec = ctx.config.stages.rewrite
        self.aesthetics = self.spec.aesthetics_directive or DEFAULT_AESTHETICS

    def prompt_for(self, category: str) -> Prompt:
        template = self.spec.prompt or "rewrite/{category}.txt"
        relative = template.format(category=category)
        if not (self.ctx.prompts_dir / relative).is_file():
            relative = template.format(category="generic")
        return self.ctx.prompt(relative)

    async def __call__(self, item: WorkItem) -> WorkItem:
        record = item.record
        category = item.task_category or "others"
        parsed = await self.ctx.ask(
            self.name,
            item,
            self.prompt_for(category),
            {
                "question": record.question,
                "answer": record.answer,
                "process_answer": item.process_answer or "",
                "category": category,
                "aesthetics": self.aesthetics,
            },
            reply_model=RewriteReply,
            schema=REWRITE_SCHEMA,
            schema_name="edit_instruction",
            context={
                "question": record.question,
                "answer": record.answer,
                "process_answer": item.process_answer,
                "task_category": category,
                "meta": record.meta,
                "aesthetics": self.spec.aesthetics_directive or None,
            },
            failure=RejectReason.rewrite_failed,
        )
        item.instruction = parsed.edit_instruction.strip()
        item.edit_program = parsed.edit_program
        if self.spec.leak_check:
            leaked = leaks_answer(item.instruction, record.answer, item.process_answer)
            if leaked:
                raise Rejected(RejectReason.leaks_answer, f"instruction contains the answer {leaked!r}")
        return item
