"""The Python API: `synth` a run, `load_pipeline` a config, `open_run` a finished run as datasets.

    from uniedit_synth import synth, load_pipeline, open_run

    summary = synth(pipeline="default", out="runs/nb", limit=40, overrides={"engine": {"kind": "inline"}})
    run = open_run(summary.out_dir)
    run.accepted          # datasets.Dataset (images decode to PIL)
    run.stats["reject_reasons"]

Errors a user can cause raise a `UniEditError` subclass (ConfigError, SourceError, OutputDirError, …) with a
one-line message; nothing here exits the process. The `uniedit` CLI is a thin layer over these functions.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .core.config import PipelineConfig, deep_merge
from .core.config import load_pipeline as _load_pipeline
from .core.errors import ConfigError, UniEditError
from .run.fs import is_uri

if TYPE_CHECKING:  # datasets is imported only when a Dataset is asked for
    import datasets

    from .engine.driver import RunSummary

__all__ = ["Run", "load_pipeline", "open_run", "synth"]


def load_pipeline(pipeline: str | PipelineConfig = "default", overrides: dict[str, Any] | None = None
                  ) -> PipelineConfig:
    """A validated pipeline config: a built-in name (`default`, `uniedit`, `openai`, `local-vllm`), a path to
    a YAML file, or a config to apply `overrides` (a nested dict, e.g. `{"stages": {"judge": {...}}}`) to."""
    _expect("load_pipeline", "pipeline", pipeline, (str, os.PathLike, PipelineConfig), "a name, a path or a PipelineConfig")
    _expect("load_pipeline", "overrides", overrides, (dict, type(None)), "a nested dict or None")
    if isinstance(pipeline, PipelineConfig):
        if not overrides:
            return pipeline
        from .core.config import parse_pipeline

        return parse_pipeline(pipeline.model_dump(mode="json"), origin=pipeline.name, overrides=overrides)
    return _load_pipeline(str(pipeline), overrides)


def synth(
    pipeline: str | PipelineConfig = "default",
    *,
    source: str | None = None,
    out: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    overrides: dict[str, Any] | None = None,
    force_new_config: bool = False,
    progress: bool = False,
    log_format: str = "text",
    batch: bool = False,
    events: TextIO | None = None,
    force: bool = False,
    verify_source: bool = False,
) -> RunSummary:
    """Run (or resume) a synthesis into `out` (default `runs/<pipeline name>`; a path or a pyarrow filesystem
    URI) and return its summary: counts, reject reasons, cost, calls and the run's paths.

    `progress` shows the tqdm bar on stderr; `log_format="json"` writes one JSON line per finished shard to
    `events` (default stdout) instead.
    `source` and `limit` override the pipeline's; `overrides` is merged over the YAML like `--set`. A run
    stopped by its budget returns normally with `summary.stopped_by_budget` set. `batch=True` is `--batch`:
    every stage whose provider has a batch API sends its calls as batch jobs (half the price; see README).
    `force=True` is `--force`: `out` may be a non-empty folder that is not a run (no file of it is overwritten).
    `verify_source=True` is `--verify-source`: every finished shard's rows are read again and compared.
    """
    from .engine.driver import run_synth

    _expect("synth", "pipeline", pipeline, (str, os.PathLike, PipelineConfig), "a name, a path or a PipelineConfig")
    _expect("synth", "source", source, (str, os.PathLike, type(None)), "a str, a path or None")
    _expect("synth", "out", out, (str, os.PathLike, type(None)), "a str, a path or None")
    _expect("synth", "limit", limit, (int, type(None)), "an int or None")
    _expect("synth", "overrides", overrides, (dict, type(None)), "a nested dict or None")
    for name, flag in (("force_new_config", force_new_config), ("progress", progress), ("batch", batch)):
        _expect("synth", name, flag, (bool,), "True or False")
    _expect("synth", "log_format", log_format, (str,), '"text" or "json"')
    if out is not None and not str(out).strip():
        raise ConfigError("synth(): out is empty; name the run's directory (or leave it out for runs/<name>)")
    flags: dict[str, Any] = {}
    if source is not None:
        flags["source"] = {"spec": os.fspath(source)}
    if limit is not None:
        if limit < 0:
            raise ConfigError(f"limit must be >= 0, not {limit}")
        flags["limit"] = limit
    if batch:
        from .core.config import MODEL_STAGES

        flags["stages"] = {stage: {"mode": "batch"} for stage in MODEL_STAGES}
    config = load_pipeline(pipeline, deep_merge(overrides or {}, flags))
    location = os.fspath(out) if out is not None else str(Path("runs") / config.name)
    if not is_uri(location):
        location = str(Path(location))
    if log_format not in ("text", "json"):
        raise ConfigError(f"log_format must be text or json, not {log_format!r}")
    kwargs = {"force_new_config": force_new_config, "progress": progress, "log_format": log_format,
              "stream": events, "force": force, "verify_source": verify_source}
    if _loop_running():
        # a notebook (Jupyter runs an event loop in this thread): the driver's own loop runs in a thread
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="uniedit-synth") as pool:
            return pool.submit(run_synth, config, location, **kwargs).result()
    return run_synth(config, location, **kwargs)


def _expect(function: str, name: str, value: Any, types: tuple[type, ...], what: str) -> None:
    """A wrong argument type is a ConfigError naming the argument (never a TypeError from deep inside)."""
    if isinstance(value, bool) and bool not in types:  # True is an int to Python, not a limit to a user
        types = ()
    if not isinstance(value, types):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ConfigError(f"{function}(): {name} must be {what}, not {type(value).__name__} ({shown})")


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Run:
    """A run directory (or URI) opened read-only: its accepted and rejected rows as `datasets.Dataset` (the
    Sample schema; `source_image`/`edited_image` decode to PIL images) and its stats.

    The datasets are read into memory (images included); for a run of many thousands of samples, `uniedit
    export --format hf` it and `datasets.load_dataset("parquet", ...)` the export instead."""

    def __init__(self, location: str | os.PathLike[str]):
        from .run.store import RunDir

        _expect("open_run", "location", location, (str, os.PathLike), "a run directory (a str or a path) or a URI")

        self.run_dir = RunDir(str(location))
        if not self.run_dir.is_run():
            raise UniEditError(f"{self.run_dir.display} is not a uniedit run directory (no manifest or run.json)")
        self.location = self.run_dir.location

    def __repr__(self) -> str:
        stats = self.stats
        return f"Run({self.run_dir.display!r}, accepted={stats['accepted']}, rejected={stats['rejected']})"

    @property
    def stats(self) -> dict[str, Any]:
        """Totals over the finished shards (what `uniedit stats --json` prints)."""
        from .stages.totals import run_totals

        return run_totals(list(self.run_dir.latest_by_shard().values()))

    @cached_property
    def run_info(self) -> dict[str, Any]:
        """run.json: the resolved config (no secrets), pipeline hash, versions, status."""
        return self.run_dir.read_run_json() or {}

    @cached_property
    def accepted(self) -> datasets.Dataset:
        return self._dataset(("data",))

    @cached_property
    def rejected(self) -> datasets.Dataset:
        """Rejected records with `reject_reason`; `attempts` adds judged edits that failed before a retry."""
        return self._dataset(("rejects",))

    @cached_property
    def attempts(self) -> datasets.Dataset:
        return self._dataset(("attempts",))

    def _dataset(self, kinds: tuple[str, ...]) -> datasets.Dataset:
        import datasets
        import pyarrow as pa

        from .core.records import SAMPLE_SCHEMA

        tables = []
        for kind in kinds:
            for rel in self.run_dir.shard_files(kind):
                table = self.run_dir.fs.parquet_file(rel).read()
                if table.num_rows:
                    tables.append(table)
        # the parquet schema's `huggingface` metadata makes the image columns decode to PIL
        table = pa.concat_tables(tables, promote_options="default") if tables else SAMPLE_SCHEMA.empty_table()
        return datasets.Dataset(table)


def open_run(location: str | os.PathLike[str]) -> Run:
    """Open a finished (or still running) run for reading; raises UniEditError when it is not a run."""
    return Run(location)
