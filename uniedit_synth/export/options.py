"""The options of one export (filters, split, sharding, masks), validated once, shared by every format."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..core.records import TASK_CATEGORIES
from ..method.masks import (
    DEFAULT_CLOSE_KERNEL,
    DEFAULT_MIN_COMPONENT_FRAC,
    DEFAULT_THRESHOLD,
    DEFAULT_VAE_FACTOR,
)

SPLITS = ("train", "validation")


class ExportOptions(BaseModel):
    """Everything that decides which samples an export takes and how it lays them out."""

    model_config = ConfigDict(extra="forbid")

    format: str
    min_score: float | None = None
    categories: tuple[str, ...] | None = None
    include_rejects: bool = False
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    shard_rows: int = Field(..., gt=0)
    row_group_rows: int = Field(..., ge=0)
    with_masks: bool = False
    mask_grid: int | tuple[int, int] | None = None
    mask_factor: int = Field(DEFAULT_VAE_FACTOR, ge=1)
    mask_threshold: int = Field(DEFAULT_THRESHOLD, ge=0, le=255)
    mask_close_kernel: int = Field(DEFAULT_CLOSE_KERNEL, ge=0)
    mask_min_component_frac: float = Field(DEFAULT_MIN_COMPONENT_FRAC, ge=0.0, le=1.0)
    weight_fn: Literal["log", "linear", "exp_root", "quad_root"] = "log"
    #: uniedit-jsonl only: "default" (sharded rows with ids, masks, pairs) or "release" (uniedit_release.py)
    layout: Literal["default", "release"] = "default"
    bagel_data_dir: str | None = None
    bagel_name: str = "uniedit"
    #: bagel only: add the reasoning trace as thinking text before the edited image (export/bagel.py)
    with_reasoning: bool = False
    #: a plugin format's own options (`--format-option KEY=VALUE`), as its `Options` model validated them
    format_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        unknown = sorted(set(value) - set(TASK_CATEGORIES))
        if unknown:
            raise ValueError(f"unknown categories {unknown}; known: {', '.join(TASK_CATEGORIES)}")
        return tuple(value)
