"""The figures of an evaluation computed from per-sample rows: per-axis and per-category means, and the paired
difference of two models per figure with a seeded percentile-bootstrap 95 % interval.

Pure functions over plain rows (`{"key", "category", "figures": {name: value} | None}`), so a test (or a
reader of eval.json) recomputes every number from the per-sample scores alone.
"""

from __future__ import annotations

import random
import statistics
from typing import Any

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def figure_names(rows: list[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        for name in row.get("figures") or {}:
            names.setdefault(name)
    return list(names)


def means(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in figure_names(rows):
        values = [r["figures"][name] for r in rows if r.get("figures") and r["figures"].get(name) is not None]
        out[name] = statistics.fmean(values) if values else None
    return out


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, the mean of every figure, and the same per category."""
    judged = [r for r in rows if r.get("figures")]
    categories = sorted({r["category"] for r in rows})
    return {
        "samples": len(rows),
        "judged": len(judged),
        "failed": len(rows) - len(judged),
        "mean": means(rows),
        "per_category": {c: {"samples": sum(r["category"] == c for r in rows),
                             "mean": means([r for r in rows if r["category"] == c])} for c in categories},
    }


def bootstrap_interval(diffs: list[float], resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the mean of `diffs` resampled with replacement (seeded)."""
    rng = random.Random(seed)
    n = len(diffs)
    boot = sorted(statistics.fmean(diffs[rng.randrange(n)] for _ in range(n)) for _ in range(resamples))
    return percentile(boot, 2.5), percentile(boot, 97.5)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default `linear` method)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    position = (len(sorted_values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def paired(model: list[dict[str, Any]], baseline: list[dict[str, Any]], resamples: int = BOOTSTRAP_RESAMPLES,
           seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Per figure: mean(model − baseline) over the samples both have it for, with a bootstrap 95 % interval."""
    base = {r["key"]: r for r in baseline if r.get("figures")}
    out: dict[str, Any] = {"resamples": resamples, "seed": seed, "method": "percentile bootstrap of the mean "
                           "paired difference, samples resampled with replacement", "figures": {}}
    for name in figure_names(model + baseline):
        diffs = [r["figures"][name] - base[r["key"]]["figures"][name] for r in model
                 if r.get("figures") and r["key"] in base and r["figures"].get(name) is not None
                 and base[r["key"]]["figures"].get(name) is not None]
        if not diffs:
            out["figures"][name] = {"n": 0, "mean_diff": None, "ci95": None}
            continue
        low, high = bootstrap_interval(diffs, resamples, seed)
        out["figures"][name] = {"n": len(diffs), "mean_diff": statistics.fmean(diffs), "ci95": [low, high]}
    return out
