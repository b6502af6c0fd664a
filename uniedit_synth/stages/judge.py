"""The judge stage: scores an edit against thresholds — three axes (instruction following, visual quality,
coherence) from both images, or the Uni-Edit release's visual-quality-only check of the edited image.

The three-axis judge answers evidence first (stages/schemas.py JUDGE_SCHEMA): what changed, which branch it
sees, whether anything outside the target changed, its analysis, then the scores. Code decides from both: an
edit showing the other branch, both, or neither, or changes outside the target is rejected whatever the scores
(`low_score`, the observation in reject_detail); content that must be exact (count, ocr, math, render) needs
`exact_thresholds` (instruction following 4 by default)."""

from __future__ import annotations

import asyncio
from typing import Any

from ..core.records import RejectReason, Sample
from ..method import cascade as cascading
from ..method.consistency import box_region_consistency
from ..offline.regions import non_edit_consistency
from .base import StageContext, WorkItem
from .schemas import (
    JUDGE_LOCALISED_SCHEMA,
    JUDGE_SCHEMA,
    LOCALISE_REQUEST,
    REJECTED_BRANCHES,
    RELEASE_JUDGE_SCHEMA,
    JudgeReply,
    ReleaseJudgeReply,
)

#: the caller (and ledger stage) of the cascade's expensive judge
EXPENSIVE_JUDGE = "judge/expensive"


def cascade_counts(samples: list[Sample], items: list[WorkItem]) -> dict[str, Any]:
    """One shard's cascade counters: the judged attempts' entries (final rows and attempts/ rows) and what
    each judge's calls cost (from the records' ledgers)."""
    costs = {"cheap": 0.0, "expensive": 0.0}
    for item in items:
        for event in item.ledger.events:
            if event["stage"] == "judge":
                costs["cheap"] += event["cost_usd"]
            elif event["stage"] == EXPENSIVE_JUDGE:
                costs["expensive"] += event["cost_usd"]
    return cascading.shard_counts((s.judge_cascade for s in samples if s.judge_cascade), costs)


def judge_outcome(item: WorkItem) -> str:
    """What the judge is told the right outcome is. For a conditional plan: the expected branch's edit and
    the other branch's edit as the wrong outcome, never the answer (the judge must not need it, and a
    judge that sees the answer can be swayed by the instruction naming it). Otherwise the reference answer,
    which the edit renders or uses."""
    plan = item.plan
    if plan is not None and plan.conditional and plan.expected_edit and plan.wrong_edit:
        wrong = plan.wrong_edits
        if len(wrong) == 1:
            return (
                f"Expected outcome (the branch that applies): {plan.expected_edit}\n"
                f"Wrong outcome (the other branch; an edit showing it has instruction_following 1 or 2): "
                f"{wrong[0]}"
            )
        # a nested condition or a switch: every other path is a wrong outcome
        listed = "\n".join(f"- {edit}" for edit in wrong)
        return (
            f"Expected outcome (the path that applies): {plan.expected_edit}\n"
            "Wrong outcomes (the other paths; an edit showing any of them has instruction_following 1 or 2):\n"
            f"{listed}"
        )
    return f"Reference answer: {item.process_answer or ''}"


def non_edit_counts(samples: list[Sample], threshold: float | None) -> dict[str, Any] | None:
    """One shard's measured non-edit consistency, by accepted / rejected: count, sum, and how many fall
    below the threshold (0.995 when none is set: the level that separates collateral edits in the tests)."""
    bar = NON_EDIT_REPORT_BAR if threshold is None else threshold
    out: dict[str, Any] = {}
    for sample in samples:
        value = sample.scores.non_edit_consistency
        if value is None:
            continue
        cell = out.setdefault("accepted" if sample.accepted else "rejected", {"n": 0, "sum": 0.0, "below": 0})
        cell["n"] += 1
        cell["sum"] += value
        cell["below"] += int(value < bar)
    return out or None


#: without `non_edit_threshold`, stats count the edits below this level (nothing changed outside on 99.5 %)
NON_EDIT_REPORT_BAR = 0.995

#: why an observation rejects an edit whatever the scores (the reject_detail of a `low_score` reject)
_BRANCH_MISSES = {
    "other": "the judge saw the other branch's edit (the wrong outcome)",
    "both": "the judge saw both branches' edits",
    "none": "the judge saw neither branch's edit",
}


def evidence_misses(evidence: dict[str, Any] | None) -> list[str]:
    """The judge's observations that reject an edit whatever its scores: a branch other than the expected
    one (other, both, none) and changes outside the target."""
    if not evidence:
        return []
    misses = []
    branch = evidence.get("branch_observed")
    if branch in REJECTED_BRANCHES:
        misses.append(f"branch_observed={branch}: {_BRANCH_MISSES[branch]}")
    if evidence.get("changes_outside_target"):
        misses.append("changes_outside_target: the judge saw changes outside the edit's target")
    seen = str(evidence.get("observed_changes") or "").strip()
    if misses and seen:
        misses.append(f"observed: {seen[:300]}")
    return misses


class JudgeStage:
    name = "judge"

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.spec = ctx.config.stages.judge

    async def __call__(self, item: WorkItem) -> bool:
        """Score the item's current edit; returns whether it passes every threshold (and the non-edit
        consistency threshold, when set and measurable)."""
        item.judge_cascade = None
        item.judge_region = None
        item.judge_evidence = None
        if self.spec.preset == "release":
            await self._visual_quality(item)
        elif self.spec.cascade:
            await self._cascade(item)
        else:
            await self._three_axes(item)
        if isinstance(item.edit_program, dict) or item.judge_region is not None:
            # decodes both images and compares them at full size: off the event loop, where it would hold up
            # every other record's calls
            await asyncio.to_thread(self._measure_non_edit, item)
        return not self.failed_thresholds(item)

    def _measure_non_edit(self, item: WorkItem) -> None:
        meta = item.record.meta if isinstance(item.record.meta, dict) else {}
        score = non_edit_consistency(item.image, item.edited_image, item.edit_program, meta)
        if score is None and item.judge_region is not None:
            score = box_region_consistency(item.image, item.edited_image, item.judge_region)
        if score is not None:
            item.scores["non_edit_consistency"] = score

    async def _cascade(self, item: WorkItem) -> None:
        """The cheap judge scores the edit; an unsure verdict (in the band) or an audited one is also
        scored by the expensive judge, whose verdict then decides (cascade.py)."""
        thresholds = self.thresholds_for(item)
        cheap = await self._three_axes(item)
        attempt = item.attempts - 1 if item.attempts else 0
        draw = cascading.audit_draw(self.ctx.config.seed, item.record.id, attempt)
        route = cascading.route(cheap, thresholds, self.spec.cascade_band, self.spec.audit_share, draw)
        entry: dict[str, Any] = {
            "route": route,
            "decided_by": "cheap",
            "cheap_model": self.ctx.models[self.name],
            "cheap": cheap,
            "cheap_pass": cascading.passes(cheap, thresholds),
            "expensive": None,
            "expensive_pass": None,
            "thresholds": dict(thresholds),
        }
        if route != "cheap":
            expensive = await self._three_axes(item, via=EXPENSIVE_JUDGE)
            entry.update(
                decided_by="expensive",
                expensive_model=self.ctx.models[EXPENSIVE_JUDGE],
                expensive=expensive,
                expensive_pass=cascading.passes(expensive, thresholds),
            )
        item.judge_cascade = entry

    async def _three_axes(self, item: WorkItem, via: str | None = None) -> dict[str, float]:
        record = item.record
        parsed = await self.ctx.ask(
            self.name,
            item,
            self.ctx.prompt(self.spec.prompt or "judge.txt"),
            {
                "instruction": item.instruction or "",
                "question": record.question,
                "outcome": judge_outcome(item),
                # for prompts written before plans; empty for a conditional: the judge never sees the answer
                "process_answer": "" if item.plan and item.plan.conditional else item.process_answer or "",
            },
            reply_model=JudgeReply,
            schema=JUDGE_LOCALISED_SCHEMA if self.spec.localise_edit else JUDGE_SCHEMA,
            schema_name="judgement",
            images=[item.image, item.edited_image or b""],
            context={
                "instruction": item.instruction,
                "edit_program": item.edit_program,
                "meta": record.meta,
                "question": record.question,
                "process_answer": item.process_answer,
                "task_category": item.task_category,
                "plan": item.plan.model_dump(mode="json") if item.plan else None,
            },
            failure=RejectReason.judge_failed,
            via=via,
            repair=LOCALISE_REQUEST if self.spec.localise_edit else "",
        )
        item.judge_region = parsed.edit_region
        item.judge_evidence = {
            "observed_changes": parsed.observed_changes,
            "branch_observed": parsed.branch_observed,
            "changes_outside_target": parsed.changes_outside_target,
        }
        item.scores = {
            "instruction_following": parsed.instruction_following,
            "visual_quality": parsed.visual_quality,
            "coherence": parsed.coherence,
        }
        item.score = round(sum(item.scores.values()) / 3, 4)
        item.analysis = parsed.analysis
        return dict(item.scores)

    async def _visual_quality(self, item: WorkItem) -> None:
        """The release's fifth_process_filter.py: the edited image alone, no instruction or question."""
        parsed = await self.ctx.ask(
            self.name,
            item,
            self.ctx.prompt(self.spec.prompt or "judge_release.txt"),
            {},
            reply_model=ReleaseJudgeReply,
            schema=RELEASE_JUDGE_SCHEMA,
            schema_name="judge_visual_quality",
            images=[item.edited_image or b""],
            context={"preset": "release", "task_category": item.task_category},
            failure=RejectReason.judge_failed,
        )
        item.scores = {"visual_quality": parsed.score}
        item.score = float(parsed.score)
        item.analysis = parsed.analysis

    def thresholds_for(self, item: WorkItem) -> dict[str, float]:
        """The thresholds of this item: the stage's, raised to `exact_thresholds` where the content must be
        exact (a category of `exact_categories`, or a render-style plan)."""
        thresholds = dict(self.spec.thresholds)
        exact = item.task_category in self.spec.exact_categories or (
            item.plan is not None and item.plan.style == "render"
        )
        if exact:
            for name, bar in self.spec.exact_thresholds.items():
                thresholds[name] = max(thresholds.get(name, bar), bar)
        return thresholds

    def failed_thresholds(self, item: WorkItem) -> str:
        """Why the item's edit fails ('' when it passes): the deciding judge's observations first (they reject
        whatever the scores), then the scores under their thresholds, then non-edit consistency."""
        misses = evidence_misses(item.judge_evidence)
        misses += [
            f"{name} {item.scores.get(name)} < {bar}"
            for name, bar in self.thresholds_for(item).items()
            if item.scores.get(name, 0) < bar
        ]
        bar = self.spec.non_edit_threshold
        measured = item.scores.get("non_edit_consistency")
        if bar is not None and measured is not None and measured < bar:
            misses.append(f"non_edit_consistency {measured} < {bar}")
        return "; ".join(misses)


def judge_totals(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """What the judge adds to a run's totals (stats.json) from its shards' manifest entries: the cascade's
    counters summed, with the rates derived from them, and the non-edit consistency by accepted / rejected."""
    cascade: dict[str, Any] = {}
    non_edit: dict[str, Any] = {}
    for entry in entries:
        if entry.get("cascade"):
            cascading.merge(cascade, entry["cascade"])
        if entry.get("non_edit"):
            cascading.merge(non_edit, entry["non_edit"])
    return {
        **({"judge_cascade": cascading.figures(cascade)} if cascade else {}),
        **({"non_edit_consistency": {
            status: {"measured": c["n"], "mean": round(c["sum"] / c["n"], 4), "below_threshold": c["below"]}
            for status, c in sorted(non_edit.items()) if c.get("n")
        }} if non_edit else {}),
    }
