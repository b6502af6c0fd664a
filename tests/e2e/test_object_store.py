"""`uniedit synth --out s3://…` against a real S3 protocol server (moto) on 127.0.0.1: runs, reads, resume, lock."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, run_cli, uniedit_cmd
from tests.e2e.test_synth_e2e import VOLATILE, call_count, one_line_error, read_rows

pytestmark = pytest.mark.e2e

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
FAST = ["--limit", "60", "--shard-size", "20", "--no-progress"]


class S3:
    """A moto S3 server on loopback, a bucket per test, and pyarrow's view of it."""

    def __init__(self, endpoint: str):
        import boto3

        self.endpoint = endpoint
        self.client = boto3.client("s3", endpoint_url=f"http://{endpoint}", region_name="us-east-1",
                                   aws_access_key_id="testing", aws_secret_access_key="testing")
        self.fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1",
                                    access_key="testing", secret_key="testing")

    def bucket(self) -> str:
        name = f"runs-{uuid.uuid4().hex[:10]}"
        self.client.create_bucket(Bucket=name)
        return name

    def uri(self, bucket: str, prefix: str) -> str:
        return f"s3://{bucket}/{prefix}?endpoint_override={self.endpoint}&scheme=http"

    def keys(self, bucket: str, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def rows(self, bucket: str, prefix: str, kind: str) -> dict[str, dict]:
        rows: dict[str, dict] = {}
        for key in self.keys(bucket, f"{prefix}/{kind}/"):
            if key.rsplit("/", 1)[-1].startswith("shard-"):
                for row in pq.read_table(f"{bucket}/{key}", filesystem=self.fs).to_pylist():
                    assert row["id"] not in rows, f"duplicate id {row['id']}"
                    rows[row["id"]] = {k: v for k, v in row.items() if k not in VOLATILE}
        return rows


@pytest.fixture(scope="module")
def s3():
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)  # pyarrow resolves credentials from the environment, here and in workers
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3(f"{host}:{port}")
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli(*args, env={**CREDENTIALS, **(env or {})}, timeout=timeout)


@pytest.mark.ray
def test_synth_to_s3_inline_and_ray_equals_a_local_run(s3: S3, tmp_path: Path):
    local = tmp_path / "local"
    assert cli("synth", "--out", str(local), "--engine", "inline", *FAST).returncode == 0
    bucket = s3.bucket()
    for prefix, engine in (("inline", ["--engine", "inline"]), ("ray", ["--workers", "2"])):
        uri = s3.uri(bucket, f"runs/{prefix}")
        proc = cli("synth", "--out", uri, *engine, *FAST)
        assert proc.returncode == 0, proc.stderr
        assert f"output:  s3://{bucket}/runs/{prefix}/" in proc.stdout and "endpoint_override" not in proc.stdout
        for kind in ("data", "rejects"):
            assert s3.rows(bucket, f"runs/{prefix}", kind) == read_rows(local, kind), (prefix, kind)
        keys = s3.keys(bucket, f"runs/{prefix}/")
        manifest = [k for k in keys if "/manifest/" in k]
        assert len(manifest) == 3 and all(k.endswith(".json") for k in manifest)
        assert not any(k.endswith(("manifest.jsonl", "/.lock")) or k.endswith(".tmp") for k in keys), keys
        assert any("/cache/index/shard-" in k for k in keys) and any(k.endswith(".entry") for k in keys)
        run_json = s3.get(bucket, f"runs/{prefix}/run.json").decode()
        assert "endpoint_override" not in run_json and str(s3.endpoint) not in run_json
        assert json.loads(run_json)["status"] == "finished"

        stats = cli("stats", uri, "--json")
        assert stats.returncode == 0, stats.stderr
        reference = json.loads(cli("stats", str(local), "--json").stdout)
        totals = json.loads(stats.stdout)
        for key in ("read", "accepted", "rejected", "reject_reasons", "categories", "cost_usd", "shards"):
            assert totals[key] == reference[key], key

    uri = s3.uri(bucket, "runs/ray")
    exported, exported_local = tmp_path / "export", tmp_path / "export-local"
    proc = cli("export", uri, "--format", "hf", "--out", str(exported))
    assert proc.returncode == 0, proc.stderr
    assert cli("export", str(local), "--format", "hf", "--out", str(exported_local)).returncode == 0
    summary = json.loads(next(exported.glob("*.json")).read_text())
    summary_local = json.loads(next(exported_local.glob("*.json")).read_text())
    assert summary["rows"] == summary_local["rows"] and summary["run_dir"] == f"s3://{bucket}/runs/ray"

    one_line_error(cli("report", uri), "pass --out")
    report = cli("report", uri, "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "index.html").exists()

    sample_id = next(iter(read_rows(local, "data")))
    shown = cli("inspect", uri, "--id", sample_id, "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["calls_source"].startswith("cache/index/shard-") and info["calls"]
    assert all("missing" not in call["reply"] and "corrupt" not in call["reply"] for call in info["calls"])


SLOW = [
    "--limit", "120", "--shard-size", "20", "--concurrency", "4", "--no-progress",
    "--set", "backends.editor.options.latency_s=0.08",
    "--set", "backends.text.options.latency_s=0.01",
]


@pytest.mark.ray
def test_sigkill_then_rerun_on_s3_resumes_and_pays_nothing_twice(s3: S3, tmp_path: Path):
    reference, ref_log, int_log = tmp_path / "reference", tmp_path / "ref.calls", tmp_path / "int.calls"
    proc = cli("synth", "--out", str(reference), "--engine", "inline", *SLOW, env={"UNIEDIT_CALL_LOG": str(ref_log)})
    assert proc.returncode == 0, proc.stderr

    bucket = s3.bucket()
    uri = s3.uri(bucket, "runs/resume")
    env = {**os.environ, **CREDENTIALS, "UNIEDIT_CALL_LOG": str(int_log)}
    victim = subprocess.Popen(uniedit_cmd("synth", "--out", uri, *SLOW), cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if s3.keys(bucket, "runs/resume/manifest/"):
            break
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed"
    os.killpg(victim.pid, signal.SIGKILL)  # the whole job, Ray workers included, like a preempted machine
    victim.wait()
    settled, last = time.monotonic(), -1
    while time.monotonic() - settled < 1.0 and time.monotonic() < deadline:  # an orphaned worker may linger
        if call_count(int_log) != last:
            settled, last = time.monotonic(), call_count(int_log)
        time.sleep(0.1)
    landed = len(s3.keys(bucket, "runs/resume/manifest/"))
    assert 1 <= landed < 6, landed
    assert s3.keys(bucket, "runs/resume/.lock")  # the killed run's lock is still there
    calls_before = int_log.read_text().splitlines()
    stored = {key.rsplit("/", 1)[-1].removesuffix(".entry") for key in s3.keys(bucket, "runs/resume/cache/")
              if key.endswith(".entry")}

    resumed = cli("synth", "--out", uri, *SLOW, env={"UNIEDIT_CALL_LOG": str(int_log)})
    assert resumed.returncode == 0, resumed.stderr
    assert f"{landed} already done" in resumed.stdout and "stale lock" in resumed.stderr

    for kind in ("data", "rejects"):
        assert s3.rows(bucket, "runs/resume", kind) == read_rows(reference, kind)
    # nothing paid twice: a call is made again only if the kill landed while its reply was being uploaded to
    # the cache (the upload blocks its worker's event loop, so at most one such call per worker); every call
    # whose reply was stored before the kill was served from the cache
    ref_calls, all_calls = Counter(ref_log.read_text().splitlines()), Counter(int_log.read_text().splitlines())
    extra = all_calls - ref_calls
    assert not ref_calls - all_calls and len(calls_before) > 0
    repeated = [line for line in extra if line.split("\t")[-1] in stored]
    assert repeated == [], repeated
    lost_in_flight = sum(extra.values())
    assert lost_in_flight <= 2 and set(extra) <= set(calls_before), extra  # --workers 2 (the default)
    print(f"calls lost in flight: {lost_in_flight}")
    assert call_count(int_log) == call_count(ref_log) + lost_in_flight


def test_lock_object_fresh_heartbeat_refuses_stale_is_taken_over(s3: S3, tmp_path: Path):
    bucket = s3.bucket()
    uri = s3.uri(bucket, "runs/locked")
    args = ["synth", "--out", uri, "--engine", "inline", "-n", "5", "--no-progress"]

    def lock(age_s: float) -> None:
        holder = {"pid": 4242, "host": f"not-{socket.gethostname()}", "since": "2026-01-01T00:00:00",
                  "run_id": "elsewhere", "heartbeat": time.time() - age_s}
        s3.client.put_object(Bucket=bucket, Key="runs/locked/.lock", Body=json.dumps(holder).encode())

    lock(age_s=20)
    one_line_error(cli(*args), "in use by another run (pid 4242 on not-")
    assert not s3.keys(bucket, "runs/locked/manifest/")

    lock(age_s=3600)  # its machine went away an hour ago
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "taking over the lock of pid 4242" in proc.stderr
    assert len(s3.keys(bucket, "runs/locked/manifest/")) == 1 and not s3.keys(bucket, "runs/locked/.lock")

    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/x?endpoint_override={s3.endpoint}&scheme=http"
    one_line_error(cli(*args[:2], missing, *args[3:]), "not writable")
