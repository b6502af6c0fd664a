"""The report's summary numbers: totals accumulated row by row, plus stage totals from stats.json / the call index."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import EXIT_STAGE as STAGE_EXITS
from ..core.config import STAGE_NAMES
from ..run.fs import RunFS
from .call_index import has_call_index, iter_call_index

SCORE_FIELDS = ("instruction_following", "visual_quality", "coherence", "aggregate")
SCORE_LABELS = {
    "instruction_following": "Instruction following",
    "visual_quality": "Visual quality",
    "coherence": "Coherence",
    "aggregate": "Aggregate",
}
#: judge scores are 1–5; histogram bins are centred on the half points 1, 1.5, … 5
SCORE_MIN, SCORE_MAX, SCORE_STEP = 1.0, 5.0, 0.5
SCORE_BINS = [SCORE_MIN + SCORE_STEP * i for i in range(int((SCORE_MAX - SCORE_MIN) / SCORE_STEP) + 1)]
STAGES = STAGE_NAMES
NO_CATEGORY = "none"

#: the stage where a record with this reject reason left the pipeline (from the stage table)
EXIT_STAGE = {**STAGE_EXITS, "budget_exhausted": "not run (budget)"}
EXIT_ORDER = (*STAGES, "accepted", "not run (budget)")


def status_of(row: dict[str, Any]) -> str:
    """'accepted' or the reject reason (a reject without one counts as 'rejected')."""
    if row.get("accepted"):
        return "accepted"
    return row.get("reject_reason") or "rejected"


def exit_stage(row: dict[str, Any]) -> str:
    status = status_of(row)
    if status == "accepted":
        return "accepted"
    detail = (row.get("reject_detail") or "").split(":", 1)[0].strip()
    if status == "safety_blocked" and detail in STAGES:
        return detail
    return EXIT_STAGE.get(status, STAGES[-1])


def score_bin(value: float) -> int:
    clamped = min(max(value, SCORE_MIN), SCORE_MAX)
    return int(round((clamped - SCORE_MIN) / SCORE_STEP))


@dataclass
class RunSummary:
    """Everything the summary section draws, filled row by row (memory independent of the row count)."""

    rows: int = 0
    accepted: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    attempts: int = 0
    categories: dict[str, Counter] = field(default_factory=dict)
    statuses: Counter = field(default_factory=Counter)
    histograms: dict[str, dict[str, list[int]]] = field(
        default_factory=lambda: {
            name: {"accepted": [0] * len(SCORE_BINS), "rejected": [0] * len(SCORE_BINS)}
            for name in SCORE_FIELDS
        }
    )
    cost_by_exit: Counter = field(default_factory=Counter)
    records_by_exit: Counter = field(default_factory=Counter)
    #: measured non-edit consistency (0–1) by accepted / rejected: [count, sum, min]
    non_edit: dict[str, list[float]] = field(
        default_factory=lambda: {"accepted": [0, 0.0, 1.0], "rejected": [0, 0.0, 1.0]}
    )

    def add(self, row: dict[str, Any], scores: dict[str, float | None]) -> None:
        status = status_of(row)
        accepted = status == "accepted"
        self.rows += 1
        self.accepted += accepted
        cost = float(row.get("cost_usd") or 0.0)
        self.cost_usd += cost
        self.latency_s += float(row.get("latency_s") or 0.0)
        self.attempts += int(row.get("attempts") or 0)
        category = row.get("task_category") or NO_CATEGORY
        self.categories.setdefault(category, Counter())["accepted" if accepted else "rejected"] += 1
        self.statuses[status] += 1
        for name, value in scores.items():
            if value is not None:
                self.histograms[name]["accepted" if accepted else "rejected"][score_bin(value)] += 1
        measured = (row.get("scores") or {}).get("non_edit_consistency")
        if measured is not None:
            acc = self.non_edit["accepted" if accepted else "rejected"]
            acc[0] += 1
            acc[1] += float(measured)
            acc[2] = min(acc[2], float(measured))
        stage = exit_stage(row)
        self.cost_by_exit[stage] += cost
        self.records_by_exit[stage] += 1

    @property
    def rejected(self) -> int:
        return self.rows - self.accepted

    def reject_reasons(self) -> list[tuple[str, int]]:
        return sorted(
            ((k, v) for k, v in self.statuses.items() if k != "accepted"), key=lambda kv: (-kv[1], kv[0])
        )


def cost_by_stage_from_index(run_dir: Path | RunFS) -> dict[str, dict[str, float]] | None:
    """Per stage: cost and calls, split into calls made and calls served from the cache; None without an index."""
    if not has_call_index(run_dir):
        return None
    out: dict[str, dict[str, float]] = {}
    for call in iter_call_index(run_dir):
        stage = out.setdefault(call.stage, {"cost_paid": 0.0, "cost_cached": 0.0, "calls": 0, "cached": 0})
        if call.cached and not call.batch:  # a batch reply reaches the record through the cache, paid for it
            stage["cost_cached"] += call.cost_usd
            stage["cached"] += 1
        else:
            stage["cost_paid"] += call.cost_usd
            stage["calls"] += 1
    return out
