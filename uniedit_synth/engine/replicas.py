"""Model replicas in Ray: a pool actor per served backend that batches requests for its replica actors.

A backend class with a `replica_runner` ("module:Class", e.g. the diffusers editor) is not run inside the shard
workers. The Ray runtime starts one `ReplicaPool` actor per such backend (no CPU reserved: it only routes), and
the pool starts `serve.replicas` `ModelReplica` actors, each asking Ray for the backend's `resources` (a whole
GPU, a fraction of one, custom resources). Shard workers send one request at a time to the pool
(`pool.edit.remote(payload)`); the pool collects requests into batches (up to `max_batch`, waiting at most
`batch_wait_ms` after the first, only requests with the same `batch_key` together) and hands each batch to an
idle replica. A replica that dies (its process or node gone) is replaced and its batch goes back to the front
of the queue, so callers only see a delay. No rate limiter is involved: capacity is the replicas'.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter, deque
from typing import Any

from ..backends.base import BadRequest, Unreachable
from ..core.plugins import load_target

log = logging.getLogger(__name__)

#: fault injection for tests: "<slot>:<generation>:<batches>" makes that replica exit hard when it starts its
#: n-th batch (a process crash, as a lost node or the OOM killer would cause)
FAULT_ENV = "UNIEDIT_FAULT_REPLICA_EXIT"


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    text = f"{type(exc).__name__}: {lines[-1] if lines else ''}".strip()
    return text[:300]


class ModelReplica:
    """The body of one replica actor: a runner (the backend's `replica_runner`) that loads the model in
    `load()` and runs `run(batch)`. A plain (one call at a time) actor: one batch in the model at once."""

    def __init__(self, runner_path: str, spec_json: str, env: dict[str, str], slot: int, generation: int,
                 num_cpus: float):
        os.environ.update(env)
        logging.basicConfig(level=logging.WARNING)
        self._args = (runner_path, spec_json, num_cpus)
        self._slot = slot
        self._generation = generation
        self._batches = 0
        self._runner: Any = None

    def load(self) -> dict[str, Any]:
        import ray

        runner_path, spec_json, num_cpus = self._args
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        runner_cls = load_target(runner_path)
        self._runner = runner_cls(spec_json, device, num_cpus)
        return {"device": device, "node": ray.get_runtime_context().get_node_id()[:12], "pid": os.getpid()}

    def run(self, payloads: list[dict[str, Any]]) -> list[bytes]:
        self._batches += 1
        fault = os.environ.get(FAULT_ENV, "")
        if fault and fault.split(":") == [str(self._slot), str(self._generation), str(self._batches)]:
            os._exit(1)
        return self._runner.run_batch(payloads)


class ReplicaPool:
    """The body of the pool actor (async): the request queue, the batcher of each replica slot, replacement
    of dead replicas and the utilisation figures the progress bar and stats.json show."""

    def __init__(self, label: str, runner_path: str, spec_json: str, serve: dict[str, Any],
                 replica_options: dict[str, Any], env: dict[str, str]):
        logging.basicConfig(level=logging.WARNING)
        self.label = label
        self.runner_path = runner_path
        self.spec_json = spec_json
        self.replicas = int(serve["replicas"])
        self.max_batch = int(serve["max_batch"])
        self.batch_wait_s = float(serve["batch_wait_ms"]) / 1000
        self.max_restarts = int(serve["max_restarts"])
        self.replica_options = replica_options
        self.env = env
        self.queue: deque[tuple[dict[str, Any], asyncio.Future]] = deque()
        self.arrived: asyncio.Event | None = None
        self.actors: list[Any] = [None] * self.replicas
        self.generations = [0] * self.replicas
        self.failures_in_row = [0] * self.replicas
        self.busy_since: list[float | None] = [None] * self.replicas
        self.busy_s = [0.0] * self.replicas
        self.live = [False] * self.replicas
        self.devices: list[dict[str, Any]] = [{}] * self.replicas
        self.batch_sizes: Counter[int] = Counter()
        self.requests = 0
        self.restarts = 0
        self.failed: str | None = None
        self.started_at = time.monotonic()
        self.loops: list[asyncio.Task] = []

    # -- life cycle ----------------------------------------------------------------------------------
    def _new_replica(self, slot: int) -> Any:
        import ray

        self.generations[slot] += 1
        actor_cls = ray.remote(ModelReplica)
        options = {**self.replica_options, "max_restarts": 0, "max_concurrency": 1}
        return actor_cls.options(**options).remote(
            self.runner_path, self.spec_json, self.env, slot, self.generations[slot],
            float(self.replica_options.get("num_cpus") or 1),
        )

    async def _load(self, slot: int) -> None:
        self.actors[slot] = self._new_replica(slot)
        self.devices[slot] = await self.actors[slot].load.remote()
        self.live[slot] = True

    async def start(self) -> dict[str, Any]:
        """Start every replica; return once one has loaded the model (the others join as Ray places them),
        or raise the first load error (a broken model fails every replica alike)."""
        self.arrived = asyncio.Event()
        loads = [asyncio.ensure_future(self._load(slot)) for slot in range(self.replicas)]
        pending = set(loads)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise RuntimeError(_first_line(task.exception()))
            if any(self.live):
                break
        self.loops = [asyncio.ensure_future(self._serve(slot, loads[slot])) for slot in range(self.replicas)]
        self.started_at = time.monotonic()
        return self.stats()

    # -- requests --------------------------------------------------------------------------------------
    async def edit(self, payload: dict[str, Any]) -> bytes:
        if self.failed:
            raise Unreachable(self.failed)
        future = asyncio.get_running_loop().create_future()
        self.queue.append((payload, future))
        self.requests += 1
        assert self.arrived is not None
        self.arrived.set()
        return await future

    async def _next_batch(self) -> list[tuple[dict[str, Any], asyncio.Future]]:
        assert self.arrived is not None
        while not self.queue:
            self.arrived.clear()
            await self.arrived.wait()
        first = self.queue.popleft()
        batch = [first]
        key = first[0].get("batch_key")
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.max_batch:
            for item in list(self.queue):
                if len(batch) >= self.max_batch:
                    break
                if item[0].get("batch_key") == key:
                    self.queue.remove(item)
                    batch.append(item)
            left = deadline - time.monotonic()
            if len(batch) >= self.max_batch or left <= 0:
                break
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout=left)
            except asyncio.TimeoutError:
                pass
        return batch

    async def _serve(self, slot: int, loading: asyncio.Future) -> None:
        try:
            await loading
        except Exception as exc:  # noqa: BLE001 - this slot's first load failed; the pool runs on without it
            if not await self._replace(slot, exc):
                return
        while not self.failed:
            batch = await self._next_batch()
            batch = [(p, f) for p, f in batch if not f.done()]  # callers that gave up
            if batch and not await self._run(slot, batch):
                return  # this slot gave up (its replica kept dying); the others serve on

    async def _timed(self, slot: int, payloads: list[dict[str, Any]]) -> list[bytes]:
        started = time.monotonic()
        self.busy_since[slot] = started
        try:
            return await self.actors[slot].run.remote(payloads)
        finally:
            self.busy_s[slot] += time.monotonic() - started
            self.busy_since[slot] = None

    async def _run(self, slot: int, batch: list[tuple[dict[str, Any], asyncio.Future]]) -> bool:
        """Run one batch on the slot's replica; False when the slot has no replica any more."""
        import ray

        try:
            replies = await self._timed(slot, [p for p, _ in batch])
        except ray.exceptions.RayActorError as exc:
            # the replica died: its batch goes back to the front of the queue, a fresh replica takes the slot
            self.queue.extendleft(reversed(batch))
            assert self.arrived is not None
            self.arrived.set()
            log.warning("%s: replica %d died (%s); replacing it", self.label, slot, type(exc).__name__)
            return await self._replace(slot, exc)
        except Exception as exc:  # noqa: BLE001 - the model raised for this batch (bad input, out of memory)
            if len(batch) > 1:
                for item in batch:  # one at a time, so only the request that fails is refused
                    if not await self._run(slot, [item]):
                        return False
                return True
            for _, future in batch:
                if not future.done():
                    future.set_exception(BadRequest(f"{self.label}: {_first_line(exc)}"))
            return True
        self.failures_in_row[slot] = 0
        self.batch_sizes[len(batch)] += 1
        for (_, future), reply in zip(batch, replies, strict=True):
            if not future.done():
                future.set_result(reply)
        return True

    async def _replace(self, slot: int, exc: BaseException) -> bool:
        import ray

        self.live[slot] = False
        while True:
            self.failures_in_row[slot] += 1
            if self.failures_in_row[slot] > self.max_restarts:
                if not any(self.live):
                    self._fail(f"{self.label}: replica {slot} failed {self.failures_in_row[slot]} times in a row "
                               f"({_first_line(exc)}) and no replica is left")
                return False
            self.restarts += 1
            old = self.actors[slot]
            if old is not None:
                try:
                    ray.kill(old, no_restart=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            try:
                await self._load(slot)
                return True
            except Exception as new_exc:  # noqa: BLE001 - try again, up to max_restarts
                exc = new_exc

    def _fail(self, message: str) -> None:
        self.failed = message
        while self.queue:
            _, future = self.queue.popleft()
            if not future.done():
                future.set_exception(Unreachable(message))

    # -- figures -----------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        busy = [s + (now - b if b is not None else 0.0) for s, b in zip(self.busy_s, self.busy_since, strict=True)]
        elapsed = max(now - self.started_at, 1e-9)
        return {
            "replicas": self.replicas,
            "live": sum(self.live),
            "busy_now": sum(1 for b in self.busy_since if b is not None),
            "utilisation": round(sum(busy) / (elapsed * self.replicas), 4),
            "requests": self.requests,
            "queued": len(self.queue),
            "batches": sum(self.batch_sizes.values()),
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "restarts": self.restarts,
            "devices": [d.get("device", "") for d in self.devices],
        }

    async def close(self) -> None:
        import ray

        for task in self.loops:
            task.cancel()
        for actor in self.actors:
            if actor is not None:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # noqa: BLE001
                    pass


# -- the driver's side ---------------------------------------------------------------------------------------
def served_backends(config: Any) -> dict[str, str]:
    """backend name -> its replica runner, for the backends the stages use that are served by replicas."""
    from ..backends.plugin_guard import optional
    from ..backends.registry import backend_class
    from .worker import CAPABILITY

    served: dict[str, str] = {}
    for stage_name, capability in CAPABILITY.items():
        name = getattr(config.stages, stage_name).backend
        runner = optional(backend_class(name, config.backends[name], capability), "replica_runner")
        if isinstance(runner, str):
            served[name] = runner
    return served


def check_gpus(name: str, num_gpus: float, ray: Any) -> None:
    """A replica that asks for more GPUs than any node has would wait for ever: refuse it before any call."""
    if not num_gpus:
        return
    largest = max((n.get("Resources", {}).get("GPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=0.0)
    if largest < num_gpus:
        from ..core.errors import BackendConfigError

        have = "no GPU" if not largest else f"at most {largest:g} GPU(s) per node"
        raise BackendConfigError(
            f"backend '{name}': each replica asks for {num_gpus:g} GPU(s) but the Ray cluster has {have}; "
            "join a cluster with GPU nodes (--ray-address) or set resources.num_gpus: 0 to run on CPU"
        )


def start_pools(config: Any, ray: Any, run_token: str, env: dict[str, str]) -> dict[str, Any]:
    """Start the replica pool of every served backend (named so shard workers find it) and wait until each
    has a replica with the model loaded. A load failure is a one-line BackendConfigError."""
    from ..backends.diffusers_backend import pool_name
    from ..core.config import ActorResources, ServeSpec
    from ..core.errors import BackendConfigError

    pools: dict[str, Any] = {}
    for name, runner in served_backends(config).items():
        spec = config.backends[name]
        resources = spec.resources or ActorResources()
        check_gpus(name, resources.num_gpus or 0.0, ray)
        options = resources.actor_options()
        options["num_cpus"] = resources.num_cpus if resources.num_cpus is not None else 1
        serve = (spec.serve or ServeSpec()).model_dump()
        pool = ray.remote(ReplicaPool).options(
            name=pool_name(spec, run_token), num_cpus=0, max_concurrency=100_000, max_restarts=0,
        ).remote(f"{name} ({spec.model})", runner, spec.model_dump_json(), serve, options, env)
        pools[name] = pool
        try:
            ray.get(pool.start.remote())
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None)
            detail = str(cause).strip().splitlines()[0] if isinstance(cause, RuntimeError) and str(cause).strip() \
                else _first_line(exc)
            raise BackendConfigError(f"backend '{name}' ({spec.model}): could not load the model: {detail}") from None
    return pools
