"""The run driver: reads the source into shards, skips finished ones, dispatches the rest, records the results.

Resume rests on three facts: the source order is deterministic, so shard k always holds the same records
(checked by a digest of its ids); a shard is finished only once its files are renamed into place and its
manifest line is written; and every backend reply is cached, so a shard redone after a crash replays its
calls from the cache instead of paying for them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TextIO

from ..backends.registry import create_backend
from ..core.config import PipelineConfig, pipeline_hash
from ..core.errors import RuntimeBusy, UniEditError
from ..core.prompts import prompt_hashes
from ..core.records import VQARecord
from ..core.redact import redact_url
from ..run.cache import ResponseCache
from ..run.resume import (
    SourcePlan,
    all_finished,
    ids_digest,
    positions_runs,
    read_plan,
    withdrawn_entry,
    write_plan,
)
from ..run.store import RunDir, locked
from ..sources import open_source
from ..sources.identity import source_identity
from ..stages.totals import run_totals
from .batch import JobStore, attach_keys, summarise_jobs
from .out_guard import check_out
from .progress import open_progress
from .run_info import pin_scene_png, prompt_files, scene_png, versions
from .runtime import RAY_BUSY, InlineRuntime, RayRuntime, WorkerLost, ray_run_in_progress
from .worker import CAPABILITY, STAGES

log = logging.getLogger(__name__)

MAX_SHARD_RETRIES = 3


@dataclass
class RunSummary:
    """What `synth` returns: counts over the whole run, this invocation's shards and calls, and where it is."""

    out_dir: str  # where the run is, safe to print (a URI without keys or query)
    read: int = 0
    accepted: int = 0
    rejected: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    shards_done: int = 0
    shards_skipped: int = 0
    shards_retried: int = 0
    cost_usd: float = 0.0
    spent_now_usd: float = 0.0
    budget_exhausted: int = 0
    elapsed_s: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)
    cache_hits: dict[str, int] = field(default_factory=dict)
    #: batch mode: requests this invocation's shards sent as batch jobs, and the jobs they waited on
    batch_requests: int = 0
    batch_jobs: int = 0

    def take(self, totals: dict[str, Any]) -> None:
        """The counts and cost of the run's totals (stages/totals.py run_totals)."""
        self.read = totals["read"]
        self.accepted = totals["accepted"]
        self.rejected = totals["rejected"]
        self.reject_reasons = totals["reject_reasons"]
        self.cost_usd = totals["cost_usd"]
        self.budget_exhausted = totals["reject_reasons"].get("budget_exhausted", 0)

    @property
    def stopped_by_budget(self) -> bool:
        return self.budget_exhausted > 0

    @property
    def paths(self) -> dict[str, str]:
        """The run's outputs: data/ (accepted), rejects/, attempts/, stats.json, run.json, cache/."""
        base = self.out_dir.rstrip("/")
        names = {"data": "data", "rejects": "rejects", "attempts": "attempts", "stats": "stats.json",
                 "run_json": "run.json", "cache": "cache"}
        return {key: f"{base}/{rel}" for key, rel in names.items()}


class Driver:
    def __init__(
        self,
        config: PipelineConfig,
        out_dir: str,
        *,
        force_new_config: bool = False,
        force: bool = False,
        log_format: str = "text",
        progress: bool = True,
        stream: TextIO | None = None,
        verify_source: bool = False,
    ):
        self.config = config
        self.run_dir = RunDir(out_dir)
        self.force_new_config = force_new_config
        self.force = force  # --force: a non-empty folder that is not a run may hold the run (engine/out_guard.py)
        #: --verify-source: re-read every finished shard's rows (in the workers) and redo those that changed
        self.verify_source = verify_source
        self.identity: str | None = None
        #: how the source's rows travel (stats.json `data_path`, shown by `uniedit stats`)
        self.data_path: dict[str, Any] = {}
        self.log_format = log_format
        self.show_progress = progress and log_format == "text"
        self.stream = stream or sys.stdout
        self.prompt_hashes = prompt_hashes(config.prompts_path(), prompt_files(config))
        self.pipeline_hash = pipeline_hash(config, self.prompt_hashes)

    # -- entry point -------------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        if self.config.engine.kind == "ray" and ray_run_in_progress():
            raise RuntimeBusy(RAY_BUSY)  # before the output dir is touched (RayRuntime holds the slot itself)
        check_out(self.run_dir, self.config.source, self.force)  # before anything is created there
        self.run_dir.create_dirs()
        with locked(self.run_dir):
            self.run_dir.check_config(
                self.config.hashed_view(), self.prompt_hashes, self.pipeline_hash, self.force_new_config
            )
            self.run_dir.clean_temp_files()
            return asyncio.run(self._run())

    def _run_json(self, started: str, status: str, previous: dict[str, Any] | None) -> dict[str, Any]:
        config = self.config.model_dump(mode="json")
        for backend in config["backends"].values():
            backend["base_url"] = redact_url(backend.get("base_url"))
        return {
            "pipeline_hash": self.pipeline_hash,
            "prompt_hashes": self.prompt_hashes,
            "config_view": self.config.hashed_view(),
            "config": config,
            "versions": versions(), "scene_png": scene_png(self.run_dir, previous, self.config),
            "created_at": (previous or {}).get("created_at", started),
            "started_at": started,
            "finished_at": None if status == "running" else time.strftime("%Y-%m-%dT%H:%M:%S"),
            "status": status,
            "invocations": (previous or {}).get("invocations", 0) + (1 if status == "running" else 0),
        }

    def _announce_endpoint_changes(self, previous: dict[str, Any] | None, current: dict[str, Any]) -> None:
        """A backend's endpoint is not part of the pipeline hash (a test server, a proxy or a new port serve the
        same model), so finished shards stay done when it changes; say so, naming the change, so that replies
        from another provider are never mixed in silently."""
        before = ((previous or {}).get("config") or {}).get("backends") or {}
        if not isinstance(before, dict):
            return
        for name, spec in current["config"]["backends"].items():
            old = before.get(name)
            if isinstance(old, dict) and old.get("base_url") != spec.get("base_url"):
                log.warning(
                    "backend %r: base_url changed from %s to %s since the last run on this output; finished "
                    "shards made through the old endpoint are kept as they are (to redo them, use another "
                    "--out)", name, old.get("base_url") or "(default)", spec.get("base_url") or "(default)",
                )

    async def _preflight(self) -> None:
        """Build every stage's backend once here, so an unknown type or a missing API key is a clear error
        before any worker starts (and before anything is paid for)."""
        batched: list[str] = []
        online: list[str] = []
        for stage_name, capability in CAPABILITY.items():
            stage = getattr(self.config.stages, stage_name)
            backend = create_backend(stage.backend, self.config.backends[stage.backend], capability,
                                     seed=self.config.seed)
            if stage.mode == "batch":
                route = backend.batch_route(capability)
                (batched if route is not None else online).append(
                    stage_name if route is not None else f"{stage_name} ({self.config.backends[stage.backend].type})"
                )
            # a local model: its files and class, checked without loading weights (a no-op for the others)
            await asyncio.to_thread(backend.preflight, self.config.engine.kind)
            await backend.aclose()
        self._announce_jobs_in_flight(batched)
        if online:  # said once per run: these stages asked for batch mode and cannot have it
            message = (f"batch mode: no batch route for {', '.join(online)}; "
                       f"{'that stage runs' if len(online) == 1 else 'those stages run'} online")
            log.warning(message)
            if self.log_format == "json":
                self._emit({"event": "batch_unsupported", "stages": online})
        self.batch_stages = batched

    def _add_batch_jobs(self, extra: dict[str, Any]) -> None:
        """stats.json's `batch_jobs`: the run's jobs, and the job files that could not be read."""
        jobs, unreadable = JobStore(self.run_dir.fs).scan()
        if jobs or unreadable:
            extra["batch_jobs"] = summarise_jobs(jobs, unreadable)

    def _announce_jobs_in_flight(self, batched: list[str]) -> None:
        """Stages that run online now but have requests in jobs of an earlier --batch run still in flight: the
        provider finishes (and bills) those jobs anyway, so their requests wait for them (engine/batch.py
        attach mode) instead of being sent again; said once, with the counts."""
        jobs = JobStore(self.run_dir.fs).all()
        for stage_name in CAPABILITY:
            if stage_name in batched:
                continue
            keys = attach_keys(jobs, stage_name)
            if keys:
                log.warning("stage %s runs online, but %d of its requests are in batch jobs still in flight (see "
                            "%s): they wait for those jobs instead of being sent (and paid) again", stage_name,
                            len(keys), self.run_dir.fs.display_path("batches"))

    def _screen_spec(self) -> dict[str, Any] | None:
        """source.dedup / source.decontaminate for the coordinator: benchmark fingerprints are loaded here, once
        (cached under <out>/audit/ by the benchmark's content), so a bad spec fails before anything runs."""
        source = self.config.source
        if not (source.dedup or source.decontaminate):
            return None
        from ..sources.benchmarks import load_benchmark

        root = self.run_dir.fs.local_root if not self.run_dir.fs.remote else None
        cache = root / "audit" if root is not None else None
        max_distance = source.dedup.max_distance if source.dedup else 4
        benchmarks = [load_benchmark(spec, cache, self.config.input.max_pixels) for spec in source.decontaminate]
        for bench in benchmarks:
            if bench.skipped_images:
                log.warning("benchmark %s: %d unreadable image(s) skipped", bench.name, bench.skipped_images)
        return {"by": source.dedup.by if source.dedup else None, "max_distance": max_distance,
                "benchmarks": benchmarks}

    def _screened(self, shard: int) -> list[dict[str, Any]]:
        """The screen entries that passed in a finished shard (written by the worker next to its files)."""
        return self.run_dir.read_screen(shard) or []

    async def _run(self) -> RunSummary:
        started_wall = time.strftime("%Y-%m-%dT%H:%M:%S")
        t0 = time.monotonic()
        await self._preflight()
        screen = self._screen_spec()  # a bad benchmark spec is a clear error before run.json says "running"
        previous, _ = self.run_dir.load_run_json()  # a malformed one was refused or forced over already
        run_json = self._run_json(started_wall, "running", previous)
        self.run_dir.write_run_json(run_json)

        finished = self.run_dir.latest_by_shard()
        if finished:
            self._announce_endpoint_changes(previous, run_json)
        # each manifest line holds only what its invocation paid: a shard redone after a budget stop has
        # several, and the budget counts them all (its latest line alone would forget the earlier money)
        spent_before = sum(e.get("spent_usd", 0.0) for e in self.run_dir.manifest_entries())
        coordinator_args = {
            "rate_limits": {k: v.model_dump() for k, v in self.config.limits.rate_limits.items()},
            "max_cost_usd": self.config.limits.max_cost_usd,
            "spent_before_usd": spent_before,
            "category_caps": self.config.stages.classify.category_caps,
            "screen": screen,
        }
        source = pin_scene_png(open_source(self.config.source, seed=self.config.seed, limit=self.config.limit),
                               run_json["scene_png"])
        self.identity = await asyncio.to_thread(source_identity, source)
        if self._nothing_to_do(finished):
            return self._finished_already(finished, run_json, t0)
        engine = self.config.engine
        if engine.kind == "inline":
            runtime: Any = InlineRuntime(self.config, self.run_dir.location, self.pipeline_hash, coordinator_args)
        else:
            runtime = RayRuntime(
                self.config, self.run_dir.location, self.pipeline_hash, coordinator_args, engine.ray_address
            )
        summary = RunSummary(out_dir=self.run_dir.display)
        status = "failed"
        limiter: dict[str, Any] = {}
        rpcs: dict[str, int] = {}
        replicas: dict[str, Any] = {}
        try:
            await self._dispatch(runtime, source, finished, summary)
            totals = run_totals(list(self.run_dir.latest_by_shard().values()))
            status = "budget_exhausted" if totals["reject_reasons"].get("budget_exhausted") else "finished"
        except (KeyboardInterrupt, asyncio.CancelledError):
            status = "interrupted"
            raise
        finally:
            with contextlib.suppress(Exception):
                limiter = await runtime.coordinator.limiter_stats()
                rpcs = await runtime.coordinator.rpc_counts()
            with contextlib.suppress(Exception):
                replicas = await runtime.replica_stats()
            swept = status in ("finished", "budget_exhausted") and await runtime.sweep_cache()  # nothing in flight
            await runtime.close()
            if not swept:
                with contextlib.suppress(Exception):  # no worker reads the cache now
                    await asyncio.to_thread(ResponseCache(self.run_dir.cache_fs()).sweep)
            summary.elapsed_s = round(time.monotonic() - t0, 3)
            run_json["status"] = status
            run_json["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            # best effort on the way out of a failure (a full disk must not hide the real error)
            failed = status not in ("finished", "budget_exhausted")
            with contextlib.suppress(Exception) if failed else contextlib.nullcontext():
                extra = {"status": status, "pipeline_hash": self.pipeline_hash, "elapsed_s": summary.elapsed_s,
                         "rate_limits": limiter, "coordinator_rpcs": rpcs, "data_path": self.data_path,
                         **({"replicas": replicas} if replicas else {})}
                self._add_batch_jobs(extra)
                self.run_dir.write_stats(extra, run_totals(list(self.run_dir.latest_by_shard().values())))
                self.run_dir.write_run_json(run_json)
        summary.take(totals)
        return summary

    # -- a finished run: nothing to read -----------------------------------------------------------------
    def _nothing_to_do(self, finished: dict[int, dict]) -> bool:
        """Whether the last complete read of this source (source.json) saw the identity it has now, with this
        limit and config, and every one of its shards is finished from that identity: then no row is read."""
        if self.verify_source or self.identity is None:
            return False
        plan = read_plan(self.run_dir)
        if (plan is None or plan.identity != self.identity or plan.limit != self.config.limit
                or plan.pipeline_hash != self.pipeline_hash):
            return False
        screening = bool(self.config.source.dedup or self.config.source.decontaminate)
        return all_finished(self.run_dir, plan, self.identity, finished, screening)

    def _finished_already(self, finished: dict[int, dict], run_json: dict[str, Any], t0: float) -> RunSummary:
        """The rerun of a finished run: the manifest and the source's identity say every shard is done."""
        summary = RunSummary(out_dir=self.run_dir.display, shards_skipped=len(finished))
        previous = self.run_dir.fs.read_bytes("stats.json")
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            self.data_path = dict(json.loads(previous or b"{}").get("data_path") or {})
        self.data_path["last_rerun"] = "no rows read: manifest and source identity unchanged"
        totals = run_totals(list(finished.values()))
        status = "budget_exhausted" if totals["reject_reasons"].get("budget_exhausted") else "finished"
        summary.elapsed_s = round(time.monotonic() - t0, 3)
        run_json["status"] = status
        run_json["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        extra = {"status": status, "pipeline_hash": self.pipeline_hash, "elapsed_s": summary.elapsed_s,
                 "data_path": self.data_path}
        self._add_batch_jobs(extra)
        self.run_dir.write_stats(extra, totals)
        self.run_dir.write_run_json(run_json)
        summary.take(totals)
        return summary

    def _lighten(self, source: Any) -> None:
        """Let the workers read the rows' images when the source can leave them out (the driver keeps ids and
        text); say which way the rows travel."""
        lighten = getattr(source, "lighten", None)
        reason = lighten() if callable(lighten) else "this source reads whole rows"
        inner = getattr(source, "inner", source)
        joined = self.config.engine.kind == "ray" and (self.config.engine.ray_address or os.environ.get("RAY_ADDRESS"))
        if reason is None and getattr(inner, "light", False) and joined and \
                os.environ.get("UNIEDIT_WORKERS_READ_SOURCE") != "1":
            # the nodes of a cluster joined by address may not see the driver's files: whole rows, unless told
            inner.light = False
            reason = ("a joined Ray cluster: whole rows, as its nodes may not see this source's files "
                      "(UNIEDIT_WORKERS_READ_SOURCE=1 when every node can read them at the same path)")
        if reason is None:
            self.data_path = {"rows_read_by": "workers", "driver_reads": "ids and text (no images)"}
        else:
            self.data_path = {"rows_read_by": "driver", "driver_reads": reason}
        self.data_path["rerun_reads_rows"] = ("only when the source changed" if self.identity is not None
                                              else "yes (this source has no identity to check)")

    def _withdraw(self, finished: dict[int, dict], shards: int) -> None:
        """The source ended before some finished shards (it was replaced by a shorter one): their rows are no
        longer in the source, so they leave the output, and the run says so."""
        gone = sorted(shard for shard in finished if shard >= shards)
        if not gone:
            return
        records = sum(int(finished[shard].get("records", 0)) for shard in gone)
        cache = ResponseCache(self.run_dir.cache_fs())
        for shard in gone:
            cache.materialize(shard)  # its pack keeps the replies whose images were in the files deleted here
            for record in (finished[shard].get("files") or {}).values():
                with contextlib.suppress(OSError):
                    self.run_dir.fs.delete(record["path"])
            self.run_dir.append_manifest(withdrawn_entry(shard, self.identity))
        log.warning("the source now ends after %d shard(s): finished shard(s) %s (%d record(s)) are no longer in it "
                    "and were removed from the output", shards, _shard_list(gone), records)
        if self.log_format == "json":
            self._emit({"event": "withdrawn", "shards": gone, "records": records})

    # -- the dispatch loop -------------------------------------------------------------------------------
    async def _dispatch(self, runtime: Any, source: Any, finished: dict[int, dict], summary: RunSummary) -> None:
        engine = self.config.engine
        max_in_flight = runtime.workers * shards_per_worker(self.config)
        total = source.estimated_len()
        bar = open_progress(total, enabled=self.show_progress)  # a live bar on a terminal, status lines in a log
        base_records = 0
        in_flight: dict[asyncio.Task, tuple[int, list[VQARecord], int, int, str | None]] = {}
        load = Counter[int]()
        caps = bool(self.config.stages.classify.category_caps)
        screening = bool(self.config.source.dedup or self.config.source.decontaminate)
        budgeted = self.config.limits.max_cost_usd is not None
        await asyncio.to_thread(self._lighten, source)
        self._finished = finished
        shards = iter_shards(source, engine.shard_size)
        poller = asyncio.create_task(self._poll_progress(runtime, bar, lambda: base_records))
        count = records_read = 0
        try:
            while True:
                item = await asyncio.to_thread(next, shards, None)
                if item is None:
                    break
                shard, records = item
                count, records_read = shard + 1, records_read + len(records)
                done = finished.get(shard)
                verify = None
                if (
                    done is not None
                    and done.get("ids_sha256") == ids_digest(records)
                    and not done.get("budget_exhausted")
                    and self.run_dir.shard_files_intact(done)
                    and (not screening or self.run_dir.read_screen(shard) is not None)
                ):
                    unchanged = done.get("source_identity") == self.identity and not self.verify_source
                    legacy = "rows_sha256" not in done and not self.verify_source  # made before identities
                    if unchanged or legacy:
                        summary.shards_skipped += 1
                        base_records += len(records)
                        if caps or screening:
                            await runtime.coordinator.register_shard(
                                shard, done.get("admitted", {}), self._screened(shard) if screening else None
                            )
                        continue
                    # the source changed since this shard was made: a worker re-reads its rows and keeps it when
                    # they are the same (with caps or a screen, which decide in shard order, it is redone from
                    # the cache instead)
                    if not (caps or screening) and done.get("rows_sha256"):
                        verify = str(done["rows_sha256"])
                runtime.start_workers()  # at the first shard to run (a no-op rerun starts none)
                while len(in_flight) >= max_in_flight:
                    await self._collect(runtime, in_flight, load, summary)
                if caps or screening:  # category caps and the input screen decide in shard order
                    await runtime.coordinator.register_shard(shard)
                exhausted = budgeted and not await runtime.coordinator.budget_left()
                worker = min(range(runtime.workers), key=lambda w: load[w])
                self._start(runtime, in_flight, load, worker, shard, records, exhausted, 0, verify)
            while in_flight:
                await self._collect(runtime, in_flight, load, summary)
            limit = self.config.limit
            if limit is None or records_read < limit:  # the source itself ended (not the limit)
                self._withdraw(finished, count)
            if self.identity is not None:
                write_plan(self.run_dir, SourcePlan(identity=self.identity, limit=limit, shards=count,
                                                    records=records_read, pipeline_hash=self.pipeline_hash))
        except BaseException:
            await self._stop_in_order(runtime, in_flight)
            raise
        finally:
            poller.cancel()
            with contextlib.suppress(BaseException):
                await self._refresh_bar(runtime, bar, base_records)
            bar.close()

    async def _stop_in_order(self, runtime: Any, in_flight: dict) -> None:
        """An outage, Ctrl-C or SIGTERM: before the workers go, they send nothing new and wait for the calls
        already on the wire (at most the longest backend timeout), so every reply that arrives is cached and a
        rerun never pays for it again. A second Ctrl-C stops at once."""
        timeout_s = max((b.timeout_s for b in self.config.backends.values()), default=60.0)
        try:
            awaited = await runtime.stop(timeout_s)
        except BaseException as exc:  # noqa: BLE001 - a second Ctrl-C, a dead actor: stop without waiting
            log.debug("orderly stop cut short: %s", exc)
        else:
            if awaited:
                log.info("stopping: waited for %d call(s) on the wire; their replies are cached", awaited)
        for task in in_flight:
            task.cancel()
            if task.done() and not task.cancelled():
                task.exception()  # another shard that failed too (seen, not logged as never retrieved)

    def _start(self, runtime, in_flight, load, worker, shard, records, exhausted, tries, verify=None) -> None:
        if self.log_format == "json":
            self._emit({"event": "dispatch", "shard": shard, "records": len(records), "worker": worker,
                        "retry": tries, **({"verify": True} if verify else {})})
        task = asyncio.ensure_future(runtime.submit(worker, shard, records, exhausted, verify))
        in_flight[task] = (shard, records, worker, tries, verify)
        load[worker] += 1

    async def _collect(self, runtime, in_flight, load, summary: RunSummary) -> None:
        done, _ = await asyncio.wait(list(in_flight), return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            shard, records, worker, tries, verify = in_flight.pop(task)
            load[worker] -= 1
            try:
                result = task.result()
            except WorkerLost as exc:
                if tries + 1 > MAX_SHARD_RETRIES:
                    raise UniEditError(f"shard {shard} failed {tries + 1} times: {exc}") from None
                log.warning("%s; retrying it on a fresh worker", exc)
                summary.shards_retried += 1
                await runtime.replace_worker(worker, exc.generation)
                exhausted = self.config.limits.max_cost_usd is not None and not await runtime.coordinator.budget_left()
                self._start(runtime, in_flight, load, worker, shard, records, exhausted, tries + 1, verify)
                continue
            if result is None:  # a verify job: the shard's rows are unchanged, it stays as it is
                self.run_dir.append_manifest({**self._finished[shard], "source_identity": self.identity})
                summary.shards_skipped += 1
                continue
            result.source_identity = self.identity
            positions = [int(r.meta["_pos"]) for r in records if "_pos" in r.meta]
            if positions:
                result.positions = positions_runs(list(dict.fromkeys(positions)))
            self.run_dir.append_manifest(result)
            summary.shards_done += 1
            summary.spent_now_usd += result.spent_usd
            for stage, n in result.calls.items():
                summary.calls[stage] = summary.calls.get(stage, 0) + n
            for stage, n in result.cache_hits.items():
                summary.cache_hits[stage] = summary.cache_hits.get(stage, 0) + n
            batch = getattr(result, "batch", None) or {}
            summary.batch_requests += int(batch.get("requests", 0))
            summary.batch_jobs += int(batch.get("jobs", 0))
            if self.log_format == "json":
                self._emit({"event": "shard", **result.model_dump(mode="json", include={
                    "shard", "records", "accepted", "rejected", "reject_reasons", "cost_usd", "spent_usd",
                    "calls", "cache_hits", "node", "worker", "elapsed_s"})})

    async def _poll_progress(self, runtime, bar, base) -> None:
        """Refresh the bar from the coordinator (two RPCs): every 0.5 s for a live bar, once per status line in a
        log (StatusLines writes one every `interval_s`: asked twice as often), never when there is no display."""
        if bar.disable:
            return
        every = max(0.5, float(getattr(bar, "interval_s", 0.5)) / 2)
        while True:
            await asyncio.sleep(every)
            await self._refresh_bar(runtime, bar, base())

    async def _refresh_bar(self, runtime, bar, base_records: int) -> None:
        if bar.disable:
            return
        p = await runtime.coordinator.progress()
        bar.n = base_records + p["records"]
        rejected = p["rejected"]
        top = max(rejected.items(), key=lambda kv: kv[1]) if rejected else None
        postfix = {"ok": p["accepted"], "rej": sum(rejected.values())}
        if top:
            postfix["top"] = f"{top[0]}:{top[1]}"
        postfix["$"] = f"{p['spent_usd']:.4f}"
        batch = p.get("batch") or {}
        if batch.get("jobs_submitted") or batch.get("jobs_done"):
            in_flight = batch.get("jobs_submitted", 0) - batch.get("jobs_done", 0)
            postfix["batch"] = (f"{in_flight} jobs in flight, "
                                f"{batch.get('requests_done', 0)}/{batch.get('requests_submitted', 0)} req")
            if in_flight > 0:
                postfix["eta"] = "provider-bound"
        for name, r in (await runtime.replica_stats()).items():  # a served model: busy replicas, utilisation
            postfix[name] = f"{r.get('busy_now', 0)}/{r.get('live', 0)} busy {r.get('utilisation', 0.0):.0%}"
        bar.set_postfix(postfix, refresh=False)
        bar.refresh()

    def _emit(self, payload: dict[str, Any]) -> None:
        self.stream.write(json.dumps(payload, sort_keys=True) + "\n")
        self.stream.flush()


def shards_per_worker(config: PipelineConfig) -> int:
    """How many shards a worker holds at once (unless engine.shards_in_flight_per_worker pins it).

    A stage can keep its `concurrency` calls in flight only while records wait for it, and a record is in one
    stage at a time; a shard's records also wait for each other after classify (the category-cap barrier)
    and at its end. So a worker holds twice the stages' summed concurrency in records, plus one shard that
    is classifying while the others finish. With shards of 50 and a concurrency of 64, the old fixed 2 a
    worker reached 0.44 of the concurrency bound, and this reaches 0.9 (benchmarks/throughput.py).
    """
    engine = config.engine
    if engine.shards_in_flight_per_worker is not None:
        return engine.shards_in_flight_per_worker
    slots = sum(getattr(config.stages, d.name).concurrency for d in STAGES if d.spec)
    return max(2, math.ceil(2 * slots / engine.shard_size) + 1)


def iter_shards(source: Any, shard_size: int) -> Iterator[tuple[int, list[VQARecord]]]:
    """Consecutive runs of `shard_size` records, with repeated ids marked (rejected later as duplicate_id)."""
    seen: Counter[str] = Counter()
    records = iter(source)
    index = 0
    while True:
        batch = list(islice(records, shard_size))
        if not batch:
            return
        for record in batch:
            seen[record.id] += 1
            if seen[record.id] > 1:
                record.duplicate = seen[record.id] - 1
        yield index, batch
        index += 1


def _shard_list(shards: list[int]) -> str:
    return ", ".join(str(s) for s in shards[:10]) + (f" … ({len(shards)} in all)" if len(shards) > 10 else "")


def run_synth(config: PipelineConfig, out_dir: str, **kwargs: Any) -> RunSummary:
    return Driver(config, out_dir, **kwargs).run()
