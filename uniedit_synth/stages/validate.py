"""The validate stage: a record's input checked before any model sees it (its image decoded and normalised).

A repeated id becomes `duplicate_id`, a record that breaks `input:` (sources/validate.py) or whose bytes or text
raise anything becomes `invalid_input`. With `source.dedup` or `source.decontaminate` on, the decoded image's
fingerprint is kept on the item for the worker's screen, and (pixel gates on) the gates' working view of the
source for the edit stage, so the image is not decoded a second time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..backends.plugin_guard import describe as describe_exception
from ..core.records import RejectReason
from ..sources import image_root_for
from ..sources.validate import InvalidInput, validate_record
from .base import Rejected, StageContext, WorkItem, with_source_view


class ValidateStage:
    name = "validate"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.policy = ctx.config.input
        self.root = image_root_for(ctx.config.source)
        self.screening = bool(ctx.config.source.dedup or ctx.config.source.decontaminate)

    async def __call__(self, item: WorkItem) -> WorkItem:
        if item.record.duplicate:
            raise Rejected(RejectReason.duplicate_id, "an earlier record has the same id")
        on_image = None
        if self.screening:  # fingerprint the decoded image there: no second decode for the screen
            from ..method.fingerprint import fingerprint_image

            def on_image(image: Any) -> None:
                item.fingerprint = fingerprint_image(image).to_hex()

        # the decoded image also gives the pixel gates' view of the source: the edit stage does not decode it again
        on_image = with_source_view(on_image, item, self.ctx.config.stages.edit.gates.enabled)
        try:
            clean = await asyncio.to_thread(validate_record, item.record, self.policy, self.root, on_image)
        except InvalidInput as exc:
            raise Rejected(RejectReason.invalid_input, exc.detail) from None
        except Exception as exc:  # noqa: BLE001 - whatever one record's bytes or text raise is its own reject
            raise Rejected(RejectReason.invalid_input, f"unreadable record: {describe_exception(exc)}") from None
        item.record = clean
        item.image = clean.image or b""
        return item
