"""An orderly stop drains (issue 27 part 4): when one record's call ends the run (an outage), the worker sends
nothing new, but a call already on the wire is awaited and its reply cached, so the rerun never pays for it
again; the run ends with the outage's own error, and a retry's back-off is cut short."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from uniedit_synth.backends.base import Backend, TextReply, TextRequest, Unreachable, request_key
from uniedit_synth.core.config import BackendSpec, RetrySpec
from uniedit_synth.core.errors import ProviderUnreachable
from uniedit_synth.engine.calls import Drain, Ledger, ModelCaller, RunStopping
from uniedit_synth.engine.coordinator import Coordinator
from uniedit_synth.engine.worker import gather_or_cancel
from uniedit_synth.run.cache import ResponseCache


class Scripted(Backend):
    """`down` prompts fail as unreachable at once; `slow` prompts answer after 0.3 s; others answer at once."""

    provider = "fake"

    def __init__(self):
        self.spec = BackendSpec(type="fake", model="m")
        self.sent: list[str] = []

    async def complete(self, request: TextRequest) -> TextReply:
        self.sent.append(request.prompt)
        if request.prompt.startswith("down"):
            await asyncio.sleep(0.05)
            raise Unreachable("connection refused")
        if request.prompt.startswith("slow"):
            await asyncio.sleep(0.3)
        return TextReply(data={"answer": request.prompt}, model="m")


def req(prompt: str) -> TextRequest:
    return TextRequest(task="judge", model="m", system="s", prompt=prompt)


def make_caller(cache: ResponseCache, retry: RetrySpec | None = None) -> tuple[ModelCaller, Scripted]:
    backend = Scripted()
    caller = ModelCaller("judge", backend, cache=cache, coordinator=Coordinator(rate_limits={}), prices={},
                         retry=retry or RetrySpec(max_attempts=1), rate_limited=False)
    return caller, backend


def test_an_outage_waits_for_the_call_on_the_wire_and_sends_nothing_new(tmp_path: Path):
    cache = ResponseCache(tmp_path)
    caller, backend = make_caller(cache)
    drain = caller.drain

    async def record(prompts: list[str], delay: float = 0.0) -> None:
        await asyncio.sleep(delay)
        for prompt in prompts:
            await caller.text(req(prompt), Ledger())

    async def go():
        await gather_or_cancel([record(["slow-1"]), record(["down-1"]), record(["late-1"], delay=0.15)], drain)

    with pytest.raises(ProviderUnreachable):
        asyncio.run(go())
    assert cache.get(request_key("text", req("slow-1"), with_context=False)) is not None  # landed after the outage: cached
    assert "late-1" not in backend.sent  # nothing new went out once the run was stopping


def test_without_a_drain_the_old_behaviour_cancels_at_once(tmp_path: Path):
    cache = ResponseCache(tmp_path)
    caller, _ = make_caller(cache)

    async def go():
        await gather_or_cancel([caller.text(req("slow-2"), Ledger()), caller.text(req("down-2"), Ledger())])

    with pytest.raises(ProviderUnreachable):
        asyncio.run(go())
    assert cache.get(request_key("text", req("slow-2"), with_context=False)) is None


def test_stop_waits_for_calls_in_flight_and_then_refuses_new_ones(tmp_path: Path):
    cache = ResponseCache(tmp_path)
    caller, _ = make_caller(cache)

    async def go():
        call = asyncio.ensure_future(caller.text(req("slow-3"), Ledger()))
        await asyncio.sleep(0.05)
        awaited = await caller.drain.stop(5.0)
        assert call.done() and call.result().data == {"answer": "slow-3"}
        with pytest.raises(RunStopping):
            await caller.text(req("new-3"), Ledger())
        return awaited

    assert asyncio.run(go()) == 1


def test_a_back_off_in_progress_ends_when_the_run_stops(tmp_path: Path):
    cache = ResponseCache(tmp_path)
    caller, backend = make_caller(cache, RetrySpec(max_attempts=5, initial_s=30, max_s=30, jitter_s=0))

    async def go():
        call = asyncio.ensure_future(caller.text(req("down-4"), Ledger()))
        await asyncio.sleep(0.2)  # the first attempt failed; it now backs off for 30 s
        started = time.monotonic()
        caller.drain.halt()
        with pytest.raises(RunStopping):
            await call
        return time.monotonic() - started

    assert asyncio.run(go()) < 5
    assert backend.sent == ["down-4"]


def test_the_cause_is_kept_for_the_other_shards():
    drain = Drain()
    drain.halt(ProviderUnreachable("down"))
    drain.halt(RunStopping("later"))
    assert isinstance(drain.cause, ProviderUnreachable)
