"""The batch job files under `<out>/batches/`: their model, how they are read (as input, never trusted), written
(each twice) and summed up for `uniedit stats`.

A job file is what a rerun knows of a provider job it paid for, and a file on disk can be anything by the time it
is read again: cut short by a full disk, edited, replaced, deleted. So every file is validated with `JobFile`
(types, finite numbers, a `name` that is a plain file name equal to the file's own), a file that fails is listed
(`scan`) and never used, and every job is written twice: `batches/<name>.json` and its second record
`batches/.journal/<name>.json`. A rerun that finds one of the two damaged or gone takes the other, so a job in
flight is re-attached to instead of being submitted (and paid) a second time.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .fs import RunFS

log = logging.getLogger(__name__)

JOBS_DIR = "batches"
JOURNAL_DIR = "batches/.journal"
#: a job name is a plain file name (engine/batch.py makes `<stage>-<shard>-<hex>`): nothing that can leave batches/
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
#: a job is in flight until it is ingested or abandoned
DONE = ("ingested", "abandoned")
_RANK = {"submitting": 0, "submitted": 1, "ingested": 2, "abandoned": 2}
_warned: set[tuple[str, str]] = set()  # the driver and the workers read the jobs several times: say it once


def _warn_once(fs: RunFS, message: str, *args: Any) -> None:
    if (fs.location, message % args) not in _warned:
        _warned.add((fs.location, message % args))
        log.warning(message, *args)


class _Finite(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class RequestInfo(_Finite):
    """What reading one request's result needs (engine/batch.py request_info)."""

    kind: Literal["text", "edit"]
    model: str = ""
    images: int = Field(default=0, ge=0)
    schema_id: str | None = Field(default=None, alias="schema")


class JobFile(_Finite):
    """One job file, validated. Unknown keys are kept (a newer writer's); known ones must have their types."""

    name: str
    job_id: str | None = None
    provider: str = ""
    stage: str
    model: str = ""
    shard: int = Field(default=0, ge=0)
    status: Literal["submitting", "submitted", "ingested", "abandoned"]
    submitted_at: str = ""
    submitted_unix: float = Field(default=0.0, ge=0)
    requests: int = Field(ge=0)
    owners: dict[str, str]
    estimated_usd: float = Field(default=0.0, ge=0)
    info: dict[str, RequestInfo] = Field(default_factory=dict)
    schemas: dict[str, Any] = Field(default_factory=dict)
    results: int = Field(default=0, ge=0)
    spent_usd: float = Field(default=0.0, ge=0)
    provider_status: str = ""
    detail: str = ""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not JOB_NAME.match(value):
            raise ValueError(f"job name {value[:60]!r} is not a plain file name")
        return value


def check_name(name: Any) -> str:
    """A job name safe to use as a file name under batches/; ValueError otherwise."""
    if not isinstance(name, str) or not JOB_NAME.match(name):
        raise ValueError(f"refusing job name {str(name)[:60]!r}: a job name is a plain file name")
    return name


def _problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


class JobStore:
    """`<out>/batches/<name>.json`, one per job: provider job id, stage, model, request keys and their payers,
    what reading the results needs, status (submitting → submitted → ingested, or abandoned). Written atomically
    (with its second record) before the submit, with the id before the first poll, and when the job's results
    are in the cache."""

    def __init__(self, out: RunFS):
        self.fs = out

    def _read(self, rel: str, stem: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            blob = self.fs.read_bytes(rel)
        except OSError as exc:
            return None, f"cannot be read ({exc})"
        if blob is None:
            return None, "is gone"
        try:
            value = json.loads(blob)
        except (ValueError, UnicodeDecodeError):
            return None, "is not valid JSON (cut short?)"
        try:
            job = JobFile.model_validate(value)
        except ValidationError as exc:
            return None, f"is not a batch job file ({_problem(exc)})"
        if job.name != stem:
            return None, f"names another job ({job.name!r})"
        data = job.model_dump(by_alias=True)
        try:  # kept unknown keys too: the file is written back as it was read, as valid JSON
            json.dumps(data, allow_nan=False)
        except ValueError:
            return None, "holds a number that is not finite"
        return data, None

    def scan(self) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        """(the jobs, validated; the job files that could not be used, each `{file, problem}`). A job whose
        file is damaged or gone is taken from its second record when that one is whole."""
        files = {name[: -len(".json")] for name in self.fs.list(JOBS_DIR, "*.json")}
        copies = {name[: -len(".json")] for name in self.fs.list(JOURNAL_DIR, "*.json")}
        jobs: list[dict[str, Any]] = []
        unreadable: list[dict[str, str]] = []
        for stem in sorted(files | copies):
            main, problem = self._read(f"{JOBS_DIR}/{stem}.json", stem) if stem in files else (None, "is gone")
            copy, _ = self._read(f"{JOURNAL_DIR}/{stem}.json", stem) if stem in copies else (None, None)
            if main is not None and (copy is None or _RANK[copy["status"]] <= _RANK[main["status"]]):
                jobs.append(main)
                continue
            if copy is not None:
                if problem != "is gone" or main is not None:
                    _warn_once(self.fs, "%s/%s.json %s; using its second record in %s/", JOBS_DIR, stem,
                               problem or "is older than its second record", JOURNAL_DIR)
                jobs.append(copy)
                continue
            if stem in files:
                _warn_once(self.fs, "%s/%s.json %s; ignoring it", JOBS_DIR, stem, problem)
                unreadable.append({"file": f"{JOBS_DIR}/{stem}.json", "problem": problem or ""})
        return jobs, unreadable

    def all(self) -> list[dict[str, Any]]:
        return self.scan()[0]

    def write(self, job: dict[str, Any]) -> None:
        name = check_name(job.get("name"))
        data = json.dumps(job, sort_keys=True, allow_nan=False).encode()
        self.fs.write_bytes(f"{JOBS_DIR}/{name}.json", data, fsync=True, what="the batch job list")
        self.fs.write_bytes(f"{JOURNAL_DIR}/{name}.json", data, fsync=True, what="the batch job list")


def summarise_jobs(jobs: list[dict[str, Any]], unreadable: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Jobs by status and request counts, for `uniedit stats` and stats.json (jobs as `JobStore.scan` gives)."""
    by_status: Counter[str] = Counter(str(j.get("status", "?")) for j in jobs)
    summary: dict[str, Any] = {
        "jobs": len(jobs),
        "by_status": dict(by_status),
        "requests": sum(int(j.get("requests", 0)) for j in jobs),
        "results": sum(int(j.get("results", 0)) for j in jobs),
        "in_flight": sum(1 for j in jobs if j.get("status") not in DONE),
        "spent_usd": round(sum(float(j.get("spent_usd", 0.0)) for j in jobs), 8),
    }
    if unreadable:
        summary["unreadable"] = list(unreadable)
    return summary
