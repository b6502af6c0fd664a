"""Batch mode: a batch-mode stage's cache misses go out as provider batch jobs whose results fill the response cache.

A shard with a batch-mode stage runs in waves (worker.py). In a wave every record goes as far as it can; a call
that misses the cache in a batch-mode stage is not sent: it is noted in the record's ledger and the record stops
(`BatchPending`). When every record of the wave has finished or stopped, `BatchRunner.run_wave` puts the noted
calls (one per request key) in the worker's group for that stage, which collects the waves of all the shards the
worker holds for `batch.group_s` and goes out as provider batch jobs. Each job file in `<out>/batches/` is written
(atomically) before the submit, under the name the provider lists the job by, and again with the job's id before
the first poll; the job is polled, and every result is put into the response cache under its request key, priced
at the batch price. The next wave replays the waiting records from the cache and they run on to their next stage,
so the rows, the call index, `inspect` and resume work as for online calls.

Resume: a rerun replays the shard; a noted call whose key belongs to a job in `<out>/batches/` that was not
ingested yet re-attaches to that job (polls it, never resubmits it). A job that ends expired, cancelled or failed
keeps the results it has and the rest of its requests come back in the next wave as a new job; a request that
got no result from `max_job_attempts` jobs goes online (`on_failure: online`) or stops the run (`stop`). A job
the provider answers 404 for (deleted, or past its retention) ends as expired: its requests go out again, once.
A rerun without `--batch` never sends a request that sits in a job still in flight: that stage's caller gets an
attach-only `StageBatch`, so the request waits for its job (which the provider bills anyway) and the rest go
online. The job files are validated input (run/batch_jobs.py), each kept twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import (
    AuthError,
    BadRequest,
    EditReply,
    EditRequest,
    MalformedReply,
    NotFound,
    RetryableError,
    SafetyBlocked,
    TextRequest,
)
from ..backends.batch_routes import ItemResult, JobStatus
from ..core.config import Price
from ..core.errors import AuthenticationFailed, ProviderUnreachable, UniEditError
from ..core.specs import BatchSpec
from ..run.batch_jobs import DONE, JobStore, summarise_jobs
from ..run.cache import ResponseCache
from ..run.fs import RunFS
from .calls import BudgetExhausted, estimate_tokens, price

log = logging.getLogger(__name__)

__all__ = ["BatchJobFailed", "BatchPending", "BatchRunner", "BatchState", "DeferredCall", "ItemResult", "JobStatus",
           "JobStore", "StageBatch", "attach_keys", "request_info", "summarise_jobs"]

TERMINAL = ("completed", "expired", "cancelled", "failed")
#: what a job the provider answers 404 for is taken to have ended as (its requests go out again)
VANISHED = "the provider no longer knows this job (HTTP 404); its requests go out again"
_FINAL = {SafetyBlocked: "safety_blocked", BadRequest: "bad_request", MalformedReply: "malformed"}
#: output tokens assumed per text call when reserving a job's budget (no max_tokens in the params)
EST_OUTPUT_TOKENS = 600


class BatchPending(Exception):
    """A record waits for a batch job: the call is in its ledger's `deferred` list."""


class BatchJobFailed(UniEditError):
    """Requests got no result from `max_job_attempts` batch jobs and `on_failure` is `stop`."""


@dataclass
class DeferredCall:
    caller: Any  # the stage's ModelCaller
    kind: str
    key: str
    request: TextRequest | EditRequest
    owner: str


@dataclass
class _Group:
    """New requests of one stage from the waves of several shards, going out together."""

    caller: Any
    ready: asyncio.Future
    calls: dict[str, DeferredCall] = field(default_factory=dict)
    shards: list[int] = field(default_factory=list)
    timer: asyncio.Task | None = None


class BatchState:
    """What the batch-mode callers of one worker share: requests sent online after failed jobs, requests the
    budget had no room for, and how many jobs each request went through without a result."""

    def __init__(self) -> None:
        self.online: set[str] = set()
        self.exhausted: set[str] = set()
        self.failures: Counter[str] = Counter()


class StageBatch:
    """Batch mode of one stage's ModelCaller (set as `caller.batch`).

    `attach` (a set of request keys) makes it the attach-only mode of a stage that runs online: a request in a
    job that is still in flight (a batch run killed, rerun without `--batch`) waits for that job, which the
    provider will finish and bill anyway, instead of being sent online and paid twice; every other request,
    and one whose job ends without its result, goes online. No new job is ever submitted in this mode."""

    def __init__(self, stage: str, route: Any, spec: BatchSpec, state: BatchState,
                 attach: Iterable[str] | None = None):
        self.stage = stage
        self.route = route
        self.spec = spec
        self.state = state
        self.attach = set(attach) if attach is not None else None

    def defer(self, caller: Any, kind: str, key: str, request: TextRequest | EditRequest, ledger: Any) -> None:
        if key in self.state.exhausted:
            raise BudgetExhausted()
        if key in self.state.online:
            return  # its jobs failed: the caller sends it online
        if self.attach is not None and key not in self.attach:
            return  # an online stage: only requests already in a job wait for it
        ledger.deferred.append(DeferredCall(caller, kind, key, request, ledger.owner))
        raise BatchPending(self.stage)


def attach_keys(jobs: list[dict[str, Any]], stage: str) -> set[str]:
    """The request keys of `stage` that sit in jobs not yet ingested (the jobs as `JobStore.scan` gives them)."""
    return {key for job in jobs if job.get("stage") == stage and job.get("status") not in DONE
            for key in job.get("owners", {})}


def request_info(calls: list[DeferredCall]) -> dict[str, Any]:
    """What reading a job's results needs to know of each request (kind, model, input images, reply schema),
    kept in the job file so that a rerun can ingest a job whose requests it never built."""
    info: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for call in calls:
        request = call.request
        entry: dict[str, Any] = {"kind": call.kind, "model": request.model}
        if isinstance(request, TextRequest):
            entry["images"] = len(request.images)
            if request.response_schema is not None:
                blob = json.dumps(request.response_schema, sort_keys=True).encode()
                sid = hashlib.sha256(blob).hexdigest()[:16]
                schemas[sid] = request.response_schema
                entry["schema"] = sid
        info[call.key] = entry
    return {"info": info, "schemas": schemas}


# -- running a wave's jobs -------------------------------------------------------------------------------------
class BatchRunner:
    """Sends a wave's deferred calls as batch jobs (or re-attaches to the jobs that hold them), polls, ingests."""

    def __init__(self, out: RunFS, cache: ResponseCache, coordinator: Any, prices: dict[str, Price],
                 state: BatchState, sleep=asyncio.sleep):
        self.store = JobStore(out)
        self.cache = cache
        self.coordinator = coordinator
        self.prices = prices
        self.state = state
        self._sleep = sleep
        self._tasks: dict[str, asyncio.Task] = {}  # job name -> its poll+ingest task (shared by shards)
        self._known: dict[str, dict[str, Any]] | None = None  # job name -> job file (this worker's view)
        self._pools: dict[int, _Group] = {}  # stage caller -> the group of new requests waiting to go out
        self._ingested: dict[str, float] = {}  # request key -> what its reply cost, until a shard claims it
        self._sending: dict[str, _Group] = {}  # request key -> the group it goes out with, until its jobs exist
        self.progress: Counter[str] = Counter()

    def _jobs(self) -> dict[str, dict[str, Any]]:
        if self._known is None:
            self._known = {job["name"]: job for job in self.store.all()}
        return self._known

    def _live_job_of(self, key: str) -> dict[str, Any] | None:
        for job in self._jobs().values():
            if job.get("status") not in DONE and key in job.get("owners", {}):
                return job
        return None

    async def _recover(self, job: dict[str, Any], route: Any) -> bool:
        """A job file written just before `submit` whose id never came back (the driver died in between):
        find the job at the provider by its name; if it was never created, the file is abandoned."""
        job_id = await route.find(job["name"])
        if job_id is None:
            job["status"] = "abandoned"
            self.store.write(job)
            return False
        job.update(job_id=job_id, status="submitted")
        self.store.write(job)
        log.info("batch job %s (%s) found at the provider after an interrupted submit", job_id, job["name"])
        return True

    async def run_wave(self, shard: int, deferred: list[DeferredCall]) -> dict[str, int]:
        """Send, attach to and wait for the jobs that answer `deferred`; returns counts for the manifest."""
        first: dict[str, DeferredCall] = {}
        for call in deferred:  # one request per key: identical calls of several records are paid once
            first.setdefault(call.key, call)
        waiting: list[asyncio.Task] = []
        fresh: dict[int, list[DeferredCall]] = {}
        callers: dict[int, Any] = {}
        attached = 0
        groups: list[_Group] = []
        for key, call in first.items():
            if self.cache.peek(key)[1]:
                continue  # answered meanwhile (another shard's job)
            group = self._sending.get(key)
            if group is not None and self._pools.get(id(group.caller)) is not group:
                groups.append(group)  # going out in a group of another shard's wave right now: wait for it
                continue
            job = self._live_job_of(key)
            if job is not None and not job.get("job_id") and not await self._recover(job, call.caller.batch.route):
                job = None
            if job is not None:
                if job["name"] not in self._tasks:
                    attached += 1
                    self.progress["jobs_submitted"] += 1
                    self.progress["requests_submitted"] += int(job.get("requests", 0))
                    self._tasks[job["name"]] = asyncio.ensure_future(self._follow(job, call.caller))
                waiting.append(self._tasks[job["name"]])
                continue
            if call.caller.batch.attach is not None:
                continue  # an online stage never submits a job: counted missing below, it goes online
            fresh.setdefault(id(call.caller), []).append(call)
            callers[id(call.caller)] = call.caller
        for caller_id, calls in fresh.items():
            waiting += await self._grouped(shard, callers[caller_id], calls)
        for group in {id(g): g for g in groups}.values():
            waiting += await asyncio.shield(group.ready)
        if waiting:
            await asyncio.gather(*set(waiting))
        # the money of the requests this shard asked for, each claimed once (by the first shard to ask)
        spent = sum(self._ingested.pop(key, 0.0) for key in first)
        missing = [call for key, call in first.items() if not self.cache.peek(key)[1]
                   and key not in self.state.exhausted]
        for call in missing:
            self.state.failures[call.key] += 1
            spec = call.caller.batch.spec
            if call.caller.batch.attach is not None:
                self.state.online.add(call.key)  # its job ended without it: online, as the stage runs now
            elif self.state.failures[call.key] >= spec.max_job_attempts:
                if spec.on_failure == "stop":
                    raise BatchJobFailed(
                        f"stage {call.caller.stage}: a request got no result from {spec.max_job_attempts} batch "
                        "jobs; see <out>/batches/ (set batch.on_failure: online to send such requests online)"
                    )
                self.state.online.add(call.key)
        return {"jobs": len(set(waiting)), "jobs_attached": attached, "requests": len(first),
                "retried": len(missing), "spent_usd": spent}

    # -- grouping the waves of the shards this worker holds ------------------------------------------------
    async def _grouped(self, shard: int, caller: Any, calls: list[DeferredCall]) -> list[asyncio.Task]:
        """Put a wave's new requests in this worker's group for the stage; the group goes out `batch.group_s`
        after its first wave joined (or at once when it holds `max_requests`), so the waves of all the
        shards this worker holds that end within that time share jobs. Returns the group's job tasks."""
        spec: BatchSpec = caller.batch.spec
        pool = self._pools.get(id(caller))
        if pool is None:
            pool = _Group(caller=caller, ready=asyncio.get_running_loop().create_future())
            self._pools[id(caller)] = pool
            pool.timer = asyncio.ensure_future(self._flush_later(pool, spec.group_s))
        for call in calls:
            pool.calls.setdefault(call.key, call)
            self._sending[call.key] = pool
        pool.shards.append(shard)
        if len(pool.calls) >= spec.max_requests and pool.timer is not None:
            pool.timer.cancel()
            pool.timer = asyncio.ensure_future(self._flush_later(pool, 0.0))
        return await asyncio.shield(pool.ready)

    async def _flush_later(self, pool: _Group, delay: float) -> None:
        if delay > 0:
            await self._sleep(delay)
        if self._pools.get(id(pool.caller)) is pool:
            del self._pools[id(pool.caller)]
        try:
            tasks = []
            for chunk in await self._fit_budget(self._chunks(pool.caller, list(pool.calls.values()))):
                job = await self._submit(min(pool.shards), pool.caller, chunk)
                self._tasks[job["name"]] = asyncio.ensure_future(self._follow(job, pool.caller))
                tasks.append(self._tasks[job["name"]])
        except BaseException as exc:  # every waiting wave gets the error (a rejected key, an outage)
            if not pool.ready.done():
                pool.ready.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        finally:
            for key in pool.calls:  # from here on its jobs are found by their files (_live_job_of)
                if self._sending.get(key) is pool:
                    del self._sending[key]
        if not pool.ready.done():
            pool.ready.set_result(tasks)

    # -- splitting and budget ----------------------------------------------------------------------------
    def _chunks(self, caller: Any, calls: list[DeferredCall]) -> list[list[tuple[DeferredCall, int]]]:
        spec: BatchSpec = caller.batch.spec
        route = caller.batch.route
        chunks: list[list[tuple[DeferredCall, int]]] = [[]]
        size = 0
        for call in calls:
            n = route.request_bytes(call.kind, call.request)
            if chunks[-1] and (len(chunks[-1]) >= spec.max_requests or size + n > spec.max_bytes):
                chunks.append([])
                size = 0
            chunks[-1].append((call, n))
            size += n
        return [c for c in chunks if c]

    def estimate(self, call: DeferredCall) -> float:
        request = call.request
        if isinstance(request, EditRequest):
            usage = {"input_tokens": estimate_tokens(request), "output_tokens": 0, "images_in": 1, "images_out": 1}
        else:
            out = request.params.get("max_tokens") or request.params.get("max_output_tokens") or EST_OUTPUT_TOKENS
            usage = {"input_tokens": estimate_tokens(request), "output_tokens": int(out),
                     "images_in": len(request.images), "images_out": 0}
        from ..backends.base import Usage

        return price(self.prices, request.model, Usage(**usage), batch=True)

    async def _fit_budget(self, chunks: list[list[tuple[DeferredCall, int]]]) -> list[list[DeferredCall]]:
        """Reserve each chunk's estimated cost before it is submitted; what does not fit is budget_exhausted."""
        out: list[list[DeferredCall]] = []
        for chunk in chunks:
            kept: list[DeferredCall] = []
            for call, _ in chunk:
                usd = self.estimate(call)
                if await self.coordinator.reserve(usd):
                    kept.append(call)
                else:
                    self.state.exhausted.add(call.key)
            if kept:
                out.append(kept)
        return out

    # -- one job -----------------------------------------------------------------------------------------
    async def _submit(self, shard: int, caller: Any, calls: list[DeferredCall]) -> dict[str, Any]:
        batch: StageBatch = caller.batch
        name = f"{batch.stage}-{shard:05d}-{uuid.uuid4().hex[:10]}"
        items = [(call.key, call.kind, call.request) for call in calls]
        estimate = sum(self.estimate(call) for call in calls)
        job = {
            "name": name, "job_id": None, "provider": batch.route.provider, "stage": batch.stage,
            "model": calls[0].request.model, "shard": shard, "status": "submitting",
            "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "submitted_unix": time.time(),
            "requests": len(calls), "owners": {c.key: c.owner for c in calls},
            "estimated_usd": round(estimate, 8), **request_info(calls),
        }
        # written before the job exists, under the name the provider will know it by: a driver killed while
        # submitting finds the job by that name on the rerun (_recover) instead of paying for it twice
        self.store.write(job)
        self._jobs()[name] = job
        job["job_id"] = await self._submit_with_retries(caller, items, name)
        job["status"] = "submitted"
        # persisted before the first poll: a driver killed from here on re-attaches instead of resubmitting
        self.store.write(job)
        self._jobs()[name] = job
        self.progress["jobs_submitted"] += 1
        self.progress["requests_submitted"] += len(calls)
        log.info("batch job %s (%s, %d requests) submitted for stage %s", job["job_id"], name, len(calls), batch.stage)
        return job

    async def _submit_with_retries(self, caller: Any, items: list, name: str) -> str:
        """Submit a job; a 5xx / timeout / 429 is retried with back-off, after asking the provider whether the
        failed attempt created the job after all (so a lost reply does not create a second, paid job)."""
        batch: StageBatch = caller.batch
        retry = getattr(caller, "retry", None)
        attempts = retry.max_attempts if retry is not None else 6
        for attempt in range(1, attempts + 1):
            try:
                return await batch.route.submit(items, name, batch.spec)
            except AuthError as exc:
                raise AuthenticationFailed(f"{caller.bucket}: the provider rejected the API key ({exc})") from None
            except BadRequest as exc:
                raise BatchJobFailed(f"stage {batch.stage}: the provider refused the batch job ({exc})") from None
            except RetryableError as exc:
                if attempt == attempts:
                    raise ProviderUnreachable(
                        f"{caller.bucket}: could not submit a batch job after {attempts} attempts ({exc}); "
                        "run the same command again to resume"
                    ) from None
                initial = retry.initial_s if retry is not None else 1.0
                ceiling = retry.max_s if retry is not None else 60.0
                await self._sleep(max(float(exc.retry_after or 0.0), min(ceiling, initial * 2 ** (attempt - 1))))
                try:
                    found = await batch.route.find(name)
                except RetryableError:
                    found = None
                if found is not None:
                    return found
        raise AssertionError("unreachable")  # pragma: no cover

    async def _follow(self, job: dict[str, Any], caller: Any) -> float:
        """Poll a job to its end and ingest its results; returns the money it cost."""
        batch: StageBatch = caller.batch
        status = await self._poll_until_done(job, batch)
        results = await self._results(job, batch, status)
        spent = 0.0
        done = 0
        latency = max(0.0, time.time() - float(job.get("submitted_unix", time.time())))
        for key, item in results.items():
            owner = job["owners"].get(key)
            if owner is None or self.cache.peek(key)[1]:
                continue  # not ours, or already stored (a re-attached job another worker ingested)
            if item.error is not None:
                code = next((c for cls, c in _FINAL.items() if isinstance(item.error, cls)), None)
                if code is None:  # retryable: back to the pool, next wave (a reply without an image is billed)
                    usage = getattr(item.error, "usage", None)
                    if usage is not None:
                        cost = price(self.prices, job["model"], usage, batch=True)
                        spent += cost
                        self._ingested[key] = self._ingested.get(key, 0.0) + cost
                    continue
                self.cache.put(key, {"_call": {"cost_usd": 0.0, "latency_s": latency, "error": code,
                                               "detail": str(item.error)[:500], "paid_by": owner,
                                               "batch": True, "job": job["name"]}})
                done += 1
                continue
            reply = item.reply
            model = reply.model or job["model"]
            cost = price(self.prices, model, reply.usage, batch=True)
            meta = reply.model_dump(exclude={"image"})
            payload = reply.image if isinstance(reply, EditReply) else b""
            self.cache.put(key, {**meta, "_call": {"cost_usd": cost, "latency_s": latency, "paid_by": owner,
                                                   "batch": True, "job": job["name"]}}, payload)
            spent += cost
            self._ingested[key] = self._ingested.get(key, 0.0) + cost
            done += 1
        await self.coordinator.release(float(job.get("estimated_usd", 0.0)))
        if spent:
            await self.coordinator.spend(spent)
        job.update(status="ingested", provider_status=status.state, results=done,
                   spent_usd=round(spent, 8), ingested_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        if status.detail:
            job["detail"] = status.detail[:500]
        self.store.write(job)
        self.progress["jobs_done"] += 1
        self.progress["requests_done"] += done
        if status.state != "completed":
            log.warning("batch job %s ended %s%s: %d of %d requests answered; the rest go out again",
                        job["job_id"], status.state, f" ({status.detail})" if status.detail else "", done,
                        job["requests"])
        return spent

    async def _poll_until_done(self, job: dict[str, Any], batch: StageBatch) -> JobStatus:
        failures = 0
        while True:
            try:
                status = await batch.route.poll(job["job_id"])
                failures = 0
            except RetryableError as exc:  # a poll that failed (5xx, timeout) says nothing about the job
                failures += 1
                log.info("polling batch job %s failed (%s); polling again", job["job_id"], exc)
                await self._sleep(min(batch.spec.poll_s * (2 ** min(failures, 6)), 600.0))
                continue
            except AuthError as exc:
                raise AuthenticationFailed(f"batch job {job['job_id']}: the provider rejected the API key "
                                           f"({exc})") from None
            except NotFound:  # deleted at the provider, or past its retention: as good as expired
                log.warning("batch job %s (%s): %s", job["job_id"], job["name"], VANISHED)
                return JobStatus("expired", detail=VANISHED)
            if status.state in TERMINAL:
                return status
            await self._sleep(batch.spec.poll_s)

    async def _results(self, job: dict[str, Any], batch: StageBatch, status: JobStatus) -> dict[str, ItemResult]:
        schemas = job.get("schemas", {})
        requests = {key: {**info, "schema": schemas.get(info.get("schema"))}
                    for key, info in job.get("info", {}).items()}
        if status.detail == VANISHED:
            return {}
        attempt = 0
        while True:
            try:
                return await batch.route.results(job["job_id"], requests)
            except NotFound:
                log.warning("batch job %s (%s): %s", job["job_id"], job["name"], VANISHED)
                return {}
            except RetryableError as exc:
                attempt += 1
                if attempt > 8:
                    raise UniEditError(f"cannot download the results of batch job {job['job_id']}: {exc}") from None
                await self._sleep(min(batch.spec.poll_s * attempt, 300.0))
