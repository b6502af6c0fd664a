"""The per-record ledger: what one record's model calls cost and took, and which cache entries they used.

The engine fills it (engine/calls.py ModelCaller); stages carry it on their WorkItem and hand it to the caller,
so it lives outside both packages (stages do not import the engine).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import ATTEMPT_STAGES


@dataclass
class Ledger:
    """What one record's calls cost and took, summed over stages (cached calls count at their original
    cost and latency, so a resumed run writes the same rows as an uninterrupted one).

    `cost_usd` is the money this record's calls paid: a cached reply that another record paid for (the same
    image and instruction) costs this row nothing, so summing rows gives the money spent; `attributed_usd`
    also counts such shared replies (the row's `attributed_cost_usd`)."""

    cost_usd: float = 0.0
    attributed_usd: float = 0.0
    latency_s: float = 0.0
    #: the record this ledger belongs to; cache entries name the record that paid for them
    owner: str = ""
    #: batch-mode calls this record is waiting for (engine/batch.py), set when BatchPending is raised
    deferred: list[Any] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    cache_hits: dict[str, int] = field(default_factory=dict)
    spent_now_usd: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    #: the edit attempt the next edit/judge calls belong to (set by the worker)
    attempt: int | None = None
    _counted: set[str] = field(default_factory=set)

    def add(
        self,
        stage: str,
        cost: float,
        latency: float,
        cached: bool,
        key: str = "",
        error: str | None = None,
        kind: str = "text",
        model: str = "",
        paid_by: str | None = None,
        batch: bool = False,
    ) -> None:
        if cached and key in self._counted:
            cost = 0.0  # the same reply used twice for one record (an identical retry) was paid once
        self._counted.add(key)
        shared = cached and paid_by is not None and paid_by != self.owner
        paid = 0.0 if shared else cost
        event = {"stage": stage, "key": key, "cached": cached, "cost_usd": paid, "latency_s": round(latency, 4),
                 "error": error, "kind": kind, "model": model,
                 "attempt": self.attempt if stage.partition("/")[0] in ATTEMPT_STAGES else None}
        if shared:
            event["attributed_usd"] = cost
        if batch:
            event["batch"] = True
        self.events.append(event)
        self.cost_usd += paid
        self.attributed_usd += cost
        self.latency_s += latency
        bucket = self.cache_hits if cached else self.calls
        bucket[stage] = bucket.get(stage, 0) + 1
        if not cached:
            self.spent_now_usd += cost
