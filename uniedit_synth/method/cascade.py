"""The judge cascade's routing and figures: which edits the expensive judge sees, and how well the cheap one agreed.

A cheap judge scores every edit. Its verdict is *unsure* when its smallest margin over the thresholds (min over
the thresholded axes of score - threshold) lies in the configured band; those edits, and a seeded random share
of the sure ones (the audit), also go to the expensive judge, whose verdict then decides. On the audited share
both verdicts are independent of the routing, so their agreement (overall and per axis, as a confusion table of
pass/fail) measures what the cheap judge costs in quality. Pure functions: the stage, worker and stats use them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

ROUTES = ("cheap", "band", "audit")


def margin(scores: dict[str, float], thresholds: dict[str, float]) -> float:
    """The smallest score - threshold over the thresholded axes (>= 0: passes them all)."""
    return min((float(scores.get(name, 0)) - bar for name, bar in thresholds.items()), default=0.0)


def audit_draw(seed: int, record_id: str, attempt: int) -> float:
    """A uniform draw in [0, 1) fixed by (seed, record, attempt): reruns and resumes audit the same edits."""
    digest = hashlib.sha256(f"uniedit-audit/{seed}/{record_id}/{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def route(
    scores: dict[str, float],
    thresholds: dict[str, float],
    band: tuple[float, float],
    audit_share: float,
    draw: float,
) -> str:
    """`band` (unsure: the expensive judge decides), `audit` (sure, but drawn for the audit) or `cheap`."""
    low, high = band
    if low <= margin(scores, thresholds) <= high:
        return "band"
    return "audit" if draw < audit_share else "cheap"


def passes(scores: dict[str, float] | None, thresholds: dict[str, float]) -> bool:
    return scores is not None and margin(scores, thresholds) >= 0


def shard_counts(entries: Iterable[dict[str, Any]], costs: dict[str, float]) -> dict[str, Any]:
    """Counters of one shard from the judged attempts' cascade entries (summed over shards by `merge`)."""
    out: dict[str, Any] = {
        "judged": 0,
        "routes": dict.fromkeys(ROUTES, 0),
        "decided_by": {"cheap": 0, "expensive": 0},
        "audited": 0,
        "audit_agree": 0,
        "band_agree": 0,
        "confusion": {},
        "cost_usd": {name: round(value, 8) for name, value in costs.items()},
    }
    for entry in entries:
        out["judged"] += 1
        out["routes"][entry["route"]] += 1
        out["decided_by"][entry["decided_by"]] += 1
        if entry.get("expensive") is None:
            continue
        agree = entry["cheap_pass"] == entry["expensive_pass"]
        if entry["route"] == "band":
            out["band_agree"] += int(agree)
            continue
        out["audited"] += 1
        out["audit_agree"] += int(agree)
        for axis, bar in entry.get("thresholds", {}).items():
            cheap = "pass" if entry["cheap"].get(axis, 0) >= bar else "fail"
            expensive = "pass" if entry["expensive"].get(axis, 0) >= bar else "fail"
            cell = out["confusion"].setdefault(axis, {})
            key = f"cheap_{cheap}/expensive_{expensive}"
            cell[key] = cell.get(key, 0) + 1
    return out


def merge(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Sum nested counters (the shards' `cascade` entries)."""
    for key, value in part.items():
        if isinstance(value, dict):
            merge(total.setdefault(key, {}), value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = round(total.get(key, 0) + value, 8)
    return total


def figures(total: dict[str, Any]) -> dict[str, Any]:
    """The run's cascade figures for stats.json and the report: counts plus the rates derived from them."""
    judged = total.get("judged", 0)
    routes = total.get("routes", {})
    expensive = routes.get("band", 0) + routes.get("audit", 0)
    audited = total.get("audited", 0)
    return {
        **total,
        "expensive_calls": expensive,
        "expensive_share": round(expensive / judged, 4) if judged else None,
        "audit_agreement": round(total.get("audit_agree", 0) / audited, 4) if audited else None,
        "band_agreement": round(total.get("band_agree", 0) / routes["band"], 4)
        if routes.get("band")
        else None,
    }
