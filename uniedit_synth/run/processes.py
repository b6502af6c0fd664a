"""Whether the process that left something behind (a run lock, an export's staging dir, a Ray temp dir) still
runs on this machine: the one pid check every such cleanup uses."""

from __future__ import annotations

import os
from pathlib import Path


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), or None where it cannot be read. A lock
    records it beside the pid, so a pid reused by an unrelated process does not keep a dead run's lock."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether process `pid` runs here (and, with `start`, is the same process that recorded that start time).
    A process of another user counts as alive: signal 0 is refused, yet the process exists."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # exists, owned by someone else
    return start is None or process_start_time(pid) == start
