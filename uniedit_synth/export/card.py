"""Dataset-card body for exports: counts per split and category, score histograms, as plain markdown tables."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

from ..core.records import Sample
from .options import SPLITS, ExportOptions
from .selection import PreferencePair

HISTOGRAM_BINS = 10
BAR_WIDTH = 30


class CardStats:
    """What the card reports, accumulated while an export streams its rows."""

    def __init__(self) -> None:
        self.rows: Counter[str] = Counter()
        self.pairs: Counter[str] = Counter()
        self.by_category: Counter[tuple[str, str]] = Counter()
        self.scores: dict[str, list[float]] = defaultdict(list)
        self.weights: list[float] = []

    def add(self, sample: Sample, split: str, weight: float | None = None) -> None:
        category = sample.task_category or "unknown"
        self.rows[split] += 1
        self.by_category[(category, split)] += 1
        if sample.score is not None:
            self.scores[category].append(float(sample.score))
        if weight is not None:
            self.weights.append(weight)

    def discard(self, category: str, split: str, score: float | None) -> None:
        """Uncount a row a writer removed after it was added (the release layout's duplicate removal)."""
        self.rows[split] -= 1
        self.by_category[(category, split)] -= 1
        if self.by_category[(category, split)] <= 0:
            del self.by_category[(category, split)]
        if score is not None and float(score) in self.scores[category]:
            self.scores[category].remove(float(score))

    def add_pair(self, pair: PreferencePair, split: str) -> None:
        self.pairs[split] += 1

    def categories(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for (category, _split), count in self.by_category.items():
            totals[category] += count
        return dict(sorted(totals.items()))


def _bins(values: list[float]) -> list[float]:
    low, high = math.floor(min(values)), math.ceil(max(values))
    if high <= low:
        high = low + 1
    step = (high - low) / HISTOGRAM_BINS
    return [low + i * step for i in range(HISTOGRAM_BINS + 1)]


def _histogram(values: list[float], edges: list[float]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    for value in values:
        index = int((value - edges[0]) / (edges[-1] - edges[0]) * (len(edges) - 1))
        counts[min(max(index, 0), len(counts) - 1)] += 1
    return counts


def _fmt(value: float) -> str:
    return f"{value:g}"


def score_histogram_table(values: list[float]) -> str:
    """A markdown table: score bin, count, text bar."""
    if not values:
        return "_no scores_\n"
    edges = _bins(values)
    counts = _histogram(values, edges)
    peak = max(counts) or 1
    lines = ["| score | count | |", "|---|---:|---|"]
    for i, count in enumerate(counts):
        closing = "]" if i == len(counts) - 1 else ")"
        bar = "█" * round(BAR_WIDTH * count / peak)
        lines.append(f"| [{_fmt(edges[i])}, {_fmt(edges[i + 1])}{closing} | {count} | {bar} |")
    return "\n".join(lines) + "\n"


def category_histogram_table(scores: dict[str, list[float]]) -> str:
    """A markdown table: one row per category, one column per score bin (bins shared by all categories)."""
    everything = [value for values in scores.values() for value in values]
    if not everything:
        return "_no scores_\n"
    edges = _bins(everything)
    header = "| category | " + " | ".join(f"≥{_fmt(edge)}" for edge in edges[:-1]) + " | mean |"
    lines = [header, "|---|" + "---:|" * (len(edges) - 1) + "---:|"]
    for category in sorted(scores):
        values = scores[category]
        cells = " | ".join(str(count) for count in _histogram(values, edges))
        lines.append(f"| {category} | {cells} | {sum(values) / len(values):.2f} |")
    return "\n".join(lines) + "\n"


def card_body(
    stats: CardStats, options: ExportOptions, run_info: dict[str, Any], title: str, usage: str
) -> str:
    """The markdown body of README.md (after any YAML front matter)."""
    splits = [split for split in SPLITS if stats.rows[split] or stats.pairs[split]]
    out = [
        f"# {title}\n",
        "Reasoning-heavy image-editing data made from VQA pairs with uniedit-synth (the Uni-Edit method).\n",
    ]
    out.append("## How to load\n")
    out.append(usage.strip() + "\n")
    out.append("## Counts\n")
    out.append("| split | samples | preference pairs |\n|---|---:|---:|")
    for split in splits:
        out.append(f"| {split} | {stats.rows[split]} | {stats.pairs[split]} |")
    out.append(f"| **total** | {sum(stats.rows.values())} | {sum(stats.pairs.values())} |\n")
    out.append("### Per task category\n")
    out.append("| category | " + " | ".join(splits) + " | total |")
    out.append("|---|" + "---:|" * (len(splits) + 1))
    for category, total in stats.categories().items():
        cells = " | ".join(str(stats.by_category[(category, split)]) for split in splits)
        out.append(f"| {category} | {cells} | {total} |")
    out.append("")
    out.append("## Judge scores\n")
    out.append("All samples:\n")
    out.append(score_histogram_table([v for values in stats.scores.values() for v in values]))
    out.append("Per category:\n")
    out.append(category_histogram_table(stats.scores))
    if stats.weights:
        mean_weight = sum(stats.weights) / len(stats.weights)
        out.append("## Edit masks\n")
        out.append(
            "Masks by UniWorld-V1's recipe (per-channel RGB difference, threshold, close, small components "
            f"dropped, max-pooled; `uniedit_synth/method/masks.py`), region weight `{options.weight_fn}`; "
            f"mean weight {mean_weight:.3f}, max {max(stats.weights):.3f}.\n"
        )
    out.append("## Provenance\n")
    filters = {
        "min_score": options.min_score,
        "categories": list(options.categories) if options.categories else None,
        "include_rejects": options.include_rejects,
        "val_fraction": options.val_fraction,
    }
    out.append("| key | value |\n|---|---|")
    for key, value in filters.items():
        out.append(f"| {key} | {value} |")
    for key in ("pipeline_hash", "started_at", "finished_at"):
        if run_info.get(key):
            out.append(f"| {key} | {run_info[key]} |")
    out.append("")
    return "\n".join(out)
