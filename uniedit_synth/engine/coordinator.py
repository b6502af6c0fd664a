"""The run's single coordinator: cluster-wide rate limits, the cost budget, live progress and category caps.

There is exactly one Coordinator per run. Under Ray it is an async actor every worker talks to, so a
429's Retry-After pauses a provider+model bucket for *every* worker and the budget is shared; under
`--engine inline` the same class is used in-process. All methods are coroutines, so both work alike.

Rate limits are leased (DESIGN §4): a worker does not ask the actor per call. It takes a `Lease` of a few
consecutive GCRA slots of a bucket (sized from the bucket's rate, the workers drawing on it and the
worker's own demand) and spends them locally (`LeaseHolder`), so the actor sees about one RPC per 20+
calls. A slot is a moment on the bucket's schedule: a call goes at its slot or up to LEASE_GRACE_S after
it, never before, and a slot nobody used by then lapses (its share of the limit went by unused, nothing
is owed back). Hence the bound the tests check: over any window of T seconds the cluster sends at most
rate·(T + LEASE_GRACE_S) + 1 calls, inside the ≤ limit × 1.02 + one lease per worker of DESIGN §4. A 429's
Retry-After bumps the bucket's epoch, which revokes every lease: each worker learns it with its next lease
or poll (at most LeaseHolder.POLL_S old when it sends), and the revoked slots are not handed out again.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

#: a lease covers at most this much of a bucket's schedule, split among the workers drawing on it; at
#: 200 calls/s and 2 workers that is 50 calls a lease (well under one RPC per 20 calls)
LEASE_SPAN_S = 0.5
#: how late a leased slot may still be used (then it lapses): a worker whose event loop stalled still spends
#: what it was granted; adds rate × this (one lease per worker at 2 workers) to any window's count
LEASE_GRACE_S = 0.5
#: a worker counts as drawing on a bucket for this long after its last lease
ACTIVE_S = 2.0


def _rpc(method):
    """Count calls of a coordinator method (each one is an actor round trip under Ray)."""

    @functools.wraps(method)
    async def counted(self, *args, **kwargs):
        self._rpcs[method.__name__] += 1
        return await method(self, *args, **kwargs)

    return counted


@dataclass
class Lease:
    """Consecutive slots of a bucket's schedule for one worker, as offsets from the moment of the grant:
    slot 0 at `first_in`, slot i ≥ 1 at `rest_in + (i - 1) · spacing` (seconds). `slots` None: the bucket
    has no limit (only pauses apply). `pauses`: seconds left of every active pause, and `epochs`: every
    bucket's revocation count, so a lease reply also carries the news a poll would."""

    bucket: str
    slots: int | None
    first_in: float = 0.0
    rest_in: float = 0.0
    spacing: float = 0.0
    epoch: int = 0
    pauses: dict[str, float] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)


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
    epoch: int = 0  # bumped by every pause: leases of an older epoch are revoked
    leases: int = 0
    max_lease: int = 0
    holders: dict[str, float] = field(default_factory=dict)  # worker -> when it last took a lease

    def spacing(self, tokens: float) -> float:
        """Seconds between two calls of `tokens` tokens each (0: no limit applies)."""
        interval = 60.0 / self.rpm if self.rpm else 0.0
        if self.tpm and tokens:
            interval = max(interval, tokens * 60.0 / self.tpm)
        return interval

    def reserve_block(self, now: float, slots: int, tokens_each: float) -> tuple[float, float, float]:
        """Reserve `slots` consecutive slots (GCRA, one interval of burst when idle, as `reserve`); returns
        (first slot, second slot, spacing) in this clock."""
        at = max(now, self.paused_until)
        spacing = self.spacing(tokens_each)
        base = max(self.tat_requests, self.tat_tokens, at)
        first = max(at, base - spacing)
        self.tat_requests = self.tat_tokens = base + slots * spacing
        self.granted += slots
        self.leases += 1
        self.max_lease = max(self.max_lease, slots)
        return first, base, spacing

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
        self.epoch += 1
        self.paused_until = max(self.paused_until, now + seconds)
        # leased slots are revoked, but their time is not handed out again: a worker that has not heard of
        # the pause yet may still use one, and the bound must hold whatever the order
        self.tat_requests = max(self.tat_requests, self.paused_until)
        self.tat_tokens = max(self.tat_tokens, self.paused_until)


@dataclass
class Progress:
    records: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    cost_usd: float = 0.0
    calls: Counter = field(default_factory=Counter)
    cache_hits: Counter = field(default_factory=Counter)
    batch: Counter = field(default_factory=Counter)  # batch jobs: submitted, done, requests (engine/batch.py)


class ShardOrderGate:
    """Per-shard answers decided strictly in shard order: a shard's question waits until every earlier
    registered shard has been decided, so the outcome (which record a cap admits, which copy of a duplicate
    is kept) never depends on which worker was faster. A retried shard gets the answer it got before.

    `decide(question)` turns one shard's question into its answer, in order; `registered` is the
    coordinator's sorted list of shards the driver dispatched or skipped (shared, so one registration serves
    every gate)."""

    def __init__(self, registered: list[int], decide: Callable[[Any], list[Any]]):
        self._registered = registered
        self._decide = decide
        self.decided: dict[int, list[Any]] = {}
        self._pending: dict[int, Any] = {}
        self._waiters: dict[int, asyncio.Future] = {}

    async def ask(self, shard: int, question: Any) -> list[Any]:
        if shard in self.decided:
            return self.decided[shard]
        self._pending[shard] = question
        self.advance()
        if shard not in self.decided:
            fut = asyncio.get_running_loop().create_future()
            self._waiters[shard] = fut
            await fut
        return self.decided[shard]

    def settle(self, shard: int, answer: list[Any]) -> None:
        """A shard decided outside the gate (a finished shard the driver skips): later shards may go on."""
        if shard not in self.decided:
            self.decided[shard] = answer
            self.advance()

    def advance(self) -> None:
        for shard in self._registered:
            if shard in self.decided:
                continue
            if shard not in self._pending:
                return  # an earlier shard has not asked yet: later ones wait for it
            self.decided[shard] = self._decide(self._pending.pop(shard))
            waiter = self._waiters.pop(shard, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)


class Coordinator:
    def __init__(
        self,
        rate_limits: dict[str, dict[str, float | None]],
        max_cost_usd: float | None = None,
        spent_before_usd: float = 0.0,
        category_caps: dict[str, int] | None = None,
        admitted_before: dict[str, int] | None = None,
        screen: dict[str, Any] | None = None,
    ):
        self._buckets = {key: Bucket(rpm=v.get("rpm"), tpm=v.get("tpm")) for key, v in rate_limits.items()}
        self._max_cost = max_cost_usd
        self._spent = spent_before_usd
        self._progress = Progress()
        self._caps = dict(category_caps or {})
        self._admitted: Counter = Counter(admitted_before or {})
        self._registered: list[int] = []
        self._rpcs: Counter = Counter()
        self._caps_gate = ShardOrderGate(self._registered, self._admit_in_order)
        # source.dedup / source.decontaminate: a second ordered lane, decided before classify
        self._screen = None
        if screen is not None:
            from ..method.screen import InputScreen

            self._screen = InputScreen(screen.get("by"), screen.get("max_distance", 4), screen.get("benchmarks", ()))
        self._screen_gate = ShardOrderGate(self._registered, lambda entries: self._screen.decide(entries))

    # -- rate limits -------------------------------------------------------------------------------
    @_rpc
    async def lease(self, bucket: str, holder: str, want: int, tokens_each: float = 0.0) -> Lease:
        """Grant worker `holder` up to `want` consecutive slots of `bucket` (at least 1; at most its share of
        LEASE_SPAN_S of the bucket's schedule among the workers drawing on it)."""
        limiter = self._buckets.get(bucket)
        now = time.monotonic()
        pauses = self._pauses(now)
        epochs = {key: b.epoch for key, b in self._buckets.items() if b.epoch}
        spacing = limiter.spacing(tokens_each) if limiter is not None else 0.0
        if limiter is None or spacing <= 0:
            epoch = limiter.epoch if limiter is not None else 0
            return Lease(bucket, None, epoch=epoch, pauses=pauses, epochs=epochs)
        limiter.holders[holder] = now
        active = sum(1 for seen in limiter.holders.values() if now - seen < ACTIVE_S)
        share = max(1, int(LEASE_SPAN_S / spacing / active))
        slots = max(1, min(int(want), share))
        first, second, spacing = limiter.reserve_block(now, slots, tokens_each)
        return Lease(bucket, slots, first - now, second - now, spacing, limiter.epoch, pauses, epochs)

    @_rpc
    async def revocations(self) -> tuple[dict[str, float], dict[str, int]]:
        """What a lease holder polls when it has not heard from the coordinator for a while: seconds left of
        every active pause, and every bucket's epoch (bumped by each pause)."""
        now = time.monotonic()
        return self._pauses(now), {key: b.epoch for key, b in self._buckets.items() if b.epoch}

    def _pauses(self, now: float) -> dict[str, float]:
        return {key: b.paused_until - now for key, b in self._buckets.items() if b.paused_until > now}

    async def rpc_counts(self) -> dict[str, int]:
        """Calls of each coordinator method so far (each an actor round trip under Ray)."""
        return dict(self._rpcs)

    @_rpc
    async def acquire(self, bucket: str, tokens: int = 0) -> float:
        """Reserve a request slot in `bucket`; the caller sleeps the returned number of seconds."""
        limiter = self._buckets.get(bucket)
        if limiter is None:
            return 0.0
        now = time.monotonic()
        delay = limiter.reserve(now, tokens)
        return delay

    @_rpc
    async def pause(self, bucket: str, seconds: float) -> int:
        """A provider said Retry-After: hold every worker's calls to this bucket for `seconds` and revoke its
        leases; returns the bucket's new epoch."""
        limiter = self._buckets.get(bucket)
        if limiter is None:
            limiter = self._buckets[bucket] = Bucket(rpm=None, tpm=None)
        limiter.pause(time.monotonic(), seconds)
        return limiter.epoch

    @_rpc
    async def pauses(self) -> dict[str, float]:
        """Seconds left of every active Retry-After pause, by bucket (workers poll this for unlimited buckets)."""
        return self._pauses(time.monotonic())

    async def limiter_stats(self) -> dict[str, Any]:
        return {
            key: {"granted": b.granted, "pauses": b.pauses, "rpm": b.rpm, "tpm": b.tpm, "leases": b.leases,
                  "max_lease": b.max_lease}
            for key, b in self._buckets.items()
        }

    # -- budget --------------------------------------------------------------------------------------
    @_rpc
    async def budget_left(self) -> bool:
        # money held for batch jobs in flight counts as spent until they are ingested
        return self._max_cost is None or self._spent + getattr(self, "_reserved", 0.0) < self._max_cost

    @_rpc
    async def spend(self, usd: float) -> bool:
        """Record money spent; returns whether budget is left."""
        self._spent += usd
        return self._max_cost is None or self._spent < self._max_cost

    async def spent(self) -> float:
        return self._spent

    @_rpc
    async def reserve(self, usd: float) -> bool:
        """Hold `usd` of the budget for a batch job about to be submitted; False when it does not fit."""
        reserved = getattr(self, "_reserved", 0.0)
        if self._max_cost is not None and self._spent + reserved + usd > self._max_cost:
            return False
        self._reserved = reserved + usd
        return True

    @_rpc
    async def release(self, usd: float) -> None:
        """A batch job ended: its reservation goes back (what it cost is `spend`-ed)."""
        self._reserved = max(0.0, getattr(self, "_reserved", 0.0) - usd)

    # -- progress ------------------------------------------------------------------------------------
    @_rpc
    async def report(self, delta: dict[str, Any]) -> tuple[dict[str, float], dict[str, int]]:
        """Add a worker's progress; returns what `revocations` would (so a report also serves as a poll)."""
        p = self._progress
        p.records += delta.get("records", 0)
        p.accepted += delta.get("accepted", 0)
        p.rejected.update(delta.get("rejected", {}))
        p.cost_usd += delta.get("cost_usd", 0.0)
        self._spent += delta.get("spent_usd", 0.0)  # money a worker summed locally (no budget to check)
        p.calls.update(delta.get("calls", {}))
        p.cache_hits.update(delta.get("cache_hits", {}))
        p.batch.update(delta.get("batch", {}))
        return self._pauses(time.monotonic()), {key: b.epoch for key, b in self._buckets.items() if b.epoch}

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
    @_rpc
    async def register_shard(
        self, shard: int, preset: dict[str, int] | None = None, screened: list[Any] | None = None
    ) -> None:
        """Called by the driver in increasing shard order, for every shard it dispatches, and (with the
        counts from the manifest as `preset`, and the screen entries that passed as `screened`) for every
        finished shard it skips."""
        if shard not in self._registered:
            self._registered.append(shard)
            self._registered.sort()
        if preset is not None and shard not in self._caps_gate.decided:
            self._admitted.update(preset)
            self._caps_gate.settle(shard, [])
        if preset is not None and self._screen is not None and shard not in self._screen_gate.decided:
            from ..method.screen import ScreenEntry

            self._screen.remember(ScreenEntry(**e) if isinstance(e, dict) else e for e in (screened or []))
            self._screen_gate.settle(shard, [])

    # -- input screen (dedup, decontamination), decided in shard order like the caps ----------------
    @_rpc
    async def screen(self, shard: int, entries: list[Any]) -> list[Any]:
        """Per entry (method.screen.ScreenEntry) of this shard: None or (reason, detail), deciding shards in order."""
        if self._screen is None:
            return [None] * len(entries)
        return await self._screen_gate.ask(shard, entries)

    @_rpc
    async def admit(self, shard: int, categories: list[str]) -> list[bool]:
        """Which of this shard's records (by category) fit under the caps, deciding shards in order."""
        if not self._caps:
            return [True] * len(categories)
        return await self._caps_gate.ask(shard, categories)

    def _admit_in_order(self, categories: list[str]) -> list[bool]:
        verdicts = []
        for category in categories:
            cap = self._caps.get(category, self._caps.get("*"))
            ok = cap is None or self._admitted[category] < cap
            if ok:
                self._admitted[category] += 1
            verdicts.append(ok)
        return verdicts


@dataclass
class _Held:
    """One bucket as a worker holds it: its leased slots (local monotonic times) and what it knows."""

    slots: deque[float] = field(default_factory=deque)
    epoch: int = 0
    paused_until: float = 0.0
    unlimited: bool = False
    last_lease: int = 0
    waiting: int = 0  # calls inside acquire
    needy: int = 0  # of those, the ones without a slot yet
    tokens_avg: float = 0.0
    recent: deque[float] = field(default_factory=deque)  # when recent calls asked for a slot (last DEMAND_S)
    renewal: asyncio.Task | None = None

    def revoke(self, epoch: int) -> None:
        if epoch > self.epoch:
            self.epoch = epoch
            self.slots.clear()


class LeaseHolder:
    """A worker's side of leased rate limits: spends the slots of its leases locally, renews them before they
    run out (one renewal in flight per bucket), and keeps up with pauses and revocations — from every lease
    reply, and by a poll when it has heard nothing for POLL_S, so no call goes out on news older than that.

    `call(name, *args)` sends one coordinator RPC and returns its awaited result.
    """

    POLL_S = 0.5
    DEMAND_S = 1.0

    def __init__(self, call: Callable[..., Awaitable[Any]], holder: str, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep):
        self._call = call
        self._holder = holder
        self._clock = clock
        self._sleep = sleep
        self._held: dict[str, _Held] = {}
        self._heard = -math.inf  # when the coordinator last told us its pauses and epochs
        self._poll: asyncio.Task | None = None

    def held(self, bucket: str) -> _Held:
        held = self._held.get(bucket)
        if held is None:
            held = self._held[bucket] = _Held()
        return held

    async def acquire(self, bucket: str, tokens: int = 0) -> float:
        """Wait for this worker's next slot of `bucket` (and out any pause); returns 0.0, the call may go."""
        held = self.held(bucket)
        now = self._clock()
        held.recent.append(now)
        while held.recent and now - held.recent[0] > self.DEMAND_S:
            held.recent.popleft()
        held.tokens_avg = tokens if not held.tokens_avg else 0.9 * held.tokens_avg + 0.1 * tokens
        held.waiting += 1
        held.needy += 1
        try:
            while True:
                await self.keep_up()
                now = self._clock()
                if held.paused_until > now:
                    await self._sleep(min(held.paused_until - now, self.POLL_S))
                    continue
                if held.unlimited:
                    return 0.0
                while held.slots and held.slots[0] + LEASE_GRACE_S < now:
                    held.slots.popleft()  # went by unused: that share of the limit is gone
                if not held.slots:
                    await self._renew(bucket, held)
                    continue
                slot, epoch = held.slots.popleft(), held.epoch
                held.needy -= 1
                if len(held.slots) <= held.last_lease // 2 and self._want(held) >= max(2, held.last_lease // 2):
                    self._start_renewal(bucket, held)  # demand goes on: the next lease comes before this runs out
                while (wait := slot - self._clock()) > 0 and held.epoch == epoch:
                    await self._sleep(min(wait, self.POLL_S))
                    await self.keep_up()
                if held.epoch == epoch and held.paused_until <= self._clock():
                    return 0.0
                held.needy += 1  # revoked while waiting for it: wait out the pause, then take a fresh slot
        finally:
            held.waiting -= 1

    async def pause(self, bucket: str, seconds: float) -> None:
        """This worker hit a 429: stop its own calls to the bucket at once, then tell the coordinator."""
        held = self.held(bucket)
        held.paused_until = max(held.paused_until, self._clock() + seconds)
        held.slots.clear()
        held.revoke(await self._call("pause", bucket, seconds))

    def paused_for(self, bucket: str) -> float:
        held = self._held.get(bucket)
        return max(0.0, held.paused_until - self._clock()) if held else 0.0

    async def keep_up(self) -> None:
        """Poll the coordinator's pauses and epochs if the latest news is older than POLL_S (one poll at a
        time: concurrent callers wait for it)."""
        if self._clock() - self._heard < self.POLL_S:
            return
        if self._poll is None or self._poll.done():
            self._poll = asyncio.ensure_future(self._do_poll())
        await asyncio.shield(self._poll)

    async def _do_poll(self) -> None:
        pauses, epochs = await self._call("revocations")
        self._news(pauses, epochs)

    def news(self, pauses: dict[str, float], epochs: dict[str, int]) -> None:
        """Pauses and epochs the coordinator sent with another reply (a progress report)."""
        self._news(pauses, epochs)

    def _news(self, pauses: dict[str, float], epochs: dict[str, int]) -> None:
        now = self._clock()
        self._heard = now
        for bucket, epoch in epochs.items():
            self.held(bucket).revoke(epoch)
        for bucket, seconds in pauses.items():
            held = self.held(bucket)
            held.paused_until = max(held.paused_until, now + seconds)

    def _start_renewal(self, bucket: str, held: _Held) -> asyncio.Task:
        if held.renewal is None or held.renewal.done():
            held.renewal = asyncio.ensure_future(self._lease(bucket, held))
        return held.renewal

    async def _renew(self, bucket: str, held: _Held) -> None:
        await asyncio.shield(self._start_renewal(bucket, held))

    def _want(self, held: _Held) -> int:
        """Slots to ask for: the calls waiting for one now, or the recent rate over the span a lease covers,
        less the slots in hand."""
        rate = len(held.recent) / self.DEMAND_S
        return max(held.needy, math.ceil(rate * LEASE_SPAN_S)) - len(held.slots)

    async def _lease(self, bucket: str, held: _Held) -> None:
        lease: Lease = await self._call("lease", bucket, self._holder, max(1, self._want(held)), held.tokens_avg)
        got = self._clock()
        self._news(lease.pauses, lease.epochs)
        if lease.slots is None:
            held.unlimited = True
            return
        if lease.epoch < held.epoch:
            return  # granted before a pause we already know of: revoked
        held.revoke(lease.epoch)
        held.slots.append(got + lease.first_in)
        held.slots.extend(got + lease.rest_in + i * lease.spacing for i in range(lease.slots - 1))
        held.last_lease = lease.slots
