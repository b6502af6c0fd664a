"""Provider batch jobs for the fake servers: job state, scripted job outcomes, poll faults, a minimum turnaround.

Both fakes (`openai_server.py`: Files + Batches; `gemini_server.py`: batchGenerateContent + batches.get) keep
their jobs here and answer each job's items through their own online handler, so an item is answered (and its
usage computed) exactly as the same request sent online, and the per-request fault script applies to items too.
Every answered item is recorded like an online request, with `RecordedRequest.batch` set to the job id: that is
what tests count as "paid".

Scripting:
  server.batch_script(["fail_validation", "expire_half", "ok"])   outcome of the next jobs, in order (then "ok")
      ok               every item answered, job completed
      fail_validation  the job fails validation: status failed, no item answered
      expire_half      the first half of the items answered, then the job expires (the rest: batch_expired)
      cancel_half      the same, ending cancelled
      hold             the job stays in progress until `release()` (a job in flight across a kill)
  server.poll_script(["500", "ok", "503"])   faults for the next job polls (status reads), in order
  server.submit_script(["500"])              faults for the next job creations; "500_after" creates the job
                                             and then answers 500 (a reply lost on the way back)
  server.batch_polls = 1      polls that see a job in progress before it ends
  server.batch_delay_s = 0.0  seconds a job takes at least (a provider's turnaround, for benchmarks)
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .base import Fault, FaultSpec, expand_script

OUTCOMES = ("ok", "fail_validation", "expire_half", "cancel_half", "hold")


@dataclass
class FakeJob:
    id: str
    items: list[Any]
    outcome: str
    key: str
    created: float = field(default_factory=time.monotonic)
    created_unix: int = field(default_factory=lambda: int(time.time()))
    polls: int = 0
    state: str = "pending"  # pending | running | completed | failed | expired | cancelled
    #: (item index, HTTP status, reply body) of every answered item
    results: list[tuple[int, int, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def done(self) -> bool:
        return self.state in ("completed", "failed", "expired", "cancelled")

    @property
    def answered(self) -> int:
        return len(self.results)


class BatchJobs:
    """Mixed into a FakeServer; the subclass implements `_run_item(job, index, item) -> (status, body)`."""

    batch_polls = 1
    batch_delay_s = 0.0

    def _init_batches(self) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self._job_script: deque[str] = deque()
        self._poll_script: deque[Fault] = deque()
        self._submit_script: deque[Fault] = deque()
        self._job_ids = itertools.count(1)
        self._held = threading.Event()

    def clear(self) -> None:
        """Also forget the jobs and the batch scripts."""
        super().clear()  # type: ignore[misc]
        with self._lock:
            self.jobs.clear()
            self._job_script.clear()
            self._poll_script.clear()
            self._submit_script.clear()
        self._held.clear()

    # -- scripting -------------------------------------------------------------------------------------------
    def batch_script(self, outcomes: Iterable[str]) -> None:
        outcomes = list(outcomes)
        unknown = set(outcomes) - set(OUTCOMES)
        if unknown:
            raise ValueError(f"unknown batch outcome(s) {sorted(unknown)}; known: {OUTCOMES}")
        with self._lock:
            self._job_script = deque(outcomes)

    def poll_script(self, faults: Iterable[FaultSpec]) -> None:
        with self._lock:
            self._poll_script = deque(expand_script(faults))

    def submit_script(self, faults: Iterable[FaultSpec]) -> None:
        with self._lock:
            self._submit_script = deque(expand_script(faults))

    def _submit_fault(self) -> Fault | None:
        with self._lock:
            if self._submit_script:
                fault = self._submit_script.popleft()
                return None if fault.kind == "ok" else fault
        return None

    def release(self) -> None:
        """Let `hold` jobs finish (as "ok") at their next poll."""
        self._held.set()

    @property
    def batch_items(self) -> list[Any]:
        """Recorded requests answered inside batch jobs (what a provider bills)."""
        return [r for r in self.requests if r.batch]

    # -- used by the protocol handlers -------------------------------------------------------------------------
    def _new_job(self, prefix: str, items: list[Any], key: str, **meta: Any) -> FakeJob:
        with self._lock:
            outcome = self._job_script.popleft() if self._job_script else "ok"
            job = FakeJob(id=f"{prefix}{next(self._job_ids):06d}", items=items, outcome=outcome, key=key,
                          meta=meta)
            self.jobs[job.id] = job
        return job

    def _poll_fault(self) -> Fault | None:
        with self._lock:
            if self._poll_script:
                fault = self._poll_script.popleft()
                return None if fault.kind == "ok" else fault
        return None

    def _advance(self, job: FakeJob) -> None:
        """One status read of a job: it moves on (and answers its items when it ends)."""
        with job.lock:
            job.polls += 1
            if job.done:
                return
            if job.outcome == "fail_validation":
                job.state = "failed"
                return
            if job.outcome == "hold" and not self._held.is_set():
                job.state = "running"
                return
            if job.polls <= self.batch_polls or time.monotonic() - job.created < self.batch_delay_s:
                job.state = "running"
                return
            count = len(job.items) if job.outcome in ("ok", "hold") else len(job.items) // 2
            for index, item in enumerate(job.items[:count]):
                status, body = self._run_item(job, index, item)
                job.results.append((index, status, body))
            job.state = {"ok": "completed", "hold": "completed", "expire_half": "expired",
                         "cancel_half": "cancelled"}[job.outcome]

    def _run_item(self, job: FakeJob, index: int, item: Any) -> tuple[int, Any]:
        raise NotImplementedError
