"""Batch job files are input, not trusted state (issue 30, items 2 and 5): files of the wrong shape are listed,
never crash; a job name cannot leave the run; a job the provider no longer knows is expired and its requests go
out again once; a truncated or deleted job file of a job in flight is recovered from its second record; an online
stage waits for its requests that are in a job in flight instead of sending them again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.unit.test_batch import StubCaller, StubRoute, calls_for, runner
from uniedit_synth.backends.base import NotFound
from uniedit_synth.core.specs import BatchSpec
from uniedit_synth.engine.batch import (
    BatchPending,
    BatchState,
    JobStore,
    StageBatch,
    request_info,
    summarise_jobs,
)
from uniedit_synth.run.cache import ResponseCache
from uniedit_synth.run.fs import open_run_fs


def a_job(calls, name: str = "classify-00000-abcdef0123", **changes) -> dict:
    job = {"name": name, "job_id": "job-0", "status": "submitted", "stage": "classify", "model": "m", "shard": 0,
           "provider": "stub", "requests": len(calls), "owners": {c.key: c.owner for c in calls},
           "estimated_usd": 0.0, **request_info(calls)}
    job.update(changes)
    return job


def write_raw(run: Path, name: str, text: str) -> None:
    (run / "batches").mkdir(parents=True, exist_ok=True)
    (run / "batches" / f"{name}.json").write_text(text)


BAD = {
    "requests a string": lambda job: json.dumps({**job, "requests": "many"}),
    "requests null": lambda job: json.dumps({**job, "requests": None}),
    "the file is null": lambda job: "null",
    "the file is a list": lambda job: json.dumps([job]),
    "spent 1e400": lambda job: json.dumps(job)[:-1] + ', "spent_usd": 1e400}',
    "requests 1e400": lambda job: json.dumps({**job, "requests": 0}).replace('"requests": 0', '"requests": 1e400'),
    "owners a list": lambda job: json.dumps({**job, "owners": ["a", "b"]}),
    "owners a string": lambda job: json.dumps({**job, "owners": "everyone"}),
    "status unknown": lambda job: json.dumps({**job, "status": 7}),
    "truncated": lambda job: json.dumps(job)[:40],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_job_file_of_the_wrong_shape_is_listed_as_unreadable_not_trusted(tmp_path, case):
    caller = StubCaller(StubRoute(), BatchSpec(poll_s=0.01), BatchState())
    good = a_job(calls_for(caller, 2), name="classify-00000-good000000", status="ingested", results=2)
    JobStore(open_run_fs(str(tmp_path))).write(good)
    write_raw(tmp_path, "classify-00001-bad0000000", BAD[case](a_job(calls_for(caller, 3),
                                                                    name="classify-00001-bad0000000")))
    jobs, unreadable = JobStore(open_run_fs(str(tmp_path))).scan()
    assert [j["name"] for j in jobs] == ["classify-00000-good000000"]
    assert [u["file"] for u in unreadable] == ["batches/classify-00001-bad0000000.json"]
    summary = summarise_jobs(jobs, unreadable)
    assert summary["jobs"] == 1 and summary["requests"] == 2 and summary["unreadable"] == unreadable
    json.dumps(summary, allow_nan=False)  # stats.json stays valid JSON


def test_a_job_name_that_leaves_the_run_writes_nothing_outside_it(tmp_path):
    run = tmp_path / "a" / "run"
    run.mkdir(parents=True)
    state = BatchState()
    route = StubRoute()
    caller = StubCaller(route, BatchSpec(poll_s=0.01), state)
    calls = calls_for(caller, 2)
    name = "../../../escape-x"
    write_raw(run, "classify-00000-abcdef0123", json.dumps(a_job(calls, name=name, job_id=None,
                                                                 status="submitting")))
    asyncio.run(runner(run, state).run_wave(0, calls))
    escaped = [p for p in tmp_path.rglob("*escape*")]
    assert escaped == []
    assert all(ResponseCache(run / "cache").peek(c.key)[1] for c in calls)  # sent as a job of its own
    with pytest.raises(ValueError, match="job name"):
        JobStore(open_run_fs(str(run))).write(a_job(calls, name=name))


class VanishedRoute(StubRoute):
    """A provider that forgot a job (deleted, or past its retention): HTTP 404 for its id."""

    async def poll(self, job_id):
        if job_id not in self.jobs:
            raise NotFound(f"stub: HTTP 404: no batch found with id {job_id!r}")
        return await super().poll(job_id)

    async def results(self, job_id, requests):
        if job_id not in self.jobs:
            raise NotFound(f"stub: HTTP 404: no batch found with id {job_id!r}")
        return await super().results(job_id, requests)


def test_a_job_the_provider_no_longer_knows_is_expired_and_its_requests_go_out_again_once(tmp_path):
    state = BatchState()
    route = VanishedRoute()
    caller = StubCaller(route, BatchSpec(poll_s=0.01), state)
    calls = calls_for(caller, 3)
    JobStore(open_run_fs(str(tmp_path))).write(a_job(calls, job_id="batch_gone"))
    r = runner(tmp_path, state)
    first = asyncio.run(r.run_wave(0, calls))
    assert first["retried"] == 3 and route.jobs == {}
    old = json.loads((tmp_path / "batches" / "classify-00000-abcdef0123.json").read_text())
    assert old["status"] == "ingested" and old["provider_status"] == "expired" and "404" in old["detail"]
    asyncio.run(r.run_wave(0, calls))  # the next wave: one new job for them
    assert len(route.jobs) == 1 and len(route.jobs["job-0"]["items"]) == 3
    assert all(r.cache.peek(c.key)[1] for c in calls)
    again = asyncio.run(runner(tmp_path, BatchState()).run_wave(0, calls))  # a rerun: nothing goes out again
    assert len(route.jobs) == 1 and again["jobs"] == 0


@pytest.mark.parametrize("damage", ["truncated", "deleted", "wrong types"])
def test_a_damaged_job_file_of_a_job_in_flight_does_not_make_a_second_job(tmp_path, damage):
    state = BatchState()
    route = StubRoute(polls=10_000)
    caller = StubCaller(route, BatchSpec(poll_s=0.01), state)
    first = runner(tmp_path, state)

    async def killed_while_polling():
        task = asyncio.ensure_future(first.run_wave(0, calls_for(caller, 3)))
        while not route.jobs or route.jobs["job-0"]["polls"] < 2:
            await asyncio.sleep(0)
        task.cancel()

    asyncio.run(killed_while_polling())
    (path,) = (tmp_path / "batches").glob("*.json")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:25])
    elif damage == "deleted":
        path.unlink()
    else:
        path.write_text(json.dumps({**json.loads(path.read_text()), "owners": "all of them"}))
    route.polls = 0
    state2 = BatchState()
    caller2 = StubCaller(route, BatchSpec(poll_s=0.01), state2)
    counts = asyncio.run(runner(tmp_path, state2).run_wave(0, calls_for(caller2, 3)))
    assert len(route.jobs) == 1 and counts["jobs_attached"] == 1
    assert all(ResponseCache(tmp_path / "cache").peek(c.key)[1] for c in calls_for(caller2, 3))
    assert json.loads(path.read_text())["status"] == "ingested"  # the job file is whole again


def test_an_online_stage_waits_for_its_requests_in_a_job_in_flight_and_sends_the_rest_online(tmp_path):
    route = StubRoute(polls=1)
    calls = calls_for(StubCaller(route, BatchSpec(poll_s=0.01), BatchState()), 4)
    asyncio.run(route.submit([(c.key, c.kind, c.request) for c in calls[:2]], "classify-00000-abcdef0123",
                             BatchSpec()))
    JobStore(open_run_fs(str(tmp_path))).write(a_job(calls[:2]))  # two requests in a job in flight
    state = BatchState()
    stage = StageBatch("classify", route, BatchSpec(poll_s=0.01), state,
                       attach={c.key for c in calls[:2]})
    caller = StubCaller(route, BatchSpec(poll_s=0.01), state)
    caller.batch = stage
    from uniedit_synth.engine.calls import Ledger

    ledger = Ledger(owner="r")
    with pytest.raises(BatchPending):
        stage.defer(caller, "text", calls[0].key, calls[0].request, ledger)
    stage.defer(caller, "text", calls[2].key, calls[2].request, ledger)  # not in a job: no raise, online
    deferred = [c.__class__(caller, c.kind, c.key, c.request, c.owner) for c in calls[:2]]
    counts = asyncio.run(runner(tmp_path, state).run_wave(0, deferred))
    assert counts["jobs_attached"] == 1 and len(route.jobs) == 1
    assert all(ResponseCache(tmp_path / "cache").peek(c.key)[1] for c in calls[:2])


def test_an_online_stage_never_submits_a_job_for_a_request_whose_job_is_gone(tmp_path):
    route = VanishedRoute()
    state = BatchState()
    calls = calls_for(StubCaller(route, BatchSpec(poll_s=0.01), state), 2)
    JobStore(open_run_fs(str(tmp_path))).write(a_job(calls, job_id="batch_gone"))
    caller = StubCaller(route, BatchSpec(poll_s=0.01), state)
    caller.batch = StageBatch("classify", route, BatchSpec(poll_s=0.01), state, attach={c.key for c in calls})
    deferred = [c.__class__(caller, c.kind, c.key, c.request, c.owner) for c in calls]
    r = runner(tmp_path, state)
    asyncio.run(r.run_wave(0, deferred))
    asyncio.run(r.run_wave(0, deferred))
    assert route.jobs == {} and state.online == {c.key for c in calls}  # they go online, in the online mode
