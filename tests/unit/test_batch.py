"""engine/batch.py with an in-memory batch route: job files before polling, re-attaching, expired jobs, retries,
budget reservations, and the cost ledger's payer rule."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from uniedit_synth.backends.base import Backend, RetryableError, TextReply, TextRequest, Usage
from uniedit_synth.core.config import Price, RetrySpec
from uniedit_synth.core.specs import BatchSpec
from uniedit_synth.engine.batch import (
    BatchJobFailed,
    BatchPending,
    BatchRunner,
    BatchState,
    DeferredCall,
    ItemResult,
    JobStatus,
    StageBatch,
)
from uniedit_synth.engine.calls import BudgetExhausted, Ledger, ModelCaller
from uniedit_synth.engine.coordinator import Coordinator
from uniedit_synth.run.cache import ResponseCache
from uniedit_synth.run.fs import open_run_fs

PRICES = {"m": Price(input_per_mtok=1_000_000.0, output_per_mtok=0.0)}  # $1 per input token: easy sums


class StubRoute:
    """A provider in memory: jobs end after `polls` polls with `outcome` (ok | expire_half | fail)."""

    provider = "stub"

    def __init__(self, out=None, outcome: str = "ok", polls: int = 1, poll_errors: int = 0):
        self.out = out
        self.outcomes = [outcome] if isinstance(outcome, str) else list(outcome)
        self.polls = polls
        self.poll_errors = poll_errors
        self.jobs: dict[str, dict[str, Any]] = {}
        self.saw_file_before_poll: list[bool] = []

    async def find(self, name: str) -> str | None:
        return next((job_id for job_id, job in self.jobs.items() if job["name"] == name), None)

    def request_bytes(self, kind: str, request: Any) -> int:
        return 100

    async def submit(self, items, name, spec) -> str:
        job_id = f"job-{len(self.jobs)}"
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        self.jobs[job_id] = {"items": items, "polls": 0, "outcome": outcome, "name": name}
        return job_id

    async def poll(self, job_id: str) -> JobStatus:
        if self.poll_errors:
            self.poll_errors -= 1
            raise RetryableError("HTTP 500")
        job = self.jobs[job_id]
        if self.out is not None:
            self.saw_file_before_poll.append((self.out / "batches" / f"{job['name']}.json").exists())
        job["polls"] += 1
        if job["polls"] <= self.polls:
            return JobStatus("running")
        return JobStatus({"ok": "completed", "expire_half": "expired", "fail": "failed"}[job["outcome"]])

    async def results(self, job_id: str, requests: dict[str, dict]) -> dict[str, ItemResult]:
        job = self.jobs[job_id]
        items = job["items"] if job["outcome"] == "ok" else job["items"][: len(job["items"]) // 2]
        if job["outcome"] == "fail":
            items = []
        return {key: ItemResult(reply=TextReply(data={"n": request.prompt}, usage=Usage(input_tokens=2), model="m"))
                for key, _, request in items}


class StubCaller:
    def __init__(self, route: StubRoute, spec: BatchSpec, state: BatchState):
        self.stage = "classify"
        self.bucket = "stub/m"
        self.batch = StageBatch("classify", route, spec, state)


def calls_for(caller: StubCaller, n: int) -> list[DeferredCall]:
    out = []
    for i in range(n):
        request = TextRequest(task="classify", model="m", prompt=f"p{i}")
        out.append(DeferredCall(caller, "text", f"{i:064d}", request, f"rec{i}"))
    return out


def runner(tmp_path, state: BatchState, max_cost: float | None = None) -> BatchRunner:
    out = open_run_fs(str(tmp_path))
    coordinator = Coordinator(rate_limits={}, max_cost_usd=max_cost)
    return BatchRunner(out, ResponseCache(out.child("cache")), coordinator, PRICES, state, sleep=_no_sleep)


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)  # yield, as a real sleep does, without waiting


def test_a_wave_goes_out_as_one_job_written_before_polling_and_fills_the_cache(tmp_path):
    state = BatchState()
    route = StubRoute(out=tmp_path, polls=2)
    caller = StubCaller(route, BatchSpec(poll_s=0.01), state)
    r = runner(tmp_path, state)
    calls = calls_for(caller, 4)
    counts = asyncio.run(r.run_wave(0, calls + calls[:1]))  # a duplicate key is one request
    assert counts["jobs"] == 1 and counts["requests"] == 4 and counts["retried"] == 0
    assert len(route.jobs) == 1 and len(route.jobs["job-0"]["items"]) == 4
    assert route.saw_file_before_poll and all(route.saw_file_before_poll)
    assert counts["spent_usd"] == pytest.approx(4 * 2 * 0.5)  # 2 tokens at $1, half price
    for call in calls:
        entry = r.cache.get(call.key)
        assert entry.meta["_call"]["batch"] is True and entry.meta["_call"]["paid_by"] == call.owner
        assert entry.meta["_call"]["cost_usd"] == pytest.approx(1.0)
    (job,) = [json.loads(p.read_text()) for p in (tmp_path / "batches").glob("*.json")]
    assert job["status"] == "ingested" and job["results"] == 4 and job["job_id"] == "job-0"


def test_a_rerun_reattaches_to_a_job_in_flight_instead_of_resubmitting(tmp_path):
    state = BatchState()
    route = StubRoute(polls=10_000)  # never ends while the first runner watches
    caller = StubCaller(route, BatchSpec(poll_s=0.01), state)
    first = runner(tmp_path, state)

    async def killed_while_polling():
        task = asyncio.ensure_future(first.run_wave(0, calls_for(caller, 3)))
        while not route.jobs or route.jobs["job-0"]["polls"] < 2:
            await asyncio.sleep(0)
        task.cancel()  # the driver dies with the job in flight

    asyncio.run(killed_while_polling())
    route.polls = 0  # the provider finishes it meanwhile
    second_state = BatchState()
    caller2 = StubCaller(route, BatchSpec(poll_s=0.01), second_state)
    counts = asyncio.run(runner(tmp_path, second_state).run_wave(0, calls_for(caller2, 3)))
    assert counts["jobs_attached"] == 1 and len(route.jobs) == 1
    assert all(ResponseCache(tmp_path / "cache").peek(c.key)[1] for c in calls_for(caller2, 3))


def test_expired_job_keeps_its_done_half_and_the_rest_goes_out_again_then_online(tmp_path):
    state = BatchState()
    route = StubRoute(outcome="expire_half")
    caller = StubCaller(route, BatchSpec(poll_s=0.01, max_job_attempts=2, on_failure="online"), state)
    r = runner(tmp_path, state)
    calls = calls_for(caller, 4)
    counts = asyncio.run(r.run_wave(0, calls))
    assert counts["retried"] == 2
    done = [c for c in calls if r.cache.peek(c.key)[1]]
    assert [c.owner for c in done] == ["rec0", "rec1"]
    # the next wave sends only the rest; after the second job without a result they go online
    counts = asyncio.run(r.run_wave(0, [c for c in calls if c not in done]))
    assert len(route.jobs["job-1"]["items"]) == 2 and counts["retried"] == 1
    assert state.online == {calls[3].key}
    ledger = Ledger(owner="rec3")
    caller.batch.defer(caller, "text", calls[3].key, calls[3].request, ledger)  # goes online: no raise
    with pytest.raises(BatchPending):
        caller.batch.defer(caller, "text", "f" * 64, calls[3].request, ledger)
    assert len(ledger.deferred) == 1


def test_jobs_that_keep_failing_stop_the_run_when_told_to(tmp_path):
    state = BatchState()
    route = StubRoute(outcome="fail", poll_errors=2)  # two 500s on polls first: retried, not fatal
    caller = StubCaller(route, BatchSpec(poll_s=0.01, max_job_attempts=1, on_failure="stop"), state)
    with pytest.raises(BatchJobFailed, match="no result from 1 batch jobs"):
        asyncio.run(runner(tmp_path, state).run_wave(0, calls_for(caller, 2)))


def test_the_budget_is_reserved_before_a_job_is_submitted(tmp_path):
    state = BatchState()
    route = StubRoute()
    caller = StubCaller(route, BatchSpec(poll_s=0.01), state)
    # each request is estimated at (2 // 4 + 0 images) input tokens... plus 600 output tokens at $0: a
    # tiny prompt costs 0 input tokens by the estimate, so give them real text
    calls = []
    for i in range(3):
        request = TextRequest(task="classify", model="m", prompt="x" * 40)  # 10 tokens → $10 × 0.5
        calls.append(DeferredCall(caller, "text", f"{i:064d}", request.model_copy(update={"prompt": "x" * 40 + str(i)}),
                                  f"rec{i}"))
    r = runner(tmp_path, state, max_cost=11.0)  # room for two requests' $5 estimates
    asyncio.run(r.run_wave(0, calls))
    assert len(route.jobs) == 1 and len(route.jobs["job-0"]["items"]) == 2
    assert state.exhausted == {calls[2].key}
    with pytest.raises(BudgetExhausted):
        caller.batch.defer(caller, "text", calls[2].key, calls[2].request, Ledger())


class _Backend(Backend):
    provider = "openai"

    class spec:  # noqa: N801 - the attribute ModelCaller reads
        model = "m"

    def __init__(self):
        self.calls = 0

    async def complete(self, request: TextRequest) -> TextReply:
        self.calls += 1
        return TextReply(data={}, usage=Usage(input_tokens=3), model="m")


def test_a_reply_another_record_paid_for_is_attributed_not_paid_again(tmp_path):
    backend = _Backend()
    caller = ModelCaller("judge", backend, cache=ResponseCache(tmp_path), coordinator=Coordinator(rate_limits={}),
                         prices=PRICES, retry=RetrySpec(), rate_limited=False)
    request = TextRequest(task="judge", model="m", prompt="same")
    payer, sharer, replay = Ledger(owner="a"), Ledger(owner="b"), Ledger(owner="a")

    async def run():
        for ledger in (payer, sharer, replay):
            await caller.text(request, ledger)

    asyncio.run(run())
    assert backend.calls == 1
    assert (payer.cost_usd, payer.attributed_usd) == (3.0, 3.0)
    assert (sharer.cost_usd, sharer.attributed_usd) == (0.0, 3.0)  # was 3.0: the run paid it twice
    assert (replay.cost_usd, replay.attributed_usd) == (3.0, 3.0)  # a resumed record's row is unchanged
    assert sharer.events[0]["attributed_usd"] == 3.0 and sharer.events[0]["cost_usd"] == 0.0


def test_mode_and_batch_settings_do_not_change_the_pipeline_hash():
    """An online run's directory can be resumed with --batch (the rows are the same either way)."""
    from uniedit_synth.core.config import load_pipeline

    online = load_pipeline("uniedit")
    batch = load_pipeline("uniedit", {"stages": {s: {"mode": "batch", "batch": {"poll_s": 1}}
                                                for s in ("classify", "rewrite", "edit", "judge")}})
    assert batch.stages.edit.mode == "batch" and online.hashed_view() == batch.hashed_view()


@pytest.mark.parametrize("created", [True, False])
def test_a_submit_cut_short_by_a_kill_is_found_at_the_provider_or_abandoned(tmp_path, created):
    """The driver died after writing the job file and before the provider's job id came back."""
    from uniedit_synth.engine.batch import JobStore, request_info

    state = BatchState()
    route = StubRoute()
    caller = StubCaller(route, BatchSpec(poll_s=0.01), state)
    calls = calls_for(caller, 3)
    name = "classify-00000-cut0000000"
    JobStore(open_run_fs(str(tmp_path))).write({
        "name": name, "job_id": None, "status": "submitting", "stage": "classify", "model": "m", "shard": 0,
        "requests": 3, "owners": {c.key: c.owner for c in calls}, **request_info(calls),
    })
    if created:  # the provider had created it
        asyncio.run(route.submit([(c.key, c.kind, c.request) for c in calls], name, BatchSpec()))
    counts = asyncio.run(runner(tmp_path, state).run_wave(0, calls))
    assert len(route.jobs) == 1  # found and followed, or (never created) submitted once now
    assert counts["jobs"] == 1 and counts["jobs_attached"] == (1 if created else 0)
    files = {p.name: json.loads(p.read_text())["status"] for p in (tmp_path / "batches").glob("*.json")}
    assert files[f"{name}.json"] == ("ingested" if created else "abandoned")
    assert all(ResponseCache(tmp_path / "cache").peek(c.key)[1] for c in calls)


def test_the_waves_of_several_shards_share_one_job_and_each_shard_is_charged_its_own_requests(tmp_path):
    state = BatchState()
    route = StubRoute()
    caller = StubCaller(route, BatchSpec(poll_s=0.01, group_s=0.2), state)
    out = open_run_fs(str(tmp_path))
    r = BatchRunner(out, ResponseCache(out.child("cache")), Coordinator(rate_limits={}), PRICES, state)
    calls = calls_for(caller, 5)

    async def two_shards():
        return await asyncio.gather(r.run_wave(0, calls[:3]), r.run_wave(1, calls[2:]))  # key 2 in both

    zero, one = asyncio.run(two_shards())
    assert len(route.jobs) == 1 and len(route.jobs["job-0"]["items"]) == 5
    assert zero["spent_usd"] + one["spent_usd"] == pytest.approx(5 * 1.0)  # every request charged once
    assert {zero["spent_usd"], one["spent_usd"]} <= {2.0, 3.0}


def test_the_python_api_takes_batch_like_the_cli(tmp_path, caplog):
    from uniedit_synth import synth

    with caplog.at_level("WARNING"):
        summary = synth("default", out=tmp_path / "run", limit=4, batch=True,
                        overrides={"engine": {"kind": "inline"}})
    assert summary.read == 4
    said = [r.getMessage() for r in caplog.records if "batch mode" in r.getMessage()]
    assert len(said) == 1 and "judge (builtin)" in said[0]  # builtin backends have no batch route


def test_a_request_already_going_out_for_another_shard_is_not_sent_twice(tmp_path):
    state = BatchState()
    route = StubRoute()
    submit = route.submit

    async def slow_submit(items, name, spec):
        await asyncio.sleep(0.3)  # the provider takes its time to create the job
        return await submit(items, name, spec)

    route.submit = slow_submit
    caller = StubCaller(route, BatchSpec(poll_s=0.01, group_s=0.05), state)
    out = open_run_fs(str(tmp_path))
    r = BatchRunner(out, ResponseCache(out.child("cache")), Coordinator(rate_limits={}), PRICES, state)
    calls = calls_for(caller, 3)

    async def late_second_shard():
        first = asyncio.ensure_future(r.run_wave(0, calls))
        await asyncio.sleep(0.15)  # the first group is being submitted now
        return await asyncio.gather(first, r.run_wave(1, calls[1:]))

    zero, one = asyncio.run(late_second_shard())
    assert len(route.jobs) == 1 and len(route.jobs["job-0"]["items"]) == 3
    assert one["retried"] == 0 and zero["spent_usd"] + one["spent_usd"] == pytest.approx(3.0)


def test_identical_online_calls_in_flight_are_sent_once(tmp_path):
    backend = _Backend()
    complete = backend.complete

    async def slow(request):
        await asyncio.sleep(0.05)
        return await complete(request)

    backend.complete = slow
    caller = ModelCaller("judge", backend, cache=ResponseCache(tmp_path), coordinator=Coordinator(rate_limits={}),
                         prices=PRICES, retry=RetrySpec(), rate_limited=False)
    request = TextRequest(task="judge", model="m", prompt="same")
    ledgers = [Ledger(owner=f"r{i}") for i in range(3)]

    async def together():
        await asyncio.gather(*(caller.text(request, ledger) for ledger in ledgers))

    asyncio.run(together())
    assert backend.calls == 1
    assert sorted(ledger.cost_usd for ledger in ledgers) == [0.0, 0.0, 3.0]
    assert all(ledger.attributed_usd == 3.0 for ledger in ledgers)
