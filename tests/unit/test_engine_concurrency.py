"""What keeps a worker's stages busy: shards held per worker, and the coordinator calls a worker answers locally."""

from __future__ import annotations

import asyncio
from typing import Any

from uniedit_synth.core.config import parse_pipeline
from uniedit_synth.engine.coordinator import Coordinator
from uniedit_synth.engine.driver import shards_per_worker
from uniedit_synth.engine.runtime import RemoteCoordinator


class _Method:
    def __init__(self, target: Coordinator, name: str, log: list[str]):
        self._fn = getattr(target, name)
        self._name = name
        self._log = log

    def remote(self, *args: Any, **kwargs: Any):
        self._log.append(self._name)
        return self._fn(*args, **kwargs)


class FakeHandle:
    """Stands in for a Ray actor handle: `handle.method.remote(...)` is awaitable; every call is logged."""

    def __init__(self, target: Coordinator):
        self._target = target
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> _Method:
        return _Method(self._target, name, self.calls)


def _config(**engine: Any):
    stage = {"backend": "text", "concurrency": 64}
    return parse_pipeline({
        "backends": {"text": {"type": "builtin", "model": "m"}},
        "stages": {"classify": stage, "rewrite": stage, "edit": stage, "judge": stage},
        "engine": {"shard_size": 50, **engine},
    })


def test_workers_hold_enough_shards_for_every_stage_to_fill_its_concurrency():
    # 4 stages x 64 = 256 calls in flight need 512 records waiting (12 shards of 50 with one to classify)
    assert shards_per_worker(_config()) == 12
    assert shards_per_worker(_config(shard_size=1000)) == 2
    assert shards_per_worker(_config(shards_in_flight_per_worker=3)) == 3


def test_unlimited_bucket_is_answered_locally_but_a_pause_reaches_every_worker():
    async def scenario() -> None:
        coordinator = Coordinator(rate_limits={"openai/limited": {"rpm": 6000, "tpm": None}})
        handle = FakeHandle(coordinator)
        a = RemoteCoordinator(handle, limited=frozenset({"openai/limited"}), budget=False, holder="a")
        b = RemoteCoordinator(handle, limited=frozenset({"openai/limited"}), budget=False, holder="b")
        for _ in range(50):
            assert await a.acquire("openai/free", 10) == 0.0
        assert handle.calls.count("revocations") == 1  # polled once, not asked per call
        assert handle.calls.count("acquire") == 0
        await b.acquire("openai/free")  # b polls now, before any pause

        await a.pause("openai/free", 5.0)  # a hit a 429 with Retry-After: 5
        assert 4.5 < await a.acquire("openai/free") <= 5.0  # a knows at once
        b._holder._heard -= RemoteCoordinator.PAUSE_POLL_S  # b's next poll is due
        assert 4.5 < await b.acquire("openai/free") <= 5.0  # b learns it from the coordinator

        await asyncio.gather(*(a.acquire("openai/limited") for _ in range(3)))  # 3 calls waiting at once
        assert handle.calls.count("acquire") == 0  # a configured limit is spent from a lease
        stats = (await coordinator.limiter_stats())["openai/limited"]
        assert handle.calls.count("lease") == stats["leases"] < 3 and stats["max_lease"] == 3

        # a progress report's reply carries the pauses too: c learns of one without polling
        c = RemoteCoordinator(handle, limited=frozenset({"openai/limited"}), budget=False, holder="c")
        await a.pause("openai/other", 3.0)
        polls = handle.calls.count("revocations")
        await c.report({"records": 1})
        assert 2.5 < await c.acquire("openai/other") <= 3.0
        assert handle.calls.count("revocations") == polls

        unleased = RemoteCoordinator(handle, limited=frozenset({"openai/limited"}), budget=False, leases=False)
        for _ in range(3):
            await unleased.acquire("openai/limited")
        assert handle.calls.count("acquire") == 3  # without leases every call asks the coordinator

    asyncio.run(scenario())


def test_without_a_budget_spending_travels_with_the_progress_report():
    async def scenario() -> None:
        coordinator = Coordinator(rate_limits={})
        handle = FakeHandle(coordinator)
        worker = RemoteCoordinator(handle, limited=frozenset(), budget=False)
        assert await worker.budget_left()
        await worker.spend(0.25)
        await worker.spend(0.5)
        assert "spend" not in handle.calls and "budget_left" not in handle.calls
        await worker.report({"records": 2})
        progress = await coordinator.progress()
        assert progress["spent_usd"] == 0.75 and progress["records"] == 2

        budgeted = RemoteCoordinator(FakeHandle(Coordinator(rate_limits={}, max_cost_usd=1.0)),
                                     limited=frozenset(), budget=True)
        assert await budgeted.spend(0.6) is True
        assert await budgeted.spend(0.6) is False  # with a budget every spend is checked at once
        assert not await budgeted.budget_left()

    asyncio.run(scenario())
