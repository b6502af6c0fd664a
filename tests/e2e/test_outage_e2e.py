"""A provider outage is not a reject: the fake servers go unreachable mid-run (their port closes and every open
connection is dropped), the run stops with one line and a non-zero exit, no shard in flight is written as
finished, and a rerun once the server is back finishes every record without paying again for a reply that had
arrived."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.test_backends_e2e import rows, stats, synth
from tests.fakes import FakeGemini, FakeOpenAI
from tests.fakes.base import RecordedRequest

pytestmark = pytest.mark.e2e


def go_down_after(fake: FakeOpenAI | FakeGemini, n: int) -> None:
    """Serve `n` requests, then close the port and drop every request still arriving on open connections."""
    seen = Counter()
    lock = threading.Lock()

    def script(request: RecordedRequest) -> str | None:
        with lock:
            seen["n"] += 1
            if seen["n"] == n + 1:
                threading.Thread(target=fake.stop, daemon=True).start()
            return "drop" if seen["n"] > n else None

    fake.script(script)


def request_key(request: RecordedRequest) -> str:
    """What a request asked for (path and body): the same key twice is the same call made twice."""
    return request.path + json.dumps(request.body, sort_keys=True, default=repr)


@pytest.mark.parametrize("engine", ["inline", "ray"])
def test_unreachable_provider_stops_the_run_and_a_rerun_finishes_it(tmp_path: Path, engine: str):
    out = tmp_path / "run"
    args = ("--shard-size", "2", "--concurrency", "2", "--set", "stages.classify.trust_source_category=false")
    with FakeOpenAI(api_key="sk-outage-test") as fake:
        env = {"UE_E2E_OPENAI_KEY": "sk-outage-test"}
        go_down_after(fake, 11)
        first = synth("openai", out, fake, None, *args, records=8, engine=engine, env=env)
        assert first.returncode not in (0, 3), first.stderr
        assert "Traceback" not in first.stderr
        lines = [line for line in first.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, first.stderr
        assert lines[0].startswith("error: backend 'gpt") and "unreachable" in lines[0], lines[0]
        assert "connection error" in lines[0] and fake.base_url in lines[0], lines[0]
        assert stats(out)["status"] == "failed"
        # a shard written as finished holds only real outcomes: the outage is no record's fault
        written = rows(out)
        assert all(row["accepted"] for row in written.values()), {k: r["reject_reason"] for k, r in written.items()}
        assert len(written) < 8
        answered = {request_key(r) for r in fake.requests if r.status == 200}
        assert answered

        fake.stop()
        fake.clear()
        fake.start()  # back, on the same port
        second = synth("openai", out, fake, None, *args, records=8, engine=engine, env=env)
        assert second.returncode == 0, second.stderr
        assert "base_url changed" not in second.stderr
        again = [request_key(r) for r in fake.requests]
    found = rows(out)
    assert len(found) == 8 and all(row["accepted"] for row in found.values()), Counter(
        r["reject_reason"] for r in found.values()
    )
    assert not answered & set(again), "a reply that had arrived was paid for again"
    assert stats(out)["status"] == "finished"


def test_classify_failure_is_classify_failed(tmp_path: Path):
    out = tmp_path / "run"
    with FakeOpenAI(api_key="sk-classify-test") as fake:
        fake.script(lambda r: "400" if r.task == "classify" else None)
        proc = synth("openai", out, fake, None, "--set", "stages.classify.trust_source_category=false",
                     records=2, env={"UE_E2E_OPENAI_KEY": "sk-classify-test"})
    assert proc.returncode == 0, proc.stderr
    assert Counter(r["reject_reason"] for r in rows(out).values()) == {"classify_failed": 2}


def test_a_changed_endpoint_is_announced(tmp_path: Path):
    out = tmp_path / "run"
    env = {"UE_E2E_OPENAI_KEY": "sk-endpoint-test"}
    with FakeOpenAI(api_key="sk-endpoint-test") as first, FakeOpenAI(api_key="sk-endpoint-test") as second:
        assert synth("openai", out, first, None, records=2, env=env).returncode == 0
        proc = synth("openai", out, second, None, records=2, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "backend 'gpt4o': base_url changed from " + first.base_url in proc.stderr
