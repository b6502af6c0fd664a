"""Why a record left the pipeline: the RejectReason enum (the table of stages names each stage's reasons)."""

from __future__ import annotations

from enum import Enum


class RejectReason(str, Enum):
    """Why a record left the pipeline without becoming an accepted sample."""

    invalid_input = "invalid_input"
    duplicate_id = "duplicate_id"
    duplicate_input = "duplicate_input"
    contaminated = "contaminated"
    filtered_category = "filtered_category"
    category_capped = "category_capped"
    classify_failed = "classify_failed"
    rewrite_failed = "rewrite_failed"
    leaks_answer = "leaks_answer"
    edit_failed = "edit_failed"
    safety_blocked = "safety_blocked"
    #: pixel gates (method/pixel_gates.py), before the judge is paid: the edit returned the source, or changed
    #: more than its style allows (or the whole image)
    no_op_edit = "no_op_edit"
    over_edited = "over_edited"
    judge_failed = "judge_failed"
    low_score = "low_score"
    budget_exhausted = "budget_exhausted"
    #: the call of a stage without a failure reason of its own failed (a stage added to the table; the detail
    #: names the stage)
    stage_failed = "stage_failed"
    #: with `source.group_by_image`: this record's question was embedded in another record's sample (the
    #: detail names that sample's id), so the record leaves the run through that sample
    merged = "merged"
