"""A run's totals (stats.json, `uniedit stats`, `Run.stats`, the report): the run directory's own totals over its
manifest, plus the figures each stage wrote into its shards' entries, merged by that stage (the run directory
knows no stage's figures)."""

from __future__ import annotations

from typing import Any

from ..method.chain import chain_totals
from ..run.store import summarise
from .judge import judge_totals


def run_totals(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the latest manifest entry of every shard (RunDir.latest_by_shard)."""
    return {**summarise(entries), **judge_totals(entries), **chain_totals(entries)}
