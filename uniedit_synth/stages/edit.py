"""The edit stage: an image model performs the instruction on the source image."""

from __future__ import annotations

from ..backends.base import BackendError, EditRequest, SafetyBlocked
from ..records import RejectReason
from .base import Rejected, StageContext, WorkItem


class EditStage:
    name = "edit"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.spec = ctx.config.stages.edit

    async def __call__(self, item: WorkItem, attempt: int) -> WorkItem:
        record = item.record
        answer = item.process_answer if self.spec.give_reference_answer else None
        instruction = item.instruction or ""
        if self.spec.prompt:
            prompt = self.ctx.prompt(self.spec.prompt)
            item.prompt_versions[self.name] = prompt.version
            instruction = prompt.render(instruction=instruction, reference_answer=answer or "")
        request = EditRequest(
            model=self.ctx.models[self.name],
            instruction=instruction,
            image=item.image,
            reference_answer=answer,
            attempt=attempt,
            params=self.spec.params,
            context={
                "edit_program": item.edit_program,
                "meta": record.meta,
                "task_category": item.task_category,
            },
        )
        try:
            reply = await self.ctx.callers[self.name].edit(request, item.ledger)
        except SafetyBlocked as exc:
            raise Rejected(RejectReason.safety_blocked, f"edit: {exc}") from None
        except BackendError as exc:
            raise Rejected(RejectReason.edit_failed, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        item.edited_image = reply.image
        item.attempts = attempt + 1
        return item
