"""SIGTERM under Ray drains (issue 27): the calls on the wire when the signal comes are awaited and cached before
the actors are killed, so the rerun sends none of the requests the provider had already answered."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, uniedit_cmd
from tests.e2e.test_backends_e2e import FAST_RETRY, KEY_ENV, OPENAI_KEY, backend_args, rows, synth
from tests.fakes import FakeOpenAI
from tests.fakes.base import RecordedRequest

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

ARGS = ("--shard-size", "2", "--concurrency", "2", "--workers", "1",
        "--set", "stages.classify.trust_source_category=false")


def request_key(request: RecordedRequest) -> str:
    return request.path + json.dumps(request.body, sort_keys=True, default=repr)


def test_sigterm_waits_for_the_calls_on_the_wire_and_the_rerun_pays_none_again(tmp_path: Path):
    import os

    out = tmp_path / "run"
    with FakeOpenAI(api_key=OPENAI_KEY, latency=1.5) as fake:
        cmd = uniedit_cmd("synth", "--pipeline", "openai", "--source", "scenes", "--out", str(out), "--limit", "6",
                          "--engine", "ray", "--no-progress", *backend_args("openai", fake.base_url), *FAST_RETRY,
                          *ARGS)
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **KEY_ENV})
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline and not any(r.status == 200 for r in fake.requests):
            time.sleep(0.1)
        # one reply has landed, the next calls are on the wire (each takes 1.5 s at the fake)
        time.sleep(0.5)
        in_flight = [r for r in fake.requests if r.status == 0]
        assert proc.poll() is None and in_flight, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 143, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        answered = {request_key(r) for r in fake.requests if r.status == 200}
        assert {request_key(r) for r in in_flight} <= answered  # the fake answered every call that was sent

        fake.latency = 0.0
        fake.clear()
        again = synth("openai", out, fake, None, *ARGS, records=6, engine="ray")
        assert again.returncode == 0, again.stderr[-3000:]
        repeated = answered & {request_key(r) for r in fake.requests}
    assert not repeated, f"{len(repeated)} answered call(s) sent again after SIGTERM"
    assert len(rows(out)) == 6
