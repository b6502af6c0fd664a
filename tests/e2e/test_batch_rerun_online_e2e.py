"""A batch run killed with a job in flight and rerun *without* `--batch` (issue 30, item 2): the requests in the
job wait for it (re-attached and polled in the online mode too) and are never sent online, so nothing is paid
twice and the job's results are used. Counted at the fake providers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import uniedit_cmd
from tests.e2e import test_batch_e2e as batch_e2e
from tests.e2e.test_backends_e2e import FAST_RETRY, KEY_ENV, backend_args, rows, synth
from tests.e2e.test_batch_e2e import BATCH, FAST_POLL, GPT_CLASSIFY, job_files, paid_twice

pytestmark = pytest.mark.e2e
fakes = batch_e2e.fakes  # the fake OpenAI and Gemini servers, with the batch tests' scripted usage


def test_sigkill_with_a_job_in_flight_then_a_rerun_without_batch_sends_none_of_its_requests_online(tmp_path, fakes):
    openai_fake, gemini_fake = fakes
    gemini_fake.batch_script(["hold"])  # the edit job stays in progress until released
    out = tmp_path / "run"
    args = ["synth", "--pipeline", "uniedit", "--source", "scenes", "--out", str(out), "--limit", "6",
            "--engine", "inline", "--no-progress", *backend_args("uniedit", openai_fake.base_url,
                                                                 gemini_fake.base_url), *FAST_RETRY, *BATCH]
    proc = subprocess.Popen(uniedit_cmd(*args), env={**os.environ, **KEY_ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            held = [j for j in gemini_fake.jobs.values() if j.outcome == "hold"]
            if held and held[0].polls >= 2 and any(j["stage"] == "edit" for j in job_files(out)):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the edit job was never submitted and polled")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (held,) = [j for j in gemini_fake.jobs.values() if j.outcome == "hold"]
    in_job = len(held.items)
    assert in_job > 0 and not list((out / "data").glob("*.parquet"))
    gemini_fake.release()

    # the rerun: the same command without --batch (every stage online now)
    rerun = synth("uniedit", out, openai_fake, gemini_fake, *FAST_POLL, *GPT_CLASSIFY, records=6)
    assert rerun.returncode == 0, rerun.stderr
    online_edits = [r for r in gemini_fake.requests if not r.batch and r.task == "edit"]
    assert online_edits == [], f"{len(online_edits)} requests of the job in flight were sent online"
    assert len(gemini_fake.jobs) == 1 and held.answered == in_job  # the job's results, no second job
    assert paid_twice(openai_fake, gemini_fake) == []
    edit_job = next(j for j in job_files(out) if j["stage"] == "edit")
    assert edit_job["status"] == "ingested" and edit_job["results"] == in_job
    found = rows(out)
    assert len(found) == 6
    # the judge (after the edit) ran online in the rerun: the edit results reached it
    assert any(r.task == "judge" and not r.batch for r in openai_fake.requests)


@pytest.mark.parametrize("text", ['{"name": "judge-00000-0123456789", "status": "submitted", "stage": "judge", '
                                  '"requests": "many", "owners": {}}', "null", "[1, 2]"])
def test_stats_and_a_rerun_list_a_job_file_of_the_wrong_shape_instead_of_crashing(tmp_path, text):
    from tests.conftest import run_cli

    out = tmp_path / "run"
    args = ("synth", "--engine", "inline", "--limit", "2", "--no-progress", "--out", str(out))
    assert run_cli(*args).returncode == 0
    (out / "batches").mkdir()
    (out / "batches" / "judge-00000-0123456789.json").write_text(text)
    shown = run_cli("stats", str(out))
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert "unreadable job file batches/judge-00000-0123456789.json" in shown.stdout
    again = run_cli(*args)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert json.loads((out / "stats.json").read_text())["batch_jobs"]["unreadable"][0]["file"].endswith(".json")
