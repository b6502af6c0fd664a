"""Where shards run: a pool of Ray async actors (default) or the same ShardProcessor in-process (`inline`).

Ray starts in-process (dashboard off, temp dir under /tmp, usage stats off) unless `--ray-address` or
`RAY_ADDRESS` names a cluster to join. Both runtimes expose the same small async surface to the driver:
`coordinator` (awaitable methods), `submit(shard, records, exhausted)` → awaitable result, `replace_worker`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from ..backends.diffusers_backend import RUN_TOKEN_ENV
from ..core.config import CONFIGURED_STAGES, ActorResources, PipelineConfig
from ..core.errors import RuntimeBusy, UniEditError, handle_sigterm
from ..core.records import VQARecord
from ..run.cache import ResponseCache
from ..run.processes import process_alive
from ..run.store import RunDir, ShardResult
from .coordinator import Coordinator, LeaseHolder
from .replicas import start_pools
from .worker import CAPABILITY, ShardProcessor

log = logging.getLogger(__name__)

# environment a worker needs that is not a secret (keys reach local workers by inheritance, and on a real
# cluster they are set on the nodes: they are never shipped through Ray's runtime_env, which Ray records)
FORWARDED_ENV_PREFIXES = ("UNIEDIT_",)

#: one Ray run at a time in a process: Ray's driver is process-wide (a second ray.init fails, and one run's
#: shutdown would end the other's cluster)
_RAY_RUN = threading.Lock()
RAY_BUSY = ("another Ray run is going on in this process (one Ray run per process at a time); wait for it to "
            "finish, run this one with engine kind inline, or in another process")


#: Ray's bookkeeping that nothing here reads, off in the Ray a run starts itself (every process of it: driver,
#: raylet, workers): metrics export to the metrics agent (there is no dashboard), the per-handler event-loop
#: stats (debug_state.txt) and task events (`ray list tasks`, the timeline). Measured on 2 shared cores, Ray
#: 2.60: an idle driver spends 1.5 ms of CPU a second with these off against 2.2-2.5 ms with them on
#: (benchmarks/README.md, scale.py). A joined cluster keeps its own settings (Ray refuses them there).
QUIET_SYSTEM_CONFIG: dict[str, Any] = {
    "enable_metrics_collection": False,
    "event_stats": False,
    "task_events_report_interval_ms": 0,
}


def ray_run_in_progress() -> bool:
    return _RAY_RUN.locked()


def remove_stale_temp_dirs() -> None:
    """Delete Ray temp dirs left by killed runs (named after their driver's pid, which is gone)."""
    for path in Path("/tmp").glob("uniedit-ray-*-*"):
        pid = path.name.split("-")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def worker_resources(config: PipelineConfig) -> ActorResources:
    """What one shard worker asks Ray for: `engine.worker_resources` merged with the `resources` of every
    stage and of every backend a stage uses (one worker runs all stages, so it needs the most any needs). A
    backend served by replicas (engine/replicas.py) is left out: its resources are each replica's, and workers
    only call it."""
    from .replicas import served_backends

    needed = config.engine.worker_resources
    served = served_backends(config)
    for definition in CONFIGURED_STAGES:
        stage = getattr(config.stages, definition.name)
        wanted = [stage.resources]
        if definition.name in CAPABILITY and stage.backend not in served:
            wanted.append(config.backends[stage.backend].resources)
        # the judge cascade's expensive judge runs in the same worker
        wanted += [config.backends[name].resources for name in getattr(stage, "cascade", None) or []]
        for resources in wanted:
            if resources is not None:
                needed = needed.merged(resources)
    return needed


class WorkerLost(Exception):
    """A worker process died while holding a shard; the shard is retried on a fresh worker."""

    def __init__(self, message: str, worker: int, generation: int):
        super().__init__(message)
        self.worker = worker
        self.generation = generation


class InlineRuntime:
    kind = "inline"

    def __init__(self, config: PipelineConfig, out_dir: str, pipeline_hash: str, coordinator_args: dict[str, Any]):
        self.coordinator_impl = Coordinator(**coordinator_args)
        self.coordinator = self.coordinator_impl
        self.processor = ShardProcessor(config, out_dir, pipeline_hash, self.coordinator_impl, "inline-0")
        self.workers = 1

    def start_workers(self) -> None:
        return None

    def submit(self, worker: int, shard: int, records: list[VQARecord], exhausted: bool, verify: str | None = None):
        return self.processor.process(shard, records, exhausted, verify)

    async def replace_worker(self, worker: int, generation: int) -> None:  # pragma: no cover - never lost
        return None

    async def stop(self, timeout_s: float) -> int:
        """Send nothing new and wait for the calls on the wire (an orderly stop); how many there were."""
        return await self.processor.stop(timeout_s)

    async def replica_stats(self) -> dict[str, Any]:
        return {}

    async def sweep_cache(self) -> bool:
        """One process: the driver sweeps the cache itself after close (RayRuntime.sweep_cache)."""
        return False

    async def close(self) -> None:
        await self.processor.aclose()


class RemoteCoordinator:
    """Awaitable facade over the coordinator actor, so workers call it like the in-process one.

    A worker's facade (given `limited`, the rate-limited buckets) answers the per-call questions locally,
    because an actor round trip per model call costs both processes real CPU and, at a few hundred calls/s,
    makes the one actor the cluster's bottleneck:
    - `acquire` for a bucket with a configured limit spends the slots of a lease (coordinator.LeaseHolder;
      `leases=False` asks the coordinator on every call instead, as before leases);
    - `acquire` for a bucket with no configured limit waits only for a Retry-After pause, which this worker
      knows at once when it hit the 429 itself, and learns from the coordinator (lease replies, or a poll
      at most every PAUSE_POLL_S) when another worker did;
    - `budget_left` / `spend` when the run has no --max-cost: the money is summed here and sent with the
      next progress report;
    - `admit` when the run has no category caps: every record is admitted.
    `rpcs` counts the round trips this facade made.
    """

    PAUSE_POLL_S = LeaseHolder.POLL_S

    def __init__(self, handle: Any, limited: frozenset[str] | None = None, budget: bool = True,
                 leases: bool = True, holder: str = "", caps: bool = True):
        self._handle = handle
        self._caps = caps
        self._limited = limited  # None: ask the coordinator about every bucket
        self._budget = budget
        self._leases = leases
        self._holder = LeaseHolder(self._rpc, holder or f"pid-{os.getpid()}-{id(self):x}")
        self._unspent = 0.0
        self.rpcs = 0

    async def _rpc(self, name: str, *args: Any) -> Any:
        self.rpcs += 1
        return await getattr(self._handle, name).remote(*args)

    async def acquire(self, bucket: str, tokens: int = 0) -> float:
        if self._limited is None or (bucket in self._limited and not self._leases):
            return await self._rpc("acquire", bucket, tokens)
        if bucket in self._limited:
            return await self._holder.acquire(bucket, tokens)
        await self._holder.keep_up()
        return self._holder.paused_for(bucket)

    async def pause(self, bucket: str, seconds: float) -> None:
        await self._holder.pause(bucket, seconds)

    async def budget_left(self) -> bool:
        return True if not self._budget else await self._rpc("budget_left")

    async def spend(self, usd: float) -> bool:
        if not self._budget:
            self._unspent += usd
            return True
        return await self._rpc("spend", usd)

    async def admit(self, shard: int, categories: list[str]) -> list[bool]:
        if not self._caps:
            return [True] * len(categories)  # no category caps: nothing to decide in shard order
        return await self._rpc("admit", shard, categories)

    async def reserve(self, usd: float) -> bool:
        return True if not self._budget else await self._handle.reserve.remote(usd)

    async def release(self, usd: float) -> None:
        if self._budget:
            await self._handle.release.remote(usd)

    async def report(self, delta: dict[str, Any]) -> None:
        if self._unspent:
            delta, self._unspent = {**delta, "spent_usd": self._unspent}, 0.0
        news = await self._rpc("report", delta)
        if news:
            self._holder.news(*news)  # a report's reply carries the pauses a poll would ask for

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.rpcs += 1
            return await getattr(self._handle, name).remote(*args, **kwargs)

        return call

    def __reduce__(self):
        return (RemoteCoordinator, (self._handle,))


class _ShardWorkerActor:
    """The body of the Ray actor: one ShardProcessor per actor process, created on first use."""

    def __init__(self, config_json: str, out_dir: str, pipeline_hash: str, coordinator: Any, label: str,
                 env: dict[str, str]):
        os.environ.update(env)
        logging.basicConfig(level=logging.WARNING)
        from ..core.terminal import install_log_filter

        install_log_filter()
        self._args = (config_json, out_dir, pipeline_hash, coordinator, label)
        self._processor: ShardProcessor | None = None

    async def process(self, shard: int, records: list[VQARecord], exhausted: bool,
                      verify: str | None = None) -> ShardResult | None:
        if self._processor is None:
            config_json, out_dir, pipeline_hash, coordinator, label = self._args
            config = PipelineConfig.model_validate_json(config_json)
            remote = RemoteCoordinator(coordinator, limited=frozenset(config.limits.rate_limits),
                                       budget=config.limits.max_cost_usd is not None,
                                       leases=config.engine.leases, holder=label,
                                       caps=bool(config.stages.classify.category_caps))
            self._processor = ShardProcessor(config, out_dir, pipeline_hash, remote, label)
        return await self._processor.process(shard, records, exhausted, verify)

    async def stop(self, timeout_s: float) -> int:
        return 0 if self._processor is None else await self._processor.stop(timeout_s)

    async def sweep(self, names: list[str]) -> int:
        """This worker's share of the end-of-run cache sweep (RayRuntime.sweep_cache)."""
        out_dir = self._args[1]
        return await asyncio.to_thread(ResponseCache(RunDir(out_dir).cache_fs()).sweep, names, False)


async def _awaited(ref: Any) -> Any:
    return await ref


class RayRuntime:
    kind = "ray"

    def __init__(self, *args: Any, **kwargs: Any):
        if not _RAY_RUN.acquire(blocking=False):
            raise RuntimeBusy(RAY_BUSY)
        self._holds_ray = True
        try:
            self._init(*args, **kwargs)
        except BaseException:
            self._release_ray()
            raise

    def _release_ray(self) -> None:
        if getattr(self, "_holds_ray", False):
            self._holds_ray = False
            _RAY_RUN.release()

    def _init(
        self,
        config: PipelineConfig,
        out_dir: str,
        pipeline_hash: str,
        coordinator_args: dict[str, Any],
        address: str | None,
    ):
        import ray

        self._ray = ray
        self._temp_dir: str | None = None
        self._started = False
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        address = address or os.environ.get("RAY_ADDRESS") or None
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
                else:
                    remove_stale_temp_dirs()
                    self._temp_dir = tempfile.mkdtemp(prefix=f"uniedit-ray-{os.getpid()}-", dir="/tmp")
                    ray.init(
                        address="local",
                        num_cpus=max(2, os.cpu_count() or 2),
                        include_dashboard=False,
                        _temp_dir=self._temp_dir,
                        logging_level=logging.WARNING,
                        log_to_driver=True,  # the workers' warnings reach the user's terminal
                        _system_config=dict(QUIET_SYSTEM_CONFIG),  # ray.init adds its spilling paths to it
                    )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
                raise UniEditError(f"could not start or join {where}: {str(exc).splitlines()[0]}") from None
            self._started = True
            handle_sigterm()  # Ray's driver installs a SIGTERM handler that exits 15 with a stack dump
        self.coordinator_handle = (
            ray.remote(Coordinator).options(num_cpus=0, max_concurrency=100_000).remote(**coordinator_args)
        )
        self.coordinator = RemoteCoordinator(self.coordinator_handle)
        self._config_json = config.model_dump_json()
        self._out_dir = out_dir
        self._hash = pipeline_hash
        # a node's label is its own (set where the node starts): the driver's would name every node alike
        self._env = {k: v for k, v in os.environ.items()
                     if k.startswith(FORWARDED_ENV_PREFIXES) and k != "UNIEDIT_NODE_LABEL"}
        # model replicas (a diffusers editor) start before any worker: a model that cannot load, or a GPU the
        # cluster lacks, stops the run here, before any call of the other stages
        self._run_token = uuid.uuid4().hex[:12]
        self._env[RUN_TOKEN_ENV] = self._run_token
        self.pools: dict[str, Any] = {}
        try:
            self.pools = start_pools(config, ray, self._run_token, self._env)
        except BaseException:
            self._shutdown()
            raise
        self._actor_cls = ray.remote(_ShardWorkerActor)
        self._resources = worker_resources(config)
        self._options = self._resources.actor_options()
        self.workers = config.engine.workers
        self._generations = [0] * self.workers
        # a worker actor starts with the first shard sent to it: a rerun with every shard finished starts
        # none, and a resume starts them while the driver checks the finished shards, not before
        self._actors: list[Any] = [None] * self.workers

    def start_workers(self) -> None:
        """Start the worker actors not started yet (they boot in parallel, beside the coordinator)."""
        for index, actor in enumerate(self._actors):
            if actor is None:
                self._actors[index] = self._new_actor(index)

    def _new_actor(self, index: int):
        self._generations[index] += 1
        label = f"ray-{index}.{self._generations[index]}"
        options = {**self._options, "max_concurrency": 1000, "max_restarts": 0}
        return self._actor_cls.options(scheduling_strategy=self._placement(index), **options).remote(
            self._config_json, self._out_dir, self._hash, self.coordinator_handle, label, self._env
        )

    def _placement(self, index: int) -> Any:
        """Worker i goes to the i-th alive node with CPUs and the resources a worker asks for (round robin
        over the nodes alive now, so a lost node's replacement goes to another). SPREAD alone is best effort,
        and so is a soft affinity: either can put every worker on one node."""
        wanted = {"CPU": max(self._resources.num_cpus or 0, 1e-9), "GPU": self._resources.num_gpus or 0,
                  **self._resources.resources}
        nodes = sorted(n["NodeID"] for n in self._ray.nodes()
                       if n.get("Alive") and all(n.get("Resources", {}).get(k, 0) >= v for k, v in wanted.items()
                                                 if v))
        if len(nodes) < 2:
            return "SPREAD"
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return NodeAffinitySchedulingStrategy(node_id=nodes[index % len(nodes)], soft=False)

    async def submit(self, worker: int, shard: int, records: list[VQARecord], exhausted: bool,
                     verify: str | None = None) -> ShardResult | None:
        ray = self._ray
        self.start_workers()
        generation = self._generations[worker]
        try:
            return await self._actors[worker].process.remote(shard, records, exhausted, verify)
        except ray.exceptions.RayActorError as exc:
            raise WorkerLost(
                f"worker {worker} died while processing shard {shard}: {type(exc).__name__}", worker, generation
            ) from None
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise

    async def replace_worker(self, worker: int, generation: int) -> None:
        """Start a fresh actor in slot `worker`, unless the actor that died was already replaced (several
        shards in flight on one dead actor each report the loss)."""
        if self._generations[worker] != generation:
            return
        old = self._actors[worker]
        if old is not None:
            try:
                self._ray.kill(old, no_restart=True)
            except Exception:  # noqa: BLE001 - it is already gone
                pass
        self._actors[worker] = self._new_actor(worker)

    async def stop(self, timeout_s: float) -> int:
        """An orderly stop before the actors are killed: every worker sends nothing new and waits for its calls
        on the wire (bounded by `timeout_s`), whose replies land in the cache. How many calls were awaited."""
        actors = [a for a in self._actors if a is not None]
        if not actors:
            return 0
        refs = [actor.stop.remote(timeout_s) for actor in actors]
        done, _ = await asyncio.wait([asyncio.ensure_future(_awaited(r)) for r in refs], timeout=timeout_s + 5)
        return sum(task.result() for task in done if not task.exception() and isinstance(task.result(), int))

    async def sweep_cache(self) -> bool:
        """The end-of-run cache sweep, its packs spread over the live workers so the driver, whose CPU bounds a
        cluster's size, does not delete ~2.4 files a record itself. A worker's share that fails (gone, or
        another filesystem) is swept here, as are the emptied fan-out folders. Whether it is done."""
        try:
            cache = ResponseCache(RunDir(self._out_dir).cache_fs())
            names = cache.pack_names()
            actors = [a for a in self._actors if a is not None] if names else []
            shares = [names[i::len(actors)] for i in range(len(actors))]
            results = await asyncio.gather(*(_awaited(actor.sweep.remote(share))
                                             for actor, share in zip(actors, shares, strict=True)),
                                           return_exceptions=True)
            left = [name for share, result in zip(shares, results, strict=True)
                    if not isinstance(result, int) for name in share]
            await asyncio.to_thread(cache.sweep, left if actors else None, True)
            return True
        except Exception:  # noqa: BLE001 - the driver sweeps after close
            return False

    async def replica_stats(self) -> dict[str, Any]:
        """Each served backend's replica figures (engine/replicas.py ReplicaPool.stats)."""
        out: dict[str, Any] = {}
        for name, pool in self.pools.items():
            try:
                out[name] = await pool.stats.remote()
            except self._ray.exceptions.RayError:
                out[name] = {"replicas": 0, "live": 0, "utilisation": 0.0}
        return out

    async def close(self) -> None:
        ray = self._ray
        for actor in self._actors:
            if actor is None:
                continue
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        for pool in self.pools.values():
            try:
                await pool.close.remote()
                ray.kill(pool, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        self._shutdown()

    def _shutdown(self) -> None:
        ray = self._ray
        for pool in getattr(self, "pools", {}).values():
            try:
                ray.kill(pool, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        try:
            if self._started:
                ray.shutdown()
            if self._temp_dir:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
        finally:
            self._release_ray()
