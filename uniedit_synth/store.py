"""The run's output directory: lock, run.json, manifest, atomic shard files and stats.json.

Layout (DESIGN §5): `run.json`, `manifest.jsonl`, `data/shard-NNNNN.parquet`, `rejects/shard-NNNNN.parquet`,
`attempts/shard-NNNNN.parquet` (judged edits that failed before a retry: preference negatives), `cache/`, `stats.json`, and `.lock` while a run holds the directory. A shard file is written to a hidden
temp name, fsynced and renamed, so a reader (or a resumed run) never sees half a shard; the manifest line
is appended only after both of a shard's files are in place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import ConfigChangedError, DiskFullError, OutputDirError, RunLockedError

log = logging.getLogger(__name__)

DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # s3://, gs://, hdfs://, file:// (not C:/)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def disk_error(exc: OSError, what: str) -> OutputDirError:
    """Turn an OSError from writing into the right one-line user error."""
    if exc.errno in DISK_ERRNOS:
        return DiskFullError(
            f"cannot write {what}: {os.strerror(exc.errno)}. Free some space (or fix the filesystem) and "
            "run the same command again: finished shards are kept and the run resumes."
        )
    return OutputDirError(f"cannot write {what}: {exc.strerror or exc}")


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise disk_error(exc, str(path)) from None


def write_shard_table(run_dir: Path, kind: str, index: int, table: pa.Table) -> dict[str, Any]:
    """Write one shard file atomically; returns its manifest record (path, rows, sha256)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=max(1, min(table.num_rows, 64)), compression="zstd")
    data = sink.getvalue().to_pybytes()
    rel = f"{kind}/{shard_name(index)}"
    atomic_write_bytes(run_dir / rel, data)
    return {"path": rel, "rows": table.num_rows, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _process_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """`.lock` in the output dir, holding pid, host and process start time. A lock whose process is gone
    (same host) is stale: it is taken over with a warning, so nobody deletes lock files by hand."""

    def __init__(self, path: Path):
        self.path = path
        self.held = False

    def acquire(self) -> None:
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start": _process_start_time(os.getpid()),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._stale():
                    continue
                holder = self._read()
                raise RunLockedError(
                    f"{self.path.parent} is in use by another run (pid {holder.get('pid')} on "
                    f"{holder.get('host')}, since {holder.get('since')}); wait for it to finish or use another --out"
                ) from None
            except OSError as exc:
                raise disk_error(exc, f"lock file {self.path}") from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return
        raise RunLockedError(f"could not take the lock {self.path}; another run keeps taking it")

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _stale(self) -> bool:
        holder = self._read()
        if not holder:
            # empty or torn lock file: its writer died between create and write
            age = time.time() - self.path.stat().st_mtime if self.path.exists() else 999
            if age < 5:
                return False
        elif holder.get("host") != socket.gethostname():
            return False  # cannot check a pid on another machine
        else:
            pid = int(holder.get("pid", -1))
            alive = _pid_alive(pid) and (
                holder.get("start") is None or _process_start_time(pid) == holder.get("start")
            )
            if alive:
                return False
        log.warning(
            "removing a stale lock left by pid %s (process no longer running); resuming", holder.get("pid")
        )
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        return True

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False


class RunDir:
    """Everything a run reads and writes in its output directory, except the cache (engine/cache.py)."""

    def __init__(self, path: str | os.PathLike[str]):
        if URI_SCHEME.match(str(path)):  # `s3://b/x` arrives as `s3:/b/x` once it has been a Path
            raise OutputDirError(
                f"{path}: a run directory must be a filesystem path; object-storage URIs are not supported yet "
                "(the run dir relies on POSIX renames and appends). Use a shared filesystem such as NFS on every "
                "node, or mount the bucket with a FUSE filesystem that supports both (gcsfuse, s3fs), and pass its path"
            )
        self.path = Path(path)
        self.run_json = self.path / "run.json"
        self.manifest = self.path / "manifest.jsonl"
        self.stats_json = self.path / "stats.json"
        self.data_dir = self.path / "data"
        self.rejects_dir = self.path / "rejects"
        self.attempts_dir = self.path / "attempts"
        self.cache_dir = self.path / "cache"
        self.lock = RunLock(self.path / ".lock")

    # -- opening ---------------------------------------------------------------------------------------
    def create_dirs(self) -> None:
        try:
            for d in (self.path, self.data_dir, self.rejects_dir, self.attempts_dir, self.cache_dir):
                d.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise OutputDirError(
                f"output directory {self.path} is not writable: {exc.strerror or exc}; choose another --out"
            ) from None

    def clean_temp_files(self) -> int:
        """Remove temp files a killed run left behind (they are never read as shards)."""
        removed = 0
        for d in (self.data_dir, self.rejects_dir, self.attempts_dir, self.path):
            for tmp in d.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.warning("removed %d leftover temp file(s) from an interrupted run", removed)
        return removed

    def read_run_json(self) -> dict[str, Any] | None:
        if not self.run_json.exists():
            return None
        try:
            return json.loads(self.run_json.read_text())
        except ValueError:
            log.warning("run.json is unreadable; it will be rewritten")
            return None

    def check_config(
        self, view: dict[str, Any], prompt_hashes: dict[str, str], pipeline_hash: str, force_new_config: bool
    ) -> None:
        """Refuse to continue a run made with another config, unless forced (then start the shards over)."""
        from .config import diff_views

        previous = self.read_run_json()
        if not previous or previous.get("pipeline_hash") == pipeline_hash:
            return
        changes = diff_views(previous.get("config_view", {}), view)
        old_prompts = previous.get("prompt_hashes", {})
        changes += [f"prompt {name} changed" for name in sorted(set(old_prompts) | set(prompt_hashes))
                    if old_prompts.get(name) != prompt_hashes.get(name)]
        what = "; ".join(changes[:6]) or "pipeline hash differs"
        if not force_new_config:
            raise ConfigChangedError(
                f"{self.path} was made with a different pipeline config ({what}); use --force-new-config "
                "to start its shards over with the new config (cached replies are reused), or use another --out"
            )
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if self.manifest.exists():
            self.manifest.rename(self.path / f"manifest.{stamp}.jsonl")
        for d in (self.data_dir, self.rejects_dir, self.attempts_dir):
            for f in d.glob("shard-*.parquet"):
                f.unlink()
        log.warning("config changed (%s): starting the shards over; the old manifest is kept as manifest.%s.jsonl",
                    what, stamp)

    def write_run_json(self, payload: dict[str, Any]) -> None:
        atomic_write_bytes(self.run_json, json.dumps(payload, indent=2, sort_keys=True).encode(), fsync=False)

    # -- manifest --------------------------------------------------------------------------------------
    def manifest_entries(self) -> list[dict[str, Any]]:
        """All manifest lines; a torn last line (killed mid-append) is cut off with a warning."""
        if not self.manifest.exists():
            return []
        raw = self.manifest.read_bytes()
        entries: list[dict[str, Any]] = []
        good_until = 0
        offset = 0
        for line in raw.splitlines(keepends=True):
            offset += len(line)
            if not line.endswith(b"\n"):
                break
            try:
                entries.append(json.loads(line))
            except ValueError:
                break
            good_until = offset
        if good_until < len(raw):
            log.warning("manifest.jsonl ends with a torn line (interrupted write); ignoring it")
            with contextlib.suppress(OSError), open(self.manifest, "r+b") as fh:
                fh.truncate(good_until)
        return entries

    def latest_by_shard(self) -> dict[int, dict[str, Any]]:
        latest: dict[int, dict[str, Any]] = {}
        for entry in self.manifest_entries():
            latest[int(entry["shard"])] = entry
        return latest

    def append_manifest(self, entry: dict[str, Any]) -> None:
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
        for record in entry.get("files", {}).values():
            path = self.path / record["path"]
            try:
                if path.stat().st_size != record["bytes"]:
                    return False
            except OSError:
                return False
        return True

    # -- stats -----------------------------------------------------------------------------------------
    def write_stats(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        stats = summarise(list(self.latest_by_shard().values()))
        stats.update(extra or {})
        atomic_write_bytes(self.stats_json, json.dumps(stats, indent=2, sort_keys=True).encode(), fsync=False)
        return stats

    def shard_paths(self, kind: str = "data") -> list[Path]:
        return sorted((self.path / kind).glob("shard-*.parquet"))


def summarise(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the latest manifest entry of every shard: records, by reason, category, stage, node."""
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
            for stage in ("validate", "classify", "rewrite", "edit", "judge")
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
