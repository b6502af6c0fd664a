"""The run directory's lock: one run writes a directory at a time, across processes, hosts and object
stores; a crashed holder's lock is taken over once it is stale (RunLock)."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ..core.errors import OutputDirError, RunLockedError
from .fs import RunFS, disk_error, open_run_fs
from .processes import process_alive, process_start_time

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0  # the lock holder rewrites its heartbeat this often
STALE_AFTER_S = 180.0  # a lock held from another host (or on object storage) with an older heartbeat is stale
class RunLock:
    """`.lock` in the output dir: pid, host, process start time, a run id and a heartbeat (unix time) that the
    holder rewrites every HEARTBEAT_S seconds from a background thread. Nobody deletes lock files by hand:

    - same host: the lock is stale once its process is gone (pid and start time), and is taken over with a
      warning;
    - another host (a preempted VM, another node on NFS): a pid cannot be checked there, so the lock is stale
      once its heartbeat is older than STALE_AFTER_S (a lock without one: its file's mtime).

    A local lock is created with O_EXCL. An object store has no O_EXCL: the lock object is read, written if
    absent or stale, and read back (a second writer in between wins and the first refuses). Two runs that
    start within the same moment can still both pass that check-then-put (a window of one round trip);
    starting two runs on one output location at once is the user error this lock exists to report, not a
    race it can fully settle without conditional writes.
    """

    def __init__(self, path: str | os.PathLike[str], fs: RunFS | None = None):
        if fs is None:  # a local lock file given by its path
            fs = open_run_fs(Path(path).parent)
            path = Path(path).name
        self.fs = fs
        self.name = str(path)
        self.path = fs.local_root / self.name if fs.local_root is not None else fs.display_path(self.name)
        self.run_id = uuid.uuid4().hex
        self.held = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _record(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start": process_start_time(os.getpid()),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "run_id": self.run_id,
            "heartbeat": time.time(),
        }

    def acquire(self) -> None:
        me = self._record()
        for _ in range(3):
            if self.fs.remote:
                taken = self._put_if_free(me)
            else:
                taken = self._create_exclusive(me)
            if taken:
                self.held = True
                self._start_heartbeat(me)
                return
        raise RunLockedError(f"could not take the lock {self.path}; another run keeps taking it")

    def _create_exclusive(self, me: dict[str, Any]) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if self._stale():
                return False
            raise self._locked_error() from None
        except OSError as exc:
            raise disk_error(exc, f"lock file {self.path}") from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        return True

    def _put_if_free(self, me: dict[str, Any]) -> bool:
        if self.fs.exists(self.name) and not self._stale():
            raise self._locked_error()
        self.fs.write_bytes(self.name, json.dumps(me).encode(), what=f"lock object {self.path}")
        if self._read().get("run_id") != self.run_id:
            raise self._locked_error()  # another run wrote its lock between our check and our write
        return True

    def _locked_error(self) -> RunLockedError:
        holder = self._read()
        where = self.fs.local_root if self.fs.local_root is not None else self.fs.display
        return RunLockedError(
            f"{where} is in use by another run (pid {holder.get('pid')} on "
            f"{holder.get('host')}, since {holder.get('since')}); wait for it to finish or use another --out"
        )

    def _read(self) -> dict[str, Any]:
        try:
            holder = json.loads(self.fs.read_bytes(self.name) or b"")
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _stale(self) -> bool:
        holder = self._read()
        if not holder:
            # empty or torn lock file: its writer died between create and write
            mtime = self.fs.mtime(self.name)
            age = time.time() - mtime if mtime is not None else 999
            if age < 5:
                return False
            why = "an empty lock file"
        elif holder.get("host") != socket.gethostname():
            # cannot check a pid on another machine: its heartbeat says whether the run is still alive
            beat = holder.get("heartbeat")
            if not isinstance(beat, (int, float)):
                beat = self.fs.mtime(self.name) or time.time()
            age = time.time() - beat
            if age < STALE_AFTER_S:
                return False
            log.warning(
                "taking over the lock of pid %s on %s: its heartbeat is %.0f s old (limit %.0f s), so that run "
                "is gone (a preempted or killed machine); resuming", holder.get("pid"), holder.get("host"), age,
                STALE_AFTER_S,
            )
            self.fs.delete(self.name)
            return True
        else:
            pid = int(holder.get("pid", -1))
            if process_alive(pid, holder.get("start")):
                return False
            why = f"pid {holder.get('pid')}"
        log.warning("removing a stale lock left by %s (process no longer running); resuming", why)
        self.fs.delete(self.name)
        return True

    # -- heartbeat ---------------------------------------------------------------------------------------
    def _start_heartbeat(self, me: dict[str, Any]) -> None:
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, args=(dict(me),), name="uniedit-lock-heartbeat",
                                      daemon=True)
        self._beat.start()

    def _heartbeat(self, me: dict[str, Any]) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            holder = self._read()
            if holder.get("run_id") != self.run_id:
                log.error("the lock %s was taken over by pid %s on %s; this run no longer holds its output",
                          self.path, holder.get("pid"), holder.get("host"))
                return
            me["heartbeat"] = time.time()
            try:
                self.fs.write_bytes(self.name, json.dumps(me).encode(), what=f"lock {self.path}")
            except OutputDirError as exc:  # a full disk or a network blip: try again at the next beat
                log.warning("could not refresh the lock heartbeat: %s", exc)

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=10)
            self._beat = None
        if self.held:
            if self._read().get("run_id", self.run_id) == self.run_id:
                self.fs.delete(self.name)
            self.held = False
