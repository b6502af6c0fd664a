"""The edit stage: an image model performs the instruction on the source image."""

from __future__ import annotations

from ..backends.base import BackendError, EditReply, EditRequest, NoImageReply, SafetyBlocked
from ..core.records import RejectReason
from .base import Rejected, StageContext, WorkItem


class EditStage:
    """Renders prompts/edit.txt as the Uni-Edit release's editor input (data_gen/forth_process.py: "Original
    Question / Reference Answer / Task Instruction"), its system half as the request's `system`, and asks
    again when a reply carries no image (up to `no_image_retries` times; safety blocks are rejects)."""

    name = "edit"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.spec = ctx.config.stages.edit

    async def __call__(self, item: WorkItem, attempt: int) -> WorkItem:
        record = item.record
        answer = item.process_answer if self.spec.give_reference_answer else None
        instruction = item.instruction or ""
        system = ""
        if self.spec.prompt:
            prompt = self.ctx.prompt(self.spec.prompt)
            item.prompt_versions[self.name] = prompt.version
            system = prompt.system
            instruction = prompt.render(
                instruction=instruction, reference_answer=answer or "", question=record.question
            )
        request = EditRequest(
            model=self.ctx.models[self.name],
            instruction=instruction,
            system=system,
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
        reply = await self._edit_until_image(request, item)
        item.edited_image = reply.image
        item.attempts = attempt + 1
        return item

    async def _edit_until_image(self, request: EditRequest, item: WorkItem) -> EditReply:
        replies = 0
        while True:
            try:
                return await self.ctx.callers[self.name].edit(request, item.ledger)
            except NoImageReply as exc:
                replies += 1
                if replies > self.spec.no_image_retries:
                    detail = str(exc).splitlines()[0]
                    raise Rejected(
                        RejectReason.edit_failed, f"edit: no image in {replies} replies; last: {detail}"
                    ) from None
            except SafetyBlocked as exc:
                raise Rejected(RejectReason.safety_blocked, f"edit: {exc}") from None
            except BackendError as exc:
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise Rejected(RejectReason.edit_failed, detail) from None
