"""The run's output directory: lock, run.json, manifest, atomic shard files and stats.json.

Layout (README "Output directory"; RunDir names every path): `run.json`, `manifest.jsonl`,
`data/shard-NNNNN.parquet`, `rejects/shard-NNNNN.parquet`, `attempts/shard-NNNNN.parquet` (judged edits that failed
before a retry: preference negatives), `cache/` (with the call index `cache/index/`), `stats.json`, and `.lock`
while a run holds the directory. A shard file is written to a hidden
temp name, fsynced and renamed, so a reader (or a resumed run) never sees half a shard; the manifest line
is appended only after both of a shard's files are in place.

On object storage (any pyarrow filesystem URI; runfs.py) a file is one upload that becomes visible only when
complete, so the same guarantees hold without renames; what differs: a manifest object per finished shard
(`manifest/shard-NNNNN.<unix-ns>.json`, since an object cannot be appended to), a lock object checked and
then written (no O_EXCL), and no temp files to clean up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..core.config import STAGE_NAMES
from ..core.errors import ConfigChangedError, OutputDirError
from .cache import ResponseCache
from .fs import DISK_ERRNOS, RunFS, as_run_fs, atomic_write_bytes, disk_error
from .lock import RunLock

__all__ = ["DISK_ERRNOS", "RunDir", "RunInfo", "ShardFile", "ShardResult", "atomic_write_bytes",
           "disk_error", "locked", "summarise", "write_shard_table"]

log = logging.getLogger(__name__)

MANIFEST_DIR = "manifest"  # object stores: one manifest object per finished shard
#: temp names of a run's own atomic writes: shard files, and run.json / stats.json in the root
TEMP_OF_SHARD = re.compile(r"\.shard-\d{5,}\.parquet\.[0-9a-f-]+\.tmp")
TEMP_OF_ROOT_FILE = re.compile(r"\.(?:run|stats)\.json\.[0-9a-f-]+\.tmp")


class ShardFile(BaseModel):
    """One file of a finished shard as its manifest line records it."""

    model_config = ConfigDict(extra="allow")

    path: str
    rows: int = Field(ge=0)
    sha256: str = ""
    bytes: int = Field(ge=0)


class ShardResult(BaseModel):
    """One finished shard: a line of manifest.jsonl (or a manifest object). Every reader validates the lines it
    reads with this model, so a line of the wrong shape is reported as such, never a KeyError deep inside."""

    model_config = ConfigDict(extra="allow")  # newer writers may add fields; older readers keep them

    shard: int = Field(ge=0)
    records: int = Field(ge=0)
    ids_sha256: str = ""
    accepted: int = Field(ge=0)
    rejected: int = Field(default=-1, ge=-1)  # -1: not given, records - accepted
    reject_reasons: dict[str, int] = Field(default_factory=dict)
    budget_exhausted: int = Field(default=0, ge=0)
    categories: dict[str, dict[str, int]] = Field(default_factory=dict)
    admitted: dict[str, int] = Field(default_factory=dict)
    funnel: dict[str, dict[str, int]] = Field(default_factory=dict)
    cost_usd: float = 0.0
    calls: dict[str, int] = Field(default_factory=dict)
    cache_hits: dict[str, int] = Field(default_factory=dict)
    spent_usd: float = 0.0
    files: dict[str, ShardFile] = Field(default_factory=dict)
    node: str = "local"
    worker: str = ""
    elapsed_s: float = 0.0
    finished_at: str = ""

    @model_validator(mode="after")
    def _counts_add_up(self) -> ShardResult:
        if self.rejected == -1:
            self.rejected = self.records - self.accepted
        if self.rejected < 0 or self.accepted + self.rejected != self.records:
            raise ValueError(f"accepted {self.accepted} + rejected {self.rejected} != records {self.records}")
        return self


class RunInfo(BaseModel):
    """What a resumed run needs from run.json: the config it was made with (its hash and hashed view)."""

    model_config = ConfigDict(extra="allow")

    pipeline_hash: str
    config_view: dict[str, Any] = Field(default_factory=dict)
    prompt_hashes: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    created_at: str | None = None
    invocations: int = 0


def shard_result(value: Any) -> dict[str, Any]:
    """A manifest entry validated as a ShardResult (as a plain dict); ValueError with a one-line reason."""
    try:
        return ShardResult.model_validate(value).model_dump()
    except ValidationError as exc:
        raise ValueError(_first_problem(exc)) from None


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


#: rows per parquet row group in run shards: a shuffled torch loader reads a whole group per miss
SHARD_ROW_GROUP_ROWS = 16


def write_shard_table(run_dir: Path | RunFS, kind: str, index: int, table: pa.Table) -> dict[str, Any]:
    """Write one shard file atomically; returns its manifest record (path, rows, sha256)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=max(1, min(table.num_rows, SHARD_ROW_GROUP_ROWS)), compression="zstd")
    data = sink.getvalue().to_pybytes()
    rel = f"{kind}/{shard_name(index)}"
    as_run_fs(run_dir).write_bytes(rel, data, fsync=True)
    return {"path": rel, "rows": table.num_rows, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


class RunDir:
    """Every path under a run's output directory, and everything written there except the cache entries
    themselves (engine/cache.py stores those under `cache_fs()`): shard files, the call index, the manifest,
    run.json, stats.json and the lock.

    `path` and the other Path attributes exist for a local directory; a run on a pyarrow filesystem URI
    (runfs.py) has them as None and is reached through `fs` alone."""

    KINDS = ("data", "rejects", "attempts")
    CACHE_DIR = "cache"
    CALL_INDEX_DIR = "cache/index"  # one JSONL file per shard: which cache entries each sample's calls used

    def __init__(self, path: str | os.PathLike[str] | RunFS):
        self.fs = as_run_fs(path)
        self.location = self.fs.location
        self.remote = self.fs.remote
        self.path = self.fs.local_root
        local = self.path is not None
        self.run_json = self.path / "run.json" if local else None
        self.manifest = self.path / "manifest.jsonl" if local else None
        self.stats_json = self.path / "stats.json" if local else None
        self.data_dir = self.path / "data" if local else None
        self.rejects_dir = self.path / "rejects" if local else None
        self.attempts_dir = self.path / "attempts" if local else None
        self.cache_dir = self.path / "cache" if local else None
        self.lock = RunLock(".lock", fs=self.fs)
        self._warned_lines: set[int] = set()

    @property
    def display(self) -> str:
        """Where the run is, safe to print (a URI without keys or query)."""
        return self.fs.display

    def is_run(self) -> bool:
        """Whether anything a run writes first is here (run.json or a manifest)."""
        return (self.fs.exists("run.json") or self.fs.exists("manifest.jsonl")
                or bool(self.fs.list(MANIFEST_DIR, "shard-*.json")))

    # -- opening ---------------------------------------------------------------------------------------
    def create_dirs(self) -> None:
        if self.path is None:
            self._probe_remote()
            return
        try:
            for d in (self.path, self.data_dir, self.rejects_dir, self.attempts_dir, self.cache_dir):
                d.mkdir(parents=True, exist_ok=True)
            ResponseCache(self.cache_fs()).mark_new()  # a new run's cache: no entry under the old keys
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise OutputDirError(
                f"output directory {self.path} is not writable: {exc.strerror or exc}; choose another --out"
            ) from None

    def _probe_remote(self) -> None:
        """Object stores have no folders to create: write and delete a probe, so a missing bucket or missing
        credentials are a clear error before any worker starts."""
        probe = f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self.fs.write_bytes(probe, b"ok")
            self.fs.delete(probe)
        except (OutputDirError, OSError) as exc:
            raise OutputDirError(
                f"output location {self.display} is not writable ({exc}); check that the bucket exists and that "
                "credentials are set in the environment (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), "
                "or choose another --out"
            ) from None

    def clean_temp_files(self) -> int:
        """Remove temp files a killed run left behind (they are never read as shards). Object stores have none:
        an upload cut short never becomes an object."""
        if self.path is None:
            return 0
        removed = 0
        # only the temp names this run's own writes use (fs.atomic_write_bytes: `.<name>.<pid>-<hex>.tmp`) for the
        # files it writes there: a `.*.tmp` of anyone else in the folder is not ours to delete
        own = {d: TEMP_OF_SHARD for d in (self.data_dir, self.rejects_dir, self.attempts_dir)}
        own[self.path] = TEMP_OF_ROOT_FILE
        for d, pattern in own.items():
            for tmp in d.glob(".*.tmp"):
                if pattern.fullmatch(tmp.name) and tmp.is_file():
                    tmp.unlink(missing_ok=True)
                    removed += 1
        if removed:
            log.warning("removed %d leftover temp file(s) from an interrupted run", removed)
        return removed

    def read_run_json(self) -> dict[str, Any] | None:
        """run.json as a dict; None when absent, or (with a warning) unreadable or of the wrong shape."""
        info, problem = self.load_run_json()
        if problem:
            log.warning("%s/run.json %s; ignoring it", self.display, problem)
        return info

    def load_run_json(self) -> tuple[dict[str, Any] | None, str | None]:
        """(run.json validated as RunInfo, None), or (None, what is wrong with it); (None, None) when absent."""
        try:
            raw = self.fs.read_bytes("run.json")
        except OSError as exc:
            return None, f"cannot be read ({exc})"
        if raw is None:
            return None, None
        try:
            value = json.loads(raw)
        except ValueError:
            return None, "is not valid JSON"
        try:
            return RunInfo.model_validate(value).model_dump(), None
        except ValidationError as exc:
            return None, f"is not a uniedit run.json ({_first_problem(exc)})"

    def check_config(
        self, view: dict[str, Any], prompt_hashes: dict[str, str], pipeline_hash: str, force_new_config: bool
    ) -> None:
        """Refuse to continue a run made with another config, unless forced (then start the shards over)."""
        from ..core.config import diff_views

        previous, problem = self.load_run_json()
        if problem:
            # the config the finished shards were made with is unknown: as good as a changed one
            finished = len(self.latest_by_shard())
            if not finished:
                log.warning("%s/run.json %s; no shard is finished, so it is rewritten", self.display, problem)
                return
            if not force_new_config:
                raise ConfigChangedError(
                    f"{self.display}/run.json {problem}, so the config its {finished} finished shard(s) were made "
                    "with is unknown; use --force-new-config to start them over with this config (cached replies "
                    "are reused), or use another --out"
                )
            what = f"run.json {problem}"
        elif not previous or previous.get("pipeline_hash") == pipeline_hash:
            return
        elif not self.latest_by_shard():
            # nothing was finished under the old config (a run that stopped at once: a typo in --source, a
            # missing key), so there is nothing to protect: the new config simply takes over
            log.info("%s: no shard finished under the previous config; using the new one", self.display)
            return
        else:
            changes = diff_views(previous.get("config_view", {}), view)
            old_prompts = previous.get("prompt_hashes", {})
            changes += [f"prompt {name} changed" for name in sorted(set(old_prompts) | set(prompt_hashes))
                        if old_prompts.get(name) != prompt_hashes.get(name)]
            what = "; ".join(changes[:6]) or "pipeline hash differs"
        if not force_new_config:
            raise ConfigChangedError(
                f"{self.display} was made with a different pipeline config ({what}); use --force-new-config "
                "to start its shards over with the new config (cached replies are reused), or use another --out"
            )
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if self.fs.exists("manifest.jsonl"):
            self.fs.move("manifest.jsonl", f"manifest.{stamp}.jsonl")
        for name in self.fs.list(MANIFEST_DIR, "shard-*.json"):
            self.fs.move(f"{MANIFEST_DIR}/{name}", f"{MANIFEST_DIR}.{stamp}/{name}")
        # the cache packs reference the edited images in the shard files: their bytes go back in first, so every
        # paid reply is still reused under the new config
        ResponseCache(self.cache_fs()).materialize()
        for kind in self.KINDS:
            for name in self.fs.list(kind, "shard-*.parquet"):
                self.fs.delete(f"{kind}/{name}")
        log.warning("config changed (%s): starting the shards over; the old manifest is kept as manifest.%s%s",
                    what, stamp, "/" if self.remote else ".jsonl")

    def write_run_json(self, payload: dict[str, Any]) -> None:
        self.fs.write_bytes("run.json", json.dumps(payload, indent=2, sort_keys=True).encode(), fsync=False)

    # -- manifest --------------------------------------------------------------------------------------
    def manifest_entries(self) -> list[dict[str, Any]]:
        """All manifest entries, oldest first: the lines of manifest.jsonl (local), then the objects of
        manifest/ (object stores) in the order of the time in their names.

        A torn last line of manifest.jsonl (killed mid-append) is cut off with a warning."""
        return self._manifest_lines() + self.manifest_objects()

    def _manifest_lines(self) -> list[dict[str, Any]]:
        if self.manifest is None or not self.manifest.exists():
            return []
        raw = self.manifest.read_bytes()
        entries: list[dict[str, Any]] = []
        lines = raw.splitlines(keepends=True)
        good_until = 0
        for number, line in enumerate(lines, 1):
            last = number == len(lines)
            try:
                value = json.loads(line) if line.endswith(b"\n") or not last else None
            except ValueError:
                value = None
            if value is None and last:
                break  # a torn last line: cut off below
            good_until += len(line)
            try:
                entries.append(shard_result(value))
            except ValueError as exc:
                if number not in self._warned_lines:  # the manifest is read several times per command
                    self._warned_lines.add(number)
                    log.warning("manifest.jsonl line %d is not a shard result (%s); ignoring it (a synth run "
                                "redoes that shard)", number, exc)
        if good_until < len(raw):
            log.warning("manifest.jsonl ends with a torn line (interrupted write); ignoring it")
            with contextlib.suppress(OSError), open(self.manifest, "r+b") as fh:
                fh.truncate(good_until)
        return entries

    def manifest_objects(self) -> list[dict[str, Any]]:
        """The entries of manifest/ (a run on object storage), oldest first; read-only."""

        def written_ns(name: str) -> tuple[int, str]:
            stamp = name.rsplit(".", 2)[-2] if name.count(".") >= 2 else ""
            return (int(stamp) if stamp.isdigit() else 0, name)

        entries = []
        for name in sorted(self.fs.list(MANIFEST_DIR, "shard-*.json"), key=written_ns):
            try:
                entries.append(shard_result(json.loads(self.fs.read_bytes(f"{MANIFEST_DIR}/{name}") or b"")))
            except ValueError as exc:  # an upload is all or nothing: this one was not written by us
                log.warning("manifest object %s is unreadable (%s); ignoring it", name, exc)
        return entries

    def latest_by_shard(self) -> dict[int, dict[str, Any]]:
        latest: dict[int, dict[str, Any]] = {}
        for entry in self.manifest_entries():
            latest[int(entry["shard"])] = entry
        # a shard whose rows left the source (run/resume.py withdrawn_entry) is no longer part of the run
        return {shard: entry for shard, entry in latest.items() if not entry.get("withdrawn")}

    def append_manifest(self, result: ShardResult | dict[str, Any]) -> None:
        """Record a finished shard (after its files are in place): a manifest line, or an object."""
        entry = result.model_dump(mode="json") if isinstance(result, ShardResult) else result
        if self.manifest is None:  # no appends on object storage: one object per finished shard
            name = f"{MANIFEST_DIR}/shard-{int(entry['shard']):05d}.{time.time_ns()}.json"
            self.fs.write_bytes(name, json.dumps(entry, sort_keys=True).encode())
            return
        line = json.dumps(entry, sort_keys=True) + "\n"
        try:
            with open(self.manifest, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise disk_error(exc, str(self.manifest)) from None

    def shard_files_intact(self, entry: dict[str, Any]) -> bool:
        """A finished shard counts only while its files exist with the size the manifest recorded."""
        return not self.damaged_files(entry)

    def damaged_files(self, entry: dict[str, Any]) -> list[str]:
        """The files of a finished shard that are missing or not the size the manifest recorded."""
        return [record["path"] for record in entry.get("files", {}).values()
                if self.fs.size(record["path"]) != record["bytes"]]

    # -- stats -----------------------------------------------------------------------------------------
    def write_stats(self, extra: dict[str, Any] | None = None, totals: dict[str, Any] | None = None) -> dict[str, Any]:
        """stats.json: `totals` (stages/totals.py run_totals: with the figures each stage merges itself; by
        default this directory's own totals only) and `extra`."""
        stats = dict(totals) if totals is not None else summarise(list(self.latest_by_shard().values()))
        stats.update(extra or {})
        self.fs.write_bytes("stats.json", json.dumps(stats, indent=2, sort_keys=True).encode(), fsync=False)
        return stats

    # -- shard outputs --------------------------------------------------------------------------------
    def write_shard(self, kind: str, index: int, table: pa.Table) -> dict[str, Any]:
        """Write shard `index` of `kind` (data, rejects, attempts) atomically; its manifest file record."""
        if kind not in self.KINDS:
            raise ValueError(f"unknown shard kind {kind!r}; known: {self.KINDS}")
        return write_shard_table(self.fs, kind, index, table)

    @classmethod
    def call_index_path(cls, shard: int) -> str:
        """The call index of shard `shard`, relative to the run."""
        return f"{cls.CALL_INDEX_DIR}/shard-{shard:05d}.jsonl"

    def write_call_index(self, shard: int, lines: list[str]) -> None:
        self.fs.write_bytes(self.call_index_path(shard), ("\n".join(lines) + "\n").encode(), fsync=False)

    def pack_shard(self, cache: ResponseCache, shard: int, keys: list[str], entry: ShardResult,
                   calls: list[str]) -> None:
        """A final shard's replies into its cache pack, an edited image as a reference to the shard's files
        (`entry`'s), with its call index; on object storage (no packs) the call index is a file of its own."""
        if cache.root is None:
            self.write_call_index(shard, calls)
            return
        cache.pack(shard, keys, [f.path for f in entry.files.values()], ("\n".join(calls) + "\n").encode())
        self.fs.delete(self.call_index_path(shard))  # one an older release wrote

    @classmethod
    def screen_path(cls, shard: int) -> str:
        """`screen/shard-NNNNN.json`: the dedup/decontamination entries that passed in a finished shard."""
        return f"screen/shard-{shard:05d}.json"

    def write_screen(self, shard: int, entries: list[dict[str, Any]]) -> None:
        self.fs.write_bytes(self.screen_path(shard), json.dumps(entries).encode(), fsync=True)

    def read_screen(self, shard: int) -> list[dict[str, Any]] | None:
        """The saved entries of a shard, or None when it has none (or they are unreadable)."""
        raw = self.fs.read_bytes(self.screen_path(shard))
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def cache_fs(self) -> RunFS:
        """The response cache's folder (engine/cache.py ResponseCache takes it)."""
        return self.fs.child(self.CACHE_DIR)

    def shard_files(self, kind: str = "data") -> list[str]:
        """The finished shard files of `kind`, as paths relative to the run (`data/shard-00001.parquet`)."""
        return [f"{kind}/{name}" for name in self.fs.list(kind, "shard-*.parquet")]


def summarise(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the latest manifest entry of every shard: records, by reason, category, stage, node. The
    figures a stage adds to its shards' entries are that stage's to merge (stages/totals.py run_totals)."""
    reasons: Counter = Counter()
    calls: Counter = Counter()
    hits: Counter = Counter()
    nodes: Counter = Counter()
    categories: dict[str, Counter] = {}
    funnel: dict[str, Counter] = {}
    read = accepted = 0
    cost = 0.0
    for e in entries:
        read += e["records"]
        accepted += e["accepted"]
        reasons.update(e.get("reject_reasons", {}))
        calls.update(e.get("calls", {}))
        hits.update(e.get("cache_hits", {}))
        cost += e.get("cost_usd", 0.0)
        nodes[e.get("node", "local")] += 1
        for cat, counts in e.get("categories", {}).items():
            categories.setdefault(cat, Counter()).update(counts)
        for stage, counts in e.get("funnel", {}).items():
            funnel.setdefault(stage, Counter()).update(counts)
    return {
        "shards": len(entries),
        "read": read,
        "accepted": accepted,
        "rejected": read - accepted,
        "reject_reasons": dict(sorted(reasons.items())),
        "categories": {k: dict(v) for k, v in sorted(categories.items())},
        "stages": {
            stage: {**dict(funnel.get(stage, {})), "calls": calls.get(stage, 0), "cache_hits": hits.get(stage, 0)}
            for stage in (*STAGE_NAMES, *sorted(set(funnel) - set(STAGE_NAMES)))
        },
        "cost_usd": round(cost, 8),  # rows and manifest keep 8 decimals: the ledger stays exact
        "shards_by_node": dict(nodes),
    }


@contextlib.contextmanager
def locked(run_dir: RunDir) -> Iterator[RunDir]:
    run_dir.lock.acquire()
    try:
        yield run_dir
    finally:
        run_dir.lock.release()
