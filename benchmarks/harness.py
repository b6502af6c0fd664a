"""What the benchmarks share for measuring a run from outside: fake provider servers in their own process,
`uniedit synth` as a subprocess, and CPU / RSS sampling of a process tree (psutil).

The fakes run in a separate process so their request handling does not compete with the engine for one
GIL; on a 2-core machine they still compete for CPU, which is why every benchmark reports CPU use too.
Each fake process records what it served (task, model, arrival and reply time on the shared monotonic
clock) and writes it as JSON when it gets SIGTERM.

    python benchmarks/harness.py --serve-fakes --latency 0.2 --dump /tmp/requests.json   # by hand
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
FAKE_KEY = "sk-fake-benchmark-key"


def repo_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: the repo importable, fake keys set, no real keys, no Ray telemetry."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "OPENAI_BASE_URL")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OPENAI_API_KEY"] = FAKE_KEY
    env["GEMINI_API_KEY"] = FAKE_KEY
    env.pop("GOOGLE_API_KEY", None)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.update(extra or {})
    return env


# -- fake servers in a child process -----------------------------------------------------------------------
def serve_fakes(latency: float, dump: Path, openai_port: int, gemini_port: int) -> None:
    """Child mode: start FakeOpenAI and FakeGemini, print their base URLs as one JSON line, serve until
    SIGTERM, then write every request's (task, model, status, started, finished) to `dump`."""
    from tests.fakes import FakeGemini, FakeOpenAI

    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    servers = {
        "openai": FakeOpenAI(latency=latency, port=openai_port).start(),
        "gemini": FakeGemini(latency=latency, port=gemini_port).start(),
    }
    print(json.dumps({name: s.base_url for name, s in servers.items()}), flush=True)
    cpu_start = time.process_time()
    while not done.wait(0.2):
        pass
    rows = []
    for name, server in servers.items():
        for r in server.requests:
            rows.append({"server": name, "task": r.task, "model": r.model, "status": r.status,
                         "started": r.started, "finished": r.finished})
    payload = {"requests": rows, "cpu_s": time.process_time() - cpu_start,
               "max_in_flight": {name: s.max_in_flight for name, s in servers.items()}}
    tmp = dump.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(dump)
    for server in servers.values():
        server.stop()


@dataclass
class FakeProcess:
    openai_url: str
    gemini_url: str
    proc: subprocess.Popen
    dump: Path
    result: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> dict[str, Any]:
        """Stop the fakes and return what they served (see serve_fakes)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.dump.exists():
            self.result = json.loads(self.dump.read_text())
        return self.result


@contextmanager
def fake_servers(workdir: Path, latency: float, openai_port: int = 0, gemini_port: int = 0):
    """Fake OpenAI + Gemini servers in a child process; yields a FakeProcess (call .stop() to read results)."""
    dump = workdir / f"fake-requests-{time.monotonic_ns()}.json"
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve-fakes", "--latency", str(latency),
         "--dump", str(dump), "--openai-port", str(openai_port), "--gemini-port", str(gemini_port)],
        cwd=REPO, env=repo_env(), stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError("the fake servers did not start")
    urls = json.loads(line)
    fakes = FakeProcess(urls["openai"], urls["gemini"], proc, dump)
    try:
        yield fakes
    finally:
        fakes.stop()


# -- CPU sampling of this process ---------------------------------------------------------------------------
#: innermost frames of a thread that waits (a tick there is no thread's CPU)
IDLE_LEAVES = {"wait", "acquire", "select", "poll", "sleep", "get", "_worker", "_wait_for_tstate_lock"}


class CpuSampler:
    """A CPU-time sampler of this process: SIGPROF fires every `interval` s of its CPU time (user + system, all
    threads); each tick is shared among the threads that are not idle and charged to `classify(frame)`, or to
    `idle` when every thread waits. Ticks are proportional to CPU, unlike wall-clock sampling from a thread,
    which only sees the GIL's hand-over points and so over-counts code that blocks in system calls."""

    def __init__(self, classify: Any, idle: Any, interval: float = 0.002) -> None:
        self.classify, self.idle, self.interval = classify, idle, interval
        self.counts: Counter[Any] = Counter()
        self._last: list[tuple[Any, float]] = []
        self._last_end = 0.0

    def __enter__(self) -> CpuSampler:
        signal.signal(signal.SIGPROF, self._tick)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, signal.SIG_DFL)

    def _tick(self, signum: int, frame: Any) -> None:
        # Ticks that come faster than the handler returns (a busy process on a loaded machine: its threads' CPU
        # runs on while the main thread walks the stacks) are charged as the last one was, without walking the
        # stacks again: otherwise the main thread could spend all its time here, and the threads waiting for
        # the GIL with it (seen twice: a benchmark child stuck for its 900 s limit, every image thread parked
        # at the end of an OpenCV call, the main thread in this handler).
        if time.monotonic() - self._last_end < self.interval / 4:
            for key, share in self._last:
                self.counts[key] += share
            self._last_end = time.monotonic()
            return
        main = threading.main_thread().ident
        # no garbage collection inside sys._current_frames(): it holds the interpreter's thread-list lock while it
        # builds its dict, and a collection started there by that allocation waits for the same lock (CPython
        # 3.11; seen: a benchmark child idle at 0 % CPU until its limit, the main thread in gc_collect_main under
        # _PyThread_CurrentFrames)
        collecting = gc.isenabled()
        gc.disable()
        try:
            current = sys._current_frames()
        finally:
            if collecting:
                gc.enable()
        stacks = [f for ident, f in current.items() if ident != main]
        busy = [f for f in [frame, *stacks] if f is not None and f.f_code.co_name not in IDLE_LEAVES]
        self._last = [(self.classify(f), 1 / len(busy)) for f in busy] if busy else [(self.idle, 1.0)]
        for key, share in self._last:
            self.counts[key] += share
        self._last_end = time.monotonic()


# -- process-tree sampling -----------------------------------------------------------------------------------
class TreeSampler:
    """Samples a process and all its descendants every `interval` s: summed RSS (peak kept) and CPU seconds
    (each process's last seen cpu_times, so processes that exited still count)."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.pid = pid
        self.interval = interval
        self.peak_rss = 0
        self.peak_at = 0.0
        self.samples = 0
        self.role_peaks: dict[str, int] = {}
        #: peak RSS of each process by (role, pid): the driver and each worker on their own, so a leak in one
        #: process is not hidden by the fixed memory of the others
        self.process_peaks: dict[tuple[str, int], int] = {}
        self._cpu: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def role(self, proc: psutil.Process) -> str:
        if proc.pid == self.pid:
            return "driver"
        name = proc.name()
        if name.startswith("ray::"):
            return name.split(".")[0].removeprefix("ray::")
        return "ray system" if "ray" in " ".join(proc.cmdline()[:3]) else name

    def sample(self) -> None:
        rss = 0
        roles: dict[str, int] = {}
        for proc in self._tree():
            try:
                with proc.oneshot():
                    mine = proc.memory_info().rss
                    times = proc.cpu_times()
                    self._cpu[(proc.pid, proc.create_time())] = times.user + times.system
                    role = self.role(proc)
            except psutil.Error:
                continue
            rss += mine
            roles[role] = roles.get(role, 0) + mine
            key = (role, proc.pid)
            self.process_peaks[key] = max(self.process_peaks.get(key, 0), mine)
        for role, value in roles.items():
            self.role_peaks[role] = max(self.role_peaks.get(role, 0), value)
        self.samples += 1
        if rss > self.peak_rss:
            self.peak_rss = rss
            self.peak_at = time.monotonic() - self.started

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu.values())


# -- running the CLI -----------------------------------------------------------------------------------------
@dataclass
class SynthResult:
    returncode: int
    wall_s: float
    summary: dict[str, Any]
    shards: list[dict[str, Any]]
    stderr: str
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    role_peaks_mb: dict[str, float] = field(default_factory=dict)
    #: peak RSS (MB) of every process of the tree, by (role, pid)
    process_peaks_mb: dict[tuple[str, int], float] = field(default_factory=dict)


def run_synth(args: list[str], env: dict[str, str] | None = None, sample: bool = True,
              timeout: float = 3600) -> SynthResult:
    """`uniedit synth <args> --log-format json --no-progress` as a subprocess, its process tree sampled."""
    command = [sys.executable, "-m", "uniedit_synth.cli", "synth", *args, "--log-format", "json", "--no-progress"]
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO, env=repo_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    if sample:
        sampler.__enter__()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if sample:
            sampler.__exit__()
    wall = time.monotonic() - started
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    summary = next((e for e in events if e.get("event") == "done"), {})
    shards = [e for e in events if e.get("event") == "shard"]
    if proc.returncode != 0:
        raise RuntimeError(f"uniedit synth failed ({proc.returncode}):\n{stderr[-3000:]}")
    return SynthResult(proc.returncode, wall, summary, shards, stderr,
                       cpu_s=sampler.cpu_s, peak_rss_mb=sampler.peak_rss / 2**20,
                       role_peaks_mb={k: v / 2**20 for k, v in sampler.role_peaks.items()},
                       process_peaks_mb={k: v / 2**20 for k, v in sampler.process_peaks.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-fakes", action="store_true", help="run the fake OpenAI and Gemini servers")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every reply")
    parser.add_argument("--dump", type=Path, default=Path("fake-requests.json"), help="where to write requests")
    parser.add_argument("--openai-port", type=int, default=0)
    parser.add_argument("--gemini-port", type=int, default=0)
    args = parser.parse_args()
    if not args.serve_fakes:  # a helper module, not a benchmark (`make bench` runs every script here)
        parser.print_help()
        return
    serve_fakes(args.latency, args.dump, args.openai_port, args.gemini_port)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
