"""Whether a run directory is being written now, for readers (audit) that must say their figures are partial:
run.json's status, and whether a live process holds the run's lock. Read-only: unlike RunLock, a reader never
takes over or deletes a lock, stale or not."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

from .lock import STALE_AFTER_S
from .processes import process_alive
from .store import RunDir


@dataclass
class RunActivity:
    status: str | None  # run.json's status: running, finished, interrupted, failed, budget_exhausted
    writer: dict[str, Any] | None  # the live lock holder (pid, host, since), if any

    @property
    def in_progress(self) -> bool:
        return self.writer is not None

    @property
    def note(self) -> str | None:
        """One line for a reader's output when what it read is partial; None for a run at rest."""
        if self.writer is not None:
            since = f", since {self.writer['since']}" if self.writer.get("since") else ""
            return (f"this run is still being written (pid {self.writer.get('pid')} on {self.writer.get('host')}"
                    f"{since}): the figures cover its finished shards so far")
        if self.status == "running":
            return ("this run did not finish (run.json says running, but no live process holds its lock: it was "
                    "killed?): the figures cover its finished shards; run the same synth command to finish it")
        return None


def live_holder(run_dir: RunDir) -> dict[str, Any] | None:
    """The lock's record when a live process holds it (same host: its pid and start time; another host or an
    object store: a heartbeat younger than STALE_AFTER_S), else None."""
    try:
        raw = run_dir.fs.read_bytes(".lock")
        holder = json.loads(raw) if raw else None
    except (OSError, ValueError):
        return None
    if not isinstance(holder, dict):
        return None
    if holder.get("host") == socket.gethostname() and not run_dir.fs.remote:
        try:
            pid = int(holder.get("pid", -1))
        except (TypeError, ValueError):
            return None
        start = holder.get("start")
        alive = process_alive(pid, start if isinstance(start, str) else None)
        return holder if alive else None
    beat = holder.get("heartbeat")
    if not isinstance(beat, (int, float)):
        beat = run_dir.fs.mtime(".lock") or 0.0
    return holder if time.time() - beat < STALE_AFTER_S else None


def run_activity(run_dir: RunDir) -> RunActivity:
    info = run_dir.read_run_json() or {}
    status = info.get("status") if isinstance(info.get("status"), str) else None
    return RunActivity(status=status, writer=live_holder(run_dir))
