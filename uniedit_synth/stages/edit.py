"""The edit stage: an image model performs the instruction on the source image; the pixel gates check the result."""

from __future__ import annotations

import asyncio
import io

import numpy as np
from PIL import Image

from ..backends.base import BackendError, EditReply, EditRequest, NoImageReply, SafetyBlocked
from ..core.png import png_size
from ..core.records import RejectReason
from ..method import pixel_gates
from ..offline.regions import edit_region
from .base import Rejected, StageContext, WorkItem


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's header, or None when it cannot be read."""
    size = png_size(data)
    if size is not None:
        return size
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - an unreadable image is left to the stages that need its pixels
        return None


def to_size(data: bytes, size: tuple[int, int]) -> bytes:
    """The image at `size` (Lanczos), as PNG; unchanged bytes when it already is, or cannot be decoded."""
    return fit_to_size(data, size)[0]


def fit_to_size(data: bytes, size: tuple[int, int]) -> tuple[bytes, Image.Image | None]:
    """to_size's bytes, and the resized image when it had to be decoded (the pixel gates measure that image
    instead of decoding the PNG just written); None with unchanged bytes."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.size == size:
                return data, None
            image = pixel_gates.decode_rgb(opened.copy())
    except Exception:  # noqa: BLE001 - an undecodable reply goes on as it came (the judge sees it)
        return data, None
    buffer = io.BytesIO()
    resized = pixel_gates.in_geometry(image, size)
    resized.save(buffer, format="PNG")
    return buffer.getvalue(), resized


class EditStage:
    """Renders prompts/edit.txt as the Uni-Edit release's editor input (data_gen/forth_process.py: "Original
    Question / Reference Answer / Task Instruction"), its system half as the request's `system`, and asks
    again when a reply carries no image (up to `no_image_retries` times; safety blocks are rejects).

    With `keep_geometry` the request carries the source's size (each backend asks its model for the closest
    geometry it supports) and the edited image is resized to the source's size. The pixel gates then run
    before any judge call: a no-op or over-edit is edited again while `max_attempts` allow (the attempt the
    worker's judge loop continues from: `item.attempts`), then rejected as `no_op_edit` / `over_edited`."""

    name = "edit"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.spec = ctx.config.stages.edit
        gates = self.spec.gates
        self.limits = pixel_gates.GateLimits(
            no_op_delta=gates.no_op_delta,
            max_changed_share=dict(gates.max_changed_share),
            shift_delta=gates.shift_delta,
            spread_share=gates.spread_share,
            outside_delta=gates.outside_delta,
        )

    async def __call__(self, item: WorkItem, attempt: int) -> WorkItem:
        source_size = image_size(item.image) if item.image else None
        while True:
            item.ledger.attempt = attempt
            reply = await self._edit_until_image(self._request(item, attempt, source_size), item)
            item.attempts = attempt + 1
            # the resize (when the reply's header says the model changed the size) and the gates in one trip to
            # a thread: each trip wakes the event loop through its self-pipe, a system call
            fit = self.spec.keep_geometry and source_size is not None and image_size(reply.image) != source_size
            if fit or self.spec.gates.enabled:
                failed = await asyncio.to_thread(self._fit_and_gate, item, reply.image, source_size if fit else None)
            else:
                item.edited_image, failed = reply.image, None
            last = attempt + 1 >= self.spec.max_attempts
            if last:  # no later attempt will measure against the source: its view (0.2 MB) goes
                item.source_view = None
            if failed is None:
                return item
            if last:
                raise Rejected(RejectReason(failed.reason), f"edit: {failed.detail}")
            attempt += 1

    def _request(self, item: WorkItem, attempt: int, source_size: tuple[int, int] | None) -> EditRequest:
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
        return EditRequest(
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
            source_size=source_size if self.spec.keep_geometry else None,
        )

    def _fit_and_gate(
        self, item: WorkItem, image: bytes, size: tuple[int, int] | None
    ) -> pixel_gates.GateFailure | None:
        """Sets the edit on `item`, brought to `size` first when given (fit_to_size), and returns the pixel gate
        it fails (None: none, or the gates are off)."""
        pixels = None
        if size is not None:
            image, pixels = fit_to_size(image, size)
        item.edited_image = image
        return self._gate(item, pixels) if self.spec.gates.enabled else None

    def _gate(self, item: WorkItem, edited: Image.Image | None = None) -> pixel_gates.GateFailure | None:
        """The pixel gate the current edit fails, or None (also when an image cannot be
        decoded: that is the judge's to see). `edited`: the edit already decoded (fit_to_size), if it was.
        The source's view is decoded once per record (validation leaves it on the item) and kept for
        every attempt."""
        if not item.image or not item.edited_image:
            return None
        try:
            cached = item.source_view
            if cached is not None and cached[0] is None:  # validation's view of the image it just set
                cached = item.source_view = (item.image, cached[1])
            if cached is None or cached[0] is not item.image:  # a view of these very bytes, or decode them
                cached = item.source_view = (item.image, pixel_gates.source_view(item.image))
            region = None
            if isinstance(item.edit_program, dict):  # only a program knows a region (full-size pixels)
                meta = item.record.meta if isinstance(item.record.meta, dict) else {}
                source = np.asarray(pixel_gates.decode_rgb(item.image))
                region = edit_region(source, item.edit_program, meta)
            measures = pixel_gates.measure(
                cached[1], edited if edited is not None else item.edited_image, region, self.limits
            )
        except Exception:  # noqa: BLE001 - an undecodable edit is not a pixel verdict
            return None
        style = item.plan.style if item.plan is not None else None
        return pixel_gates.verdict(measures, self.limits, style)

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
