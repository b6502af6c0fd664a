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
import platform
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

from .. import __version__
from ..backends.registry import create_backend
from ..core.config import CONFIGURED_STAGES, PipelineConfig, pipeline_hash
from ..core.errors import UniEditError
from ..core.prompts import prompt_hashes
from ..core.records import VQARecord
from ..core.redact import redact_url
from ..run.store import RunDir, locked
from ..sources import open_source
from ..stages.totals import run_totals
from .batch import JobStore, summarise_jobs
from .progress import open_progress
from .runtime import InlineRuntime, RayRuntime, WorkerLost
from .worker import CAPABILITY, STAGES, batch_route, ids_digest

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


def prompt_files(config: PipelineConfig) -> list[str]:
    """Every template the pipeline's stages can use (a `{category}` template expands over the files that exist)."""
    names: list[str] = []
    for definition in CONFIGURED_STAGES:
        template = getattr(getattr(config.stages, definition.name), "prompt", None)
        if not template:
            continue
        if "{category}" in template:
            folder = (config.prompts_path() / template).parent
            pattern = Path(template).name.replace("{category}", "*")
            rel_folder = Path(template).parent
            names += [str(rel_folder / p.name) for p in sorted(folder.glob(pattern))]
        else:
            names.append(template)
    if config.stages.rewrite.reasoning == "model":
        names.append(config.stages.rewrite.reasoning_prompt)
    return names


def versions() -> dict[str, str]:
    out = {"uniedit-synth": __version__, "python": platform.python_version()}
    for name in ("ray", "pyarrow", "pydantic", "openai", "google.genai", "datasets", "PIL"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = getattr(module, "__version__", "?")
    return out


class Driver:
    def __init__(
        self,
        config: PipelineConfig,
        out_dir: str,
        *,
        force_new_config: bool = False,
        log_format: str = "text",
        progress: bool = True,
        stream: TextIO | None = None,
    ):
        self.config = config
        self.run_dir = RunDir(out_dir)
        self.force_new_config = force_new_config
        self.log_format = log_format
        self.show_progress = progress and log_format == "text"
        self.stream = stream or sys.stdout
        self.prompt_hashes = prompt_hashes(config.prompts_path(), prompt_files(config))
        self.pipeline_hash = pipeline_hash(config, self.prompt_hashes)

    # -- entry point -------------------------------------------------------------------------------------
    def run(self) -> RunSummary:
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
            "versions": versions(),
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
                route = batch_route(backend, capability)
                (batched if route is not None else online).append(
                    stage_name if route is not None else f"{stage_name} ({self.config.backends[stage.backend].type})"
                )
            check = getattr(backend, "preflight", None)
            if callable(check):  # a local model: its files and class, checked without loading weights
                await asyncio.to_thread(check, self.config.engine.kind)
            await backend.aclose()
        if online:  # said once per run: these stages asked for batch mode and cannot have it
            message = (f"batch mode: no batch route for {', '.join(online)}; "
                       f"{'that stage runs' if len(online) == 1 else 'those stages run'} online")
            log.warning(message)
            if self.log_format == "json":
                self._emit({"event": "batch_unsupported", "stages": online})
        self.batch_stages = batched

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
        benchmarks = [load_benchmark(spec, cache) for spec in source.decontaminate]
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
        source = open_source(
            self.config.source, seed=self.config.seed, limit=self.config.limit)
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
            await runtime.close()
            summary.elapsed_s = round(time.monotonic() - t0, 3)
            run_json["status"] = status
            run_json["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            # best effort on the way out of a failure (a full disk must not hide the real error)
            failed = status not in ("finished", "budget_exhausted")
            with contextlib.suppress(Exception) if failed else contextlib.nullcontext():
                extra = {"status": status, "pipeline_hash": self.pipeline_hash, "elapsed_s": summary.elapsed_s,
                         "rate_limits": limiter, "coordinator_rpcs": rpcs,
                         **({"replicas": replicas} if replicas else {})}
                jobs = JobStore(self.run_dir.fs).all()
                if jobs:
                    extra["batch_jobs"] = summarise_jobs(jobs)
                self.run_dir.write_stats(extra, run_totals(list(self.run_dir.latest_by_shard().values())))
                self.run_dir.write_run_json(run_json)
        summary.read = totals["read"]
        summary.accepted = totals["accepted"]
        summary.rejected = totals["rejected"]
        summary.reject_reasons = totals["reject_reasons"]
        summary.cost_usd = totals["cost_usd"]
        summary.budget_exhausted = totals["reject_reasons"].get("budget_exhausted", 0)
        return summary

    # -- the dispatch loop -------------------------------------------------------------------------------
    async def _dispatch(self, runtime: Any, source: Any, finished: dict[int, dict], summary: RunSummary) -> None:
        engine = self.config.engine
        max_in_flight = runtime.workers * shards_per_worker(self.config)
        total = source.estimated_len()
        bar = open_progress(total, enabled=self.show_progress)  # a live bar on a terminal, status lines in a log
        base_records = 0
        in_flight: dict[asyncio.Task, tuple[int, list[VQARecord], int, int]] = {}
        load = Counter[int]()
        caps = bool(self.config.stages.classify.category_caps)
        screening = bool(self.config.source.dedup or self.config.source.decontaminate)
        budgeted = self.config.limits.max_cost_usd is not None
        shards = iter_shards(source, engine.shard_size)
        poller = asyncio.create_task(self._poll_progress(runtime, bar, lambda: base_records))
        try:
            while True:
                item = await asyncio.to_thread(next, shards, None)
                if item is None:
                    break
                shard, records = item
                done = finished.get(shard)
                if (
                    done is not None
                    and done.get("ids_sha256") == ids_digest(records)
                    and not done.get("budget_exhausted")
                    and self.run_dir.shard_files_intact(done)
                    and (not screening or self.run_dir.read_screen(shard) is not None)
                ):
                    summary.shards_skipped += 1
                    base_records += len(records)
                    if caps or screening:
                        await runtime.coordinator.register_shard(
                            shard, done.get("admitted", {}), self._screened(shard) if screening else None
                        )
                    continue
                runtime.start_workers()  # at the first shard to run (a no-op rerun starts none)
                while len(in_flight) >= max_in_flight:
                    await self._collect(runtime, in_flight, load, summary)
                if caps or screening:  # category caps and the input screen decide in shard order
                    await runtime.coordinator.register_shard(shard)
                exhausted = budgeted and not await runtime.coordinator.budget_left()
                worker = min(range(runtime.workers), key=lambda w: load[w])
                self._start(runtime, in_flight, load, worker, shard, records, exhausted, 0)
            while in_flight:
                await self._collect(runtime, in_flight, load, summary)
        except BaseException:
            for task in in_flight:
                task.cancel()
            raise
        finally:
            poller.cancel()
            with contextlib.suppress(BaseException):
                await self._refresh_bar(runtime, bar, base_records)
            bar.close()

    def _start(self, runtime, in_flight, load, worker, shard, records, exhausted, tries) -> None:
        if self.log_format == "json":
            self._emit({"event": "dispatch", "shard": shard, "records": len(records), "worker": worker,
                        "retry": tries})
        task = asyncio.ensure_future(runtime.submit(worker, shard, records, exhausted))
        in_flight[task] = (shard, records, worker, tries)
        load[worker] += 1

    async def _collect(self, runtime, in_flight, load, summary: RunSummary) -> None:
        done, _ = await asyncio.wait(list(in_flight), return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            shard, records, worker, tries = in_flight.pop(task)
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
                self._start(runtime, in_flight, load, worker, shard, records, exhausted, tries + 1)
                continue
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
        while True:
            await asyncio.sleep(0.5)
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
    slots = sum(getattr(config.stages, d.name).concurrency for d in STAGES)
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


def run_synth(config: PipelineConfig, out_dir: str, **kwargs: Any) -> RunSummary:
    return Driver(config, out_dir, **kwargs).run()
