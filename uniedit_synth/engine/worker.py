"""The shard worker: runs one shard's records through the stages of core/stage_table.py and writes the shard.

Built in: validate → classify → (category caps) → rewrite → edit ⇄ judge, in a Ray async actor (engine/runtime.py)
or in-process (`--engine inline`). Records of a shard run concurrently; each stage has its own semaphore (its
`concurrency`), shared by the worker's shards. Every record leaves once, as a Sample accepted or rejected.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Iterable
from typing import Any

from ..backends.registry import create_backend
from ..core.config import CAPABILITY, MODEL_ROLES, STAGE_NAMES, STAGE_TABLE, PipelineConfig, StageDef
from ..core.plugins import load_target
from ..core.records import ModelNames, RejectReason, Sample, Scores, VQARecord, samples_to_table
from ..run.cache import ResponseCache
from ..run.resume import ids_digest, rows_digest
from ..run.store import RunDir, ShardResult
from ..sources.grouping import group_items
from ..stages.base import Rejected, StageContext, WorkItem
from ..stages.judge import EXPENSIVE_JUDGE, cascade_counts, non_edit_counts
from .batch import BatchPending, BatchRunner, BatchState, JobStore, StageBatch, attach_keys
from .calls import BudgetExhausted, CoordinatorLike, Drain, ModelCaller, RunStopping
from .chains import ChainRows, run_chains

log = logging.getLogger(__name__)

EXHAUSTED = Rejected(RejectReason.budget_exhausted, "the run's --max-cost was reached before this record")

#: the stages the worker runs (CAPABILITY, imported with them: stage name -> the backend capability it calls)
STAGES: tuple[StageDef, ...] = STAGE_TABLE
#: how many records a stage without a `stages:` entry (validate: CPU work in threads) runs at once
CPU_BOUND = max(4, (os.cpu_count() or 2) * 2)


def node_label() -> str:
    """Where this worker runs, for the manifest: $UNIEDIT_NODE_LABEL, else the host name, plus the Ray node id
    inside a Ray worker (several Ray nodes can share a host, and the host name alone would merge them)."""
    label = os.environ.get("UNIEDIT_NODE_LABEL")
    if label:
        return label
    host = socket.gethostname()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return f"{host}/{ray.get_runtime_context().get_node_id()[:12]}"
    return host


async def gather_or_cancel(coros: Iterable[Awaitable[Any]], drain: Drain | None = None) -> None:
    """Run a shard's records together. Records turn their own failures into rejects, so an exception here
    ends the run (a rejected API key, a full disk, an outage): the other records make no new call (`drain`
    stops this worker's calls; without one they are cancelled at once), but a call already on the wire is
    awaited, so that its reply lands in the cache instead of being paid for again by the rerun. A
    cancellation from outside (the driver going away) still cancels at once."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        raise
    except BaseException as exc:
        if drain is not None:
            drain.halt(exc)
            await asyncio.gather(*tasks, return_exceptions=True)  # each call is bounded by its timeout
        for task in tasks:
            task.cancel()
        raise


class ShardProcessor:
    def __init__(
        self,
        config: PipelineConfig,
        out_dir: str,
        pipeline_hash: str,
        coordinator: CoordinatorLike,
        worker_label: str = "inline",
    ):
        self.config = config
        self.run_dir = RunDir(out_dir)  # a path or a pyarrow filesystem URI (rebuilt in this process)
        self.pipeline_hash = pipeline_hash
        self.coordinator = coordinator
        self.worker_label = worker_label
        self.node = node_label()
        self.cache = ResponseCache(self.run_dir.cache_fs())
        self._backends: dict[tuple[str, str], Any] = {}
        callers: dict[str, ModelCaller] = {}
        models: dict[str, str] = {}

        def make_caller(stage_name: str, backend_name: str, capability: str) -> ModelCaller:
            backend = self._backend(backend_name, capability)
            models[stage_name] = config.backends[backend_name].model
            return ModelCaller(
                stage_name,
                backend,
                cache=self.cache,
                coordinator=coordinator,
                prices=config.prices,
                retry=config.retry,
                # a local model's capacity is its replicas' (`rate_limited = False`), not a provider quota
                rate_limited=backend.rate_limited,
                backend_name=backend_name,
            )

        for stage_name, capability in CAPABILITY.items():
            callers[stage_name] = make_caller(stage_name, getattr(config.stages, stage_name).backend, capability)
        self.batch_state = BatchState()
        self.batch_runner = BatchRunner(self.run_dir.fs, self.cache, coordinator, config.prices, self.batch_state)
        self.batch_stages: list[str] = []
        jobs: list[dict[str, Any]] | None = None
        for stage_name, caller in callers.items():
            stage_spec = getattr(config.stages, stage_name)
            route = caller.backend.batch_route(CAPABILITY[stage_name])  # None: its provider has no batch API
            if route is not None and stage_spec.mode == "batch":
                caller.batch = StageBatch(stage_name, route, stage_spec.batch, self.batch_state)
                self.batch_stages.append(stage_name)
            elif route is not None:
                # an online stage whose requests may sit in jobs of an earlier --batch run that are still in
                # flight: those wait for their jobs (paid for already), the rest go online
                jobs = JobStore(self.run_dir.fs).all() if jobs is None else jobs
                keys = attach_keys(jobs, stage_name)
                if keys:
                    caller.batch = StageBatch(stage_name, route, stage_spec.batch, self.batch_state, attach=keys)
                    self.batch_stages.append(stage_name)
        self._batch_sent: Counter = Counter()
        cascade = config.stages.judge.cascade
        if cascade:  # the expensive judge of the cascade: a second caller of the judge stage (stages/judge.py)
            callers[EXPENSIVE_JUDGE] = make_caller(EXPENSIVE_JUDGE, cascade[1], "text")
        self.drain = Drain()  # one for the worker: an orderly stop waits for every stage's calls on the wire
        for caller in callers.values():
            caller.drain = self.drain
        self.ctx = StageContext(config=config, callers=callers, models=models)
        self.stages = {d.name: load_target(d.cls)(self.ctx) for d in STAGES}
        self._check_stages = [d for d in STAGES if d.before_screen]
        self._front_stages = [d for d in STAGES if not d.after_caps and not d.before_screen]
        self._back_stages = [d for d in STAGES if d.after_caps]
        self.model_names = ModelNames(**{role: models.get(name) for name, role in MODEL_ROLES.items()})
        self._sems = {d.name: asyncio.Semaphore(getattr(config.stages, d.name).concurrency if d.spec else CPU_BOUND)
                      for d in STAGES}
        self._pending_report: dict[str, Any] = {}
        self._reporter: asyncio.Task | None = None
        self._started: asyncio.Task | None = None
        self._screening = bool(config.source.dedup or config.source.decontaminate)
        self._source: Any = None  # opened on the first light shard (records tagged with positions)
        self._hydrate_lock = asyncio.Lock()

    def _backend(self, name: str, capability: str) -> Any:
        key = (name, capability)
        if key not in self._backends:
            self._backends[key] = create_backend(name, self.config.backends[name], capability, seed=self.config.seed)
        return self._backends[key]

    async def start_backends(self) -> None:
        """Each backend's optional `start()` (load a local model), once per worker process, before its first
        call; concurrent shards wait for the same start."""
        if self._started is None:
            starts = [b.start() for b in self._backends.values()]
            self._started = asyncio.ensure_future(asyncio.gather(*starts))
        await asyncio.shield(self._started)

    async def stop(self, timeout_s: float) -> int:
        """An orderly stop: send no new call, and wait (at most `timeout_s`) for those on the wire, which cache
        their replies as they land. Returns how many calls were on the wire."""
        return await self.drain.stop(timeout_s)

    async def aclose(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
        for backend in self._backends.values():
            await backend.aclose()

    # -- one shard ---------------------------------------------------------------------------------------
    def _hydrate(self, records: list[VQARecord]) -> list[VQARecord]:
        """The shard's whole records: a light read's records (ids and text, tagged with positions) are read here
        by position, so the driver never holds image bytes; other records came whole from the driver."""
        if not any("_pos" in r.meta for r in records):
            return records
        if self._source is None:
            from ..sources import open_source

            self._source = open_source(self.config.source, seed=self.config.seed, limit=self.config.limit)
        return self._source.hydrate(records)

    async def process(self, shard: int, records: list[VQARecord], budget_exhausted: bool = False,
                      verify: str | None = None) -> ShardResult | None:
        """Run one shard and write it. With `verify` (the rows digest a finished shard recorded), return None
        without running anything when its rows are still those: the rerun after a source change re-reads a
        finished shard here, in the worker, not in the driver."""
        started = time.monotonic()
        async with self._hydrate_lock:  # one shard's rows in memory at a time while reading
            records = await asyncio.to_thread(self._hydrate, records)
        digest = rows_digest(records)
        if verify is not None and digest == verify:
            return None
        await self.start_backends()
        funnel: dict[str, Counter] = {name: Counter() for name in STAGE_NAMES}
        items: list[WorkItem] = [WorkItem(record=r, shard=shard) for r in records]
        for item in items:
            item.ledger.owner = item.record.id
        outcomes: list[Sample | None] = [None] * len(items)
        batch: Counter = Counter()
        if self._reporter is None or self._reporter.done():
            # one progress report every REPORT_S for all the shards this worker holds (not one loop a shard:
            # with a dozen shards in flight those made most of the coordinator's RPCs)
            self._reporter = asyncio.create_task(self._report_loop())
        try:
            if self._screening or self.config.source.group_by_image:
                # phase 1: validate, group by image, dedup / decontaminate in shard order (no model call), classify
                await gather_or_cancel((self._validate(i, item, outcomes, funnel) for i, item in enumerate(items)),
                                      self.drain)
                self._group(items, outcomes)
                screened = await self._screen(shard, items, outcomes) if self._screening else []
                await self._in_waves(
                    shard, [i for i in range(len(items)) if outcomes[i] is None], items, funnel, batch,
                    lambda i, f: self._classify(i, items[i], outcomes, f, budget_exhausted),
                )
            else:
                # phase 1: validate + classify (cheap) for every record
                await self._in_waves(
                    shard, range(len(items)), items, funnel, batch,
                    lambda i, f: self._front(i, items[i], outcomes, f, budget_exhausted),
                )
            # phase 2: category caps, decided in shard order by the coordinator (deterministic)
            survivors = [i for i, outcome in enumerate(outcomes) if outcome is None]
            verdicts = await self.coordinator.admit(shard, [items[i].task_category or "others" for i in survivors])
            admitted: Counter = Counter()
            for i, ok in zip(survivors, verdicts, strict=True):
                if ok:
                    admitted[items[i].task_category or "others"] += 1
                else:
                    capped = Rejected(RejectReason.category_capped, f"cap reached for {items[i].task_category}")
                    self._finish(i, items[i], self._reject(items[i], capped), outcomes)
            # phase 3: the stages after the caps (rewrite → edit ⇄ judge)
            await self._in_waves(
                shard, [i for i, ok in zip(survivors, verdicts, strict=True) if ok], items, funnel, batch,
                lambda i, f: self._back(i, items[i], outcomes, f),
            )
            # turns 2..N of the shard's chains (engine/chains.py); nothing with `stages.chain.turns: 1`
            chains = await run_chains(self, shard, items, outcomes, funnel, batch, budget_exhausted)
        except RunStopping:
            if self.drain.cause is not None:  # the error that stopped this worker, not the stop itself
                raise self.drain.cause from None
            raise
        finally:
            await self._flush_report()
        samples = [s for s in outcomes if s is not None]
        if len(samples) != len(records):
            raise RuntimeError(f"shard {shard}: {len(records) - len(samples)} record(s) left no outcome")
        if self._screening:
            self.run_dir.write_screen(shard, [e.__dict__ for e in screened])
        # an earlier pack of this shard may point into the files about to be replaced: its bytes go back in first
        await asyncio.to_thread(self.cache.materialize, shard)
        entry = self._write(shard, items, samples, funnel, admitted, started, chains)
        # the shard is final: its replies go into one pack file (the loose copies go at the end of the run), an
        # edited image as a reference to the shard's parquet (stored once)
        keys = [event.get("key", "") for item in items + chains.items for event in item.ledger.events]
        # the call index (which cache entries each sample's calls used, for `uniedit inspect`); a chain's later
        # turns (engine/chains.py) are rows of their own, counted with their record
        calls = [json.dumps({"id": sample.id, **event}, sort_keys=True) for item, sample in zip(
            items + chains.items, chains.first_rows(samples) + chains.samples, strict=True) for event in item.ledger.events]
        await asyncio.to_thread(self.run_dir.pack_shard, self.cache, shard, keys, entry, calls)
        entry.rows_sha256 = digest
        if batch:  # what this shard's batch jobs did and cost (the manifest's spent_usd counts both)
            entry.batch = {k: v for k, v in batch.items() if k != "spent_usd"}
            entry.spent_usd = round(entry.spent_usd + batch["spent_usd"], 8)
        return entry

    async def _in_waves(self, shard: int, indices: Iterable[int], items: list[WorkItem],
                        funnel: dict[str, Counter], batch: Counter, run) -> None:
        """Run `run(i, funnel)` for the records `indices`; records that stopped at a batch-mode cache miss
        (engine/batch.py) wait for the wave's batch jobs and run again from where the wave began, replaying
        their earlier calls from the cache. Without batch-mode stages this is one wave."""
        todo = list(indices)
        checkpoints = {i: copy.deepcopy(items[i]) for i in todo} if self.batch_stages else {}
        while todo:
            local = {i: {name: Counter() for name in funnel} for i in todo}
            await gather_or_cancel((run(i, local[i]) for i in todo), self.drain)
            waiting = [i for i in todo if items[i].ledger.deferred]
            for i in todo:
                if not items[i].ledger.deferred:
                    for name, counts in local[i].items():
                        funnel[name].update(counts)
            if not waiting:
                return
            deferred = [call for i in waiting for call in items[i].ledger.deferred]
            batch.update(await self.batch_runner.run_wave(shard, deferred))
            for i in waiting:
                items[i] = copy.deepcopy(checkpoints[i])
            todo = waiting

    async def _front(self, i: int, item: WorkItem, outcomes: list, funnel: dict, exhausted: bool) -> None:
        if await self._validate(i, item, outcomes, funnel):
            await self._classify(i, item, outcomes, funnel, exhausted)

    def _group(self, items: list[WorkItem], outcomes: list) -> None:
        """`source.group_by_image` (sources/grouping.py): valid records sharing an image become one sample."""
        for i, detail in group_items(items, outcomes, self.config.source.group_by_image, self.config.seed):
            self._finish(i, items[i], self._reject(items[i], Rejected(RejectReason.merged, detail)), outcomes)

    async def _screen(self, shard: int, items: list[WorkItem], outcomes: list) -> list[Any]:
        """Fingerprint the validated records and let the coordinator decide, in shard order, which are copies
        of an earlier record or of a benchmark item (called for every shard, even with nothing left, so
        later shards never wait on this one). Returns the entries that passed (saved for resume)."""
        from ..method.fingerprint import ImageUnreadable, fingerprint_image
        from ..method.screen import ScreenEntry

        def entry(item: WorkItem) -> ScreenEntry:
            hex_fp = item.fingerprint
            if hex_fp is None and item.image:
                try:
                    hex_fp = fingerprint_image(item.image).to_hex()
                except ImageUnreadable:
                    hex_fp = None
            return ScreenEntry(item.record.id, hex_fp, item.record.question)

        alive = [i for i, outcome in enumerate(outcomes) if outcome is None]
        entries = [entry(items[i]) for i in alive]
        verdicts = await self.coordinator.screen(shard, entries)
        passed = []
        for i, screened, verdict in zip(alive, entries, verdicts, strict=True):
            if verdict is None:
                passed.append(screened)
            else:
                reason, detail = verdict
                self._finish(i, items[i], self._reject(items[i], Rejected(RejectReason(reason), detail)), outcomes)
        return passed

    async def _validate(self, i: int, item: WorkItem, outcomes: list, funnel: dict) -> bool:
        """The input check (the table's `before_screen` stages: validate); False when the record became a reject."""
        try:
            for definition in self._check_stages:
                await self._run_stage(definition, item, funnel)
            return True
        except Rejected as rej:
            self._finish(i, item, self._reject(item, rej), outcomes)
            return False

    async def _classify(self, i: int, item: WorkItem, outcomes: list, funnel: dict, exhausted: bool) -> None:
        try:
            if exhausted:
                raise BudgetExhausted()
            for definition in self._front_stages:
                await self._run_stage(definition, item, funnel)
        except BatchPending:
            return  # waits for this wave's batch jobs (_in_waves)
        except Rejected as rej:
            self._finish(i, item, self._reject(item, rej), outcomes)
        except BudgetExhausted:
            self._finish(i, item, self._reject(item, EXHAUSTED), outcomes)

    async def _run_stage(self, definition: StageDef, item: WorkItem, funnel: dict, *args: Any) -> Any:
        name = definition.name
        funnel[name]["in"] += 1
        async with self._sems[name]:
            result = await self.stages[name](item, *args)
        if result is not False:
            funnel[name]["out"] += 1
        return result

    async def _back(self, i: int, item: WorkItem, outcomes: list, funnel: dict) -> None:
        """The stages after the caps, in order. A stage with `retries` (judge) that returns False sends the
        record back to that stage (edit), which is called with the attempt number, while its max_attempts
        allow; a failed attempt before a retry is kept in attempts/ as a preference negative."""
        stages = self._back_stages
        names = [d.name for d in stages]
        loop_starts = {d.retries for d in stages if d.retries}
        try:
            attempt = 0
            index = 0
            while index < len(stages):
                definition = stages[index]
                if definition.name in loop_starts:
                    item.ledger.attempt = attempt
                    await self._run_stage(definition, item, funnel, attempt)
                    index += 1
                    continue
                result = await self._run_stage(definition, item, funnel)
                if result is not False or not definition.retries:
                    index += 1
                    continue
                verdict = self.stages[definition.name]
                attempt = max(attempt, item.attempts - 1)  # the edit stage may have used attempts (pixel gates)
                max_attempts = getattr(getattr(self.config.stages, definition.retries), "max_attempts", 1)
                if attempt + 1 >= max_attempts:
                    raise Rejected(RejectReason.low_score, verdict.failed_thresholds(item))
                # a judged failure before a retry: kept in attempts/ as a preference negative
                snapshot = self._sample(item, False, RejectReason.low_score, verdict.failed_thresholds(item))
                snapshot.cost_usd = snapshot.latency_s = 0.0  # counted once, in the record's final row
                snapshot.attributed_cost_usd = 0.0
                item.failed_attempts.append(snapshot)
                item.judge_cascade = None  # counted with this attempt's row; the next judging starts afresh
                attempt += 1
                index = names.index(definition.retries)
            self._finish(i, item, self._sample(item, accepted=True), outcomes)
        except BatchPending:
            return  # waits for this wave's batch jobs (_in_waves)
        except Rejected as rej:
            self._finish(i, item, self._reject(item, rej), outcomes)
        except BudgetExhausted:
            self._finish(i, item, self._reject(item, EXHAUSTED), outcomes)

    # -- samples -------------------------------------------------------------------------------------------
    def _sample(self, item: WorkItem, accepted: bool, reason: RejectReason | None = None, detail: str = "") -> Sample:
        record = item.record
        sample_id = f"{record.id}~dup{record.duplicate}" if record.duplicate else record.id
        return Sample(
            id=sample_id,
            source=record.source,
            shard=item.shard,
            task_category=item.task_category,
            original_question=record.question,
            original_answer=record.answer,
            process_answer=item.process_answer,
            edit_instruction=item.instruction,
            source_image=item.image or record.image,
            source_image_path=record.image_path,
            edited_image=item.edited_image,
            scores=Scores(**item.scores),
            score=item.score,
            analysis=item.analysis,
            accepted=accepted,
            reject_reason=reason,
            reject_detail=detail[:2000] or None,
            models=self.model_names,
            prompt_versions=item.prompt_versions,
            attempts=item.attempts,
            cost_usd=round(item.ledger.cost_usd, 8),
            attributed_cost_usd=round(item.ledger.attributed_usd, 8),
            latency_s=round(item.ledger.latency_s, 4),
            pipeline_hash=self.pipeline_hash,
            edit_program=item.edit_program,
            instruction_plan=item.plan,
            reasoning=item.reasoning,
            intended_effect=item.intended_effect,
            judge_cascade=dict(item.judge_cascade) if item.judge_cascade else None,
            outputs=dict(item.outputs) or None,
            record_meta={k: v for k, v in record.meta.items() if not k.startswith("_")},
            chain_id=item.chain_id or sample_id,
            turn=item.turn,
            parent_id=item.parent_id,
        )

    def _reject(self, item: WorkItem, rej: Rejected) -> Sample:
        sample = self._sample(item, accepted=False, reason=rej.reason, detail=rej.detail)
        if item.record.image is None and not item.image:
            sample.source_image = None
        return sample

    def _finish(self, i: int, item: WorkItem, sample: Sample, outcomes: list[Sample | None]) -> None:
        """Record a record's single exit, and queue it for the live progress report."""
        outcomes[i] = sample
        report = self._pending_report
        # a record is counted when it leaves: at turn 1 unless it starts a chain, whose end counts it
        # (engine/chains.py, `count_exit`), so a chain later dropped as too short is never counted accepted
        if item.turn == 1 and not (sample.accepted and self.config.stages.chain.turns > 1):
            self.count_exit(sample)
        report["cost_usd"] = report.get("cost_usd", 0.0) + item.ledger.spent_now_usd
        report.setdefault("calls", Counter()).update(item.ledger.calls)
        report.setdefault("cache_hits", Counter()).update(item.ledger.cache_hits)

    def count_exit(self, sample: Sample) -> None:
        """Queue one record's exit (its exit row) for the live progress report."""
        report = self._pending_report
        report["records"] = report.get("records", 0) + 1
        if sample.accepted:
            report["accepted"] = report.get("accepted", 0) + 1
        elif sample.reject_reason:
            report.setdefault("rejected", Counter())[sample.reject_reason.value] += 1

    def _write(
        self,
        shard: int,
        items: list[WorkItem],
        samples: list[Sample],
        funnel: dict[str, Counter],
        admitted: Counter,
        started: float,
        chains: ChainRows,
    ) -> ShardResult:
        accepted = [s for s in samples if s.accepted]
        rejected = [s for s in samples if not s.accepted]
        attempts = [failed for item in items for failed in item.failed_attempts]
        rows = {"data": accepted + chains.data, "rejects": rejected, "attempts": attempts + chains.attempts}
        files = {kind: self.run_dir.write_shard(kind, shard, samples_to_table(rows[kind])) for kind in RunDir.KINDS}
        reasons = Counter(s.reject_reason.value for s in rejected if s.reject_reason)
        # by record: its first turn's category, its exit's verdict (read sums to the shard's records); a chain
        # run adds every turn's row under its own category, with that turn's verdict (`turns`, `turns_accepted`)
        first_rows = chains.first_rows(samples)
        categories: dict[str, Counter] = {}
        for first, s in zip(first_rows, samples, strict=True):
            if first.task_category:
                c = categories.setdefault(first.task_category, Counter())
                c["read"] += 1
                c["accepted" if s.accepted else "rejected"] += 1
        if chains.counts:
            for row in first_rows + chains.samples:
                if row.task_category:
                    c = categories.setdefault(row.task_category, Counter())
                    c["turns"] += 1
                    c["turns_accepted"] += int(row.accepted)
        calls: Counter = Counter()
        hits: Counter = Counter()
        for item in items + chains.items:
            calls.update(item.ledger.calls)
            hits.update(item.ledger.cache_hits)
        spent = sum(item.ledger.spent_now_usd for item in items + chains.items)
        records = [item.record for item in items]
        cascade = (cascade_counts(chains.judged_rows(samples, attempts), items + chains.items)
                   if self.config.stages.judge.cascade else None)
        # every turn's own row once (a dropped chain's exit row is a later turn's), each with its turn's verdict
        non_edit = non_edit_counts(first_rows + chains.samples, self.config.stages.judge.non_edit_threshold)
        return ShardResult(
            **({"cascade": cascade} if cascade else {}),
            **({"non_edit": non_edit} if non_edit else {}),
            **({"chains": chains.counts} if chains.counts else {}),
            shard=shard,
            records=len(records),
            ids_sha256=ids_digest(records),
            accepted=len(accepted),
            rejected=len(rejected),
            reject_reasons=dict(reasons),
            budget_exhausted=reasons.get(RejectReason.budget_exhausted.value, 0),
            categories={k: dict(v) for k, v in categories.items()},
            admitted=dict(admitted),
            funnel={k: dict(v) for k, v in funnel.items()},
            cost_usd=round(sum(s.cost_usd for s in samples) + chains.cost_usd, 8),
            calls=dict(calls),
            cache_hits=dict(hits),
            spent_usd=round(spent, 8),
            files=files,
            node=self.node,
            worker=self.worker_label,
            elapsed_s=round(time.monotonic() - started, 3),
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )

    REPORT_S = 1.0

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.REPORT_S)
            await self._flush_report()

    async def _flush_report(self) -> None:
        progress = self.batch_runner.progress
        if progress != self._batch_sent:
            self._pending_report["batch"] = {k: v - self._batch_sent.get(k, 0) for k, v in progress.items()}
            self._batch_sent = Counter(progress)
        if self._pending_report:
            delta, self._pending_report = self._pending_report, {}
            await self.coordinator.report(delta)


