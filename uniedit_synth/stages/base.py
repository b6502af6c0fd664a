"""What flows between stages: the WorkItem, the Rejected signal, and the shared stage context."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import PipelineConfig
from ..engine.calls import Ledger, ModelCaller
from ..prompts import Prompt, load_prompt
from ..records import RejectReason, Sample, VQARecord


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
    edited_image: bytes | None = None
    scores: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    analysis: str | None = None
    attempts: int = 0
    ledger: Ledger = field(default_factory=Ledger)
    prompt_versions: dict[str, str] = field(default_factory=dict)
    #: judged edits that failed before a later attempt (rows of attempts/, preference negatives)
    failed_attempts: list[Sample] = field(default_factory=list)


@dataclass
class StageContext:
    """What every stage needs: the config, its model caller and prompt loading."""

    config: PipelineConfig
    callers: dict[str, ModelCaller]
    models: dict[str, str]

    @property
    def prompts_dir(self) -> Path:
        return self.config.prompts_path()

    def prompt(self, relative: str) -> Prompt:
        return load_prompt(self.prompts_dir, relative)
