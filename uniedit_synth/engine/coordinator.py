"""The run's single coordinator: cluster-wide rate limits, the cost budget, live progress and category caps.

There is exactly one Coordinator per run. Under Ray it is an async actor every worker talks to, so a
429's Retry-After pauses a provider+model bucket for *every* worker and the budget is shared; under
`--engine inline` the same class is used in-process. All methods are coroutines, so both work alike.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Bucket:
    """A GCRA limiter (virtual scheduling): requests, and tokens, are spaced so the long-run rate never
    exceeds rpm (tpm); a burst of one extra interval is tolerated."""

    rpm: float | None
    tpm: float | None
    tat_requests: float = 0.0  # theoretical arrival time of the next request
    tat_tokens: float = 0.0
    paused_until: float = 0.0
    granted: int = 0
    pauses: int = 0

    def reserve(self, now: float, tokens: int) -> float:
        """Reserve a slot for one request of `tokens` tokens; returns how long the caller must wait."""
        at = max(now, self.paused_until)
        if self.rpm:
            interval = 60.0 / self.rpm
            tat = max(self.tat_requests, at)
            at = max(at, tat - interval)
            self.tat_requests = tat + interval
        if self.tpm and tokens:
            span = tokens * 60.0 / self.tpm
            tat = max(self.tat_tokens, at)
            at = max(at, tat - span)
            self.tat_tokens = tat + span
        self.granted += 1
        return max(0.0, at - now)

    def pause(self, now: float, seconds: float) -> None:
        self.pauses += 1
        self.paused_until = max(self.paused_until, now + seconds)


@dataclass
class Progress:
    records: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    cost_usd: float = 0.0
    calls: Counter = field(default_factory=Counter)
    cache_hits: Counter = field(default_factory=Counter)
    batch: Counter = field(default_factory=Counter)  # batch jobs: submitted, done, requests (engine/batch.py)


class Coordinator:
    def __init__(
        self,
        rate_limits: dict[str, dict[str, float | None]],
        max_cost_usd: float | None = None,
        spent_before_usd: float = 0.0,
        category_caps: dict[str, int] | None = None,
        admitted_before: dict[str, int] | None = None,
    ):
        self._buckets = {key: Bucket(rpm=v.get("rpm"), tpm=v.get("tpm")) for key, v in rate_limits.items()}
        self._max_cost = max_cost_usd
        self._spent = spent_before_usd
        self._progress = Progress()
        self._caps = dict(category_caps or {})
        self._admitted: Counter = Counter(admitted_before or {})
        self._registered: list[int] = []
        self._decided: dict[int, list[bool]] = {}
        self._pending: dict[int, list[str]] = {}
        self._waiters: dict[int, asyncio.Future] = {}

    # -- rate limits -------------------------------------------------------------------------------
    async def acquire(self, bucket: str, tokens: int = 0) -> float:
        """Reserve a request slot in `bucket`; the caller sleeps the returned number of seconds."""
        limiter = self._buckets.get(bucket)
        if limiter is None:
            return 0.0
        now = time.monotonic()
        delay = limiter.reserve(now, tokens)
        return delay

    async def pause(self, bucket: str, seconds: float) -> None:
        """A provider said Retry-After: hold every worker's calls to this bucket for `seconds`."""
        limiter = self._buckets.get(bucket)
        if limiter is None:
            limiter = self._buckets[bucket] = Bucket(rpm=None, tpm=None)
        limiter.pause(time.monotonic(), seconds)

    async def pauses(self) -> dict[str, float]:
        """Seconds left of every active Retry-After pause, by bucket (workers poll this for unlimited buckets)."""
        now = time.monotonic()
        return {key: b.paused_until - now for key, b in self._buckets.items() if b.paused_until > now}

    async def limiter_stats(self) -> dict[str, Any]:
        return {
            key: {"granted": b.granted, "pauses": b.pauses, "rpm": b.rpm, "tpm": b.tpm}
            for key, b in self._buckets.items()
        }

    # -- budget --------------------------------------------------------------------------------------
    async def budget_left(self) -> bool:
        # money held for batch jobs in flight counts as spent until they are ingested
        return self._max_cost is None or self._spent + getattr(self, "_reserved", 0.0) < self._max_cost

    async def spend(self, usd: float) -> bool:
        """Record money spent; returns whether budget is left."""
        self._spent += usd
        return self._max_cost is None or self._spent < self._max_cost

    async def spent(self) -> float:
        return self._spent

    async def reserve(self, usd: float) -> bool:
        """Hold `usd` of the budget for a batch job about to be submitted; False when it does not fit."""
        reserved = getattr(self, "_reserved", 0.0)
        if self._max_cost is not None and self._spent + reserved + usd > self._max_cost:
            return False
        self._reserved = reserved + usd
        return True

    async def release(self, usd: float) -> None:
        """A batch job ended: its reservation goes back (what it cost is `spend`-ed)."""
        self._reserved = max(0.0, getattr(self, "_reserved", 0.0) - usd)

    # -- progress ------------------------------------------------------------------------------------
    async def report(self, delta: dict[str, Any]) -> None:
        p = self._progress
        p.records += delta.get("records", 0)
        p.accepted += delta.get("accepted", 0)
        p.rejected.update(delta.get("rejected", {}))
        p.cost_usd += delta.get("cost_usd", 0.0)
        self._spent += delta.get("spent_usd", 0.0)  # money a worker summed locally (no budget to check)
        p.calls.update(delta.get("calls", {}))
        p.cache_hits.update(delta.get("cache_hits", {}))
        p.batch.update(delta.get("batch", {}))

    async def progress(self) -> dict[str, Any]:
        p = self._progress
        return {
            "records": p.records,
            "accepted": p.accepted,
            "rejected": dict(p.rejected),
            "cost_usd": p.cost_usd,
            "spent_usd": self._spent,
            "calls": dict(p.calls),
            "cache_hits": dict(p.cache_hits),
            "batch": dict(p.batch),
        }

    # -- category caps, admitted in shard order so the outcome never depends on timing ---------------
    async def register_shard(self, shard: int, preset: dict[str, int] | None = None) -> None:
        """Called by the driver in increasing shard order, for every shard it dispatches, and (with the
        counts from the manifest as `preset`) for every finished shard it skips."""
        if shard not in self._registered:
            self._registered.append(shard)
            self._registered.sort()
        if preset is not None and shard not in self._decided:
            self._admitted.update(preset)
            self._decided[shard] = []
            self._advance()

    async def admit(self, shard: int, categories: list[str]) -> list[bool]:
        """Which of this shard's records (by category) fit under the caps, deciding shards in order."""
        if not self._caps:
            return [True] * len(categories)
        if shard in self._decided:  # a retried shard gets the same answer
            return self._decided[shard]
        self._pending[shard] = categories
        self._advance()
        if shard not in self._decided:
            fut = asyncio.get_running_loop().create_future()
            self._waiters[shard] = fut
            await fut
        return self._decided[shard]

    def _advance(self) -> None:
        for shard in self._registered:
            if shard in self._decided:
                continue
            if shard not in self._pending:
                return  # an earlier shard has not classified yet: later ones wait for it
            verdicts = []
            for category in self._pending.pop(shard):
                cap = self._caps.get(category, self._caps.get("*"))
                ok = cap is None or self._admitted[category] < cap
                if ok:
                    self._admitted[category] += 1
                verdicts.append(ok)
            self._decided[shard] = verdicts
            waiter = self._waiters.pop(shard, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
