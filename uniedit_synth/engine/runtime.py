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
from pathlib import Path
from typing import Any

from ..config import PipelineConfig
from ..errors import UniEditError
from ..records import VQARecord
from .coordinator import Coordinator
from .worker import ShardProcessor

log = logging.getLogger(__name__)

# environment a worker needs that is not a secret (keys reach local workers by inheritance, and on a real
# cluster they are set on the nodes: they are never shipped through Ray's runtime_env, which Ray records)
FORWARDED_ENV_PREFIXES = ("UNIEDIT_",)


def remove_stale_temp_dirs() -> None:
    """Delete Ray temp dirs left by killed runs (named after their driver's pid, which is gone)."""
    for path in Path("/tmp").glob("uniedit-ray-*-*"):
        pid = path.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


class WorkerLost(Exception):
    """A worker process died while holding a shard; the shard is retried on a fresh worker."""


class InlineRuntime:
    kind = "inline"

    def __init__(self, config: PipelineConfig, out_dir: str, pipeline_hash: str, coordinator_args: dict[str, Any]):
        self.coordinator_impl = Coordinator(**coordinator_args)
        self.coordinator = self.coordinator_impl
        self.processor = ShardProcessor(config, out_dir, pipeline_hash, self.coordinator_impl, "inline-0")
        self.workers = 1

    def submit(self, worker: int, shard: int, records: list[VQARecord], exhausted: bool):
        return self.processor.process(shard, records, exhausted)

    async def replace_worker(self, worker: int) -> None:  # pragma: no cover - inline workers do not die alone
        return None

    async def close(self) -> None:
        await self.processor.aclose()


class RemoteCoordinator:
    """Awaitable facade over the coordinator actor, so workers call it like the in-process one."""

    def __init__(self, handle: Any):
        self._handle = handle

    def __getattr__(self, name: str):
        method = getattr(self._handle, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await method.remote(*args, **kwargs)

        return call

    def __reduce__(self):
        return (RemoteCoordinator, (self._handle,))


class _ShardWorkerActor:
    """The body of the Ray actor: one ShardProcessor per actor process, created on first use."""

    def __init__(self, config_json: str, out_dir: str, pipeline_hash: str, coordinator: Any, label: str,
                 env: dict[str, str]):
        os.environ.update(env)
        logging.basicConfig(level=logging.WARNING)
        self._args = (config_json, out_dir, pipeline_hash, coordinator, label)
        self._processor: ShardProcessor | None = None

    async def process(self, shard: int, records: list[VQARecord], exhausted: bool) -> dict[str, Any]:
        if self._processor is None:
            config_json, out_dir, pipeline_hash, coordinator, label = self._args
            config = PipelineConfig.model_validate_json(config_json)
            self._processor = ShardProcessor(config, out_dir, pipeline_hash, RemoteCoordinator(coordinator), label)
        return await self._processor.process(shard, records, exhausted)

    async def pid(self) -> int:
        return os.getpid()


class RayRuntime:
    kind = "ray"

    def __init__(
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
                        log_to_driver=True,
                    )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
                raise UniEditError(f"could not start or join {where}: {str(exc).splitlines()[0]}") from None
            self._started = True
        self.coordinator_handle = (
            ray.remote(Coordinator).options(num_cpus=0, max_concurrency=100_000).remote(**coordinator_args)
        )
        self.coordinator = RemoteCoordinator(self.coordinator_handle)
        self._config_json = config.model_dump_json()
        self._out_dir = out_dir
        self._hash = pipeline_hash
        self._env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
        self._actor_cls = ray.remote(_ShardWorkerActor).options(
            num_cpus=0, max_concurrency=1000, scheduling_strategy="SPREAD", max_restarts=0
        )
        self.workers = config.engine.workers
        self._generation = 0
        self._actors = [self._new_actor(i) for i in range(self.workers)]

    def _new_actor(self, index: int):
        self._generation += 1
        label = f"ray-{index}.{self._generation}"
        return self._actor_cls.remote(
            self._config_json, self._out_dir, self._hash, self.coordinator_handle, label, self._env
        )

    async def submit(self, worker: int, shard: int, records: list[VQARecord], exhausted: bool) -> dict[str, Any]:
        ray = self._ray
        try:
            return await self._actors[worker].process.remote(shard, records, exhausted)
        except ray.exceptions.RayActorError as exc:
            raise WorkerLost(f"worker {worker} died while processing shard {shard}: {type(exc).__name__}") from None
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise

    async def replace_worker(self, worker: int) -> None:
        old = self._actors[worker]
        try:
            self._ray.kill(old, no_restart=True)
        except Exception:  # noqa: BLE001 - it is already gone
            pass
        self._actors[worker] = self._new_actor(worker)

    async def actor_pids(self) -> list[int]:
        return list(await asyncio.gather(*(a.pid.remote() for a in self._actors)))

    async def close(self) -> None:
        ray = self._ray
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        if self._started:
            ray.shutdown()
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
