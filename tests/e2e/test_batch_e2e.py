"""Batch mode end to end: `uniedit synth --pipeline uniedit --batch` against the fakes' batch protocols (OpenAI Files +
Batches, Gemini batchGenerateContent) through the real `openai` and `google-genai` clients.

What is checked: every record ends; every call goes through batch jobs; the run costs half the online run's to
1e-9 with the same accepted rows; a driver SIGKILLed with a job in flight re-attaches to it (no job resubmitted,
no request paid twice, same output); an expired job keeps its done half and resubmits only the rest; failed
validation, item-level errors and a poll answered 500 are survived.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import uniedit_cmd
from tests.e2e.test_backends_e2e import (
    FAST_RETRY,
    GEMINI_KEY,
    KEY_ENV,
    OPENAI_KEY,
    Once,
    about,
    assert_no_key_anywhere,
    backend_args,
    reasons,
    rid,
    rows,
    scripted_usage,
    stats,
    synth,
    task_is,
)
from tests.fakes import FakeGemini, FakeOpenAI

pytestmark = pytest.mark.e2e

STAGES = ("classify", "rewrite", "edit", "judge")
FAST_POLL = [arg for stage in STAGES
             for arg in ("--set", f"stages.{stage}.batch.poll_s=0.02", "--set", f"stages.{stage}.batch.group_s=0.05")]
GPT_CLASSIFY = ["--set", "stages.classify.trust_source_category=false"]  # GPT-4o classifies, as in the paper
BATCH = ["--batch", *FAST_POLL, *GPT_CLASSIFY]


@pytest.fixture
def fakes() -> Iterator[tuple[FakeOpenAI, FakeGemini]]:
    with FakeOpenAI(api_key=OPENAI_KEY) as openai_fake, FakeGemini(api_key=GEMINI_KEY) as gemini_fake:
        scripted_usage(openai_fake, gemini_fake)
        yield openai_fake, gemini_fake


def online_calls(fake: FakeOpenAI | FakeGemini) -> Counter:
    """Model calls sent online (not as batch items, not the batch API's own requests)."""
    return Counter(r.task for r in fake.requests if not r.batch and r.task != "batch-api")


def paid_twice(*fakes: FakeOpenAI | FakeGemini) -> list[str]:
    """Bodies of model requests the fakes answered (billed) more than once."""
    bodies = Counter(
        json.dumps(r.body, sort_keys=True, default=repr)
        for fake in fakes for r in fake.requests if r.task not in ("batch-api",) and r.status == 200
    )
    return [body[:80] for body, n in bodies.items() if n > 1]


def comparable(found: dict[str, dict[str, Any]]) -> dict[str, tuple]:
    return {
        k: (r["accepted"], r["reject_reason"], r["task_category"], r["edit_instruction"], r["score"],
            (r.get("edited_image") or {}).get("bytes"))
        for k, r in found.items()
    }


def job_files(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out / "batches").glob("*.json"))]


def test_batch_run_costs_half_the_online_run_with_the_same_rows(tmp_path, fakes):
    openai_fake, gemini_fake = fakes
    online = synth("uniedit", tmp_path / "online", openai_fake, gemini_fake, *GPT_CLASSIFY,
                   "--shard-size", "3", records=6)
    assert online.returncode == 0, online.stderr
    openai_fake.clear()
    gemini_fake.clear()
    batch = synth("uniedit", tmp_path / "batch", openai_fake, gemini_fake, *BATCH, "--shard-size", "3",
                  records=6, progress=True)
    assert batch.returncode == 0, batch.stderr

    # every record ends, and every model call went through a batch job
    on, off = rows(tmp_path / "online"), rows(tmp_path / "batch")
    assert len(off) == 6 and set(off) == set(on)
    assert online_calls(openai_fake) == {} and online_calls(gemini_fake) == {}
    assert Counter(r.task for r in openai_fake.batch_items) == {"classify": 6, "rewrite": 6, "judge": 6}
    assert Counter(r.task for r in gemini_fake.batch_items) == {"edit": 6}
    # the same accepted rows, at half the money
    assert comparable(off) == comparable(on)
    assert stats(tmp_path / "batch")["cost_usd"] == pytest.approx(0.5 * stats(tmp_path / "online")["cost_usd"],
                                                                 abs=1e-9)
    for key, row in off.items():
        assert row["cost_usd"] == pytest.approx(0.5 * on[key]["cost_usd"], abs=1e-9)
    jobs = job_files(tmp_path / "batch")
    assert {j["status"] for j in jobs} == {"ingested"} and sum(j["requests"] for j in jobs) == 24
    assert stats(tmp_path / "batch")["batch_jobs"]["jobs"] == len(jobs)
    assert "provider-bound" in batch.stderr or "batch=" in batch.stderr  # the progress bar shows the jobs
    stats_text = subprocess.run(uniedit_cmd("stats", str(tmp_path / "batch")), capture_output=True, text=True,
                                env={**os.environ}).stdout
    assert f"batch jobs: {len(jobs)} (ingested {len(jobs)}); 24 requests, 24 answered" in stats_text


def test_sigkill_with_a_job_in_flight_reattaches_and_pays_nothing_twice(tmp_path, fakes):
    openai_fake, gemini_fake = fakes
    # the reference: an uninterrupted batch run
    reference = synth("uniedit", tmp_path / "reference", openai_fake, gemini_fake, *BATCH, records=6)
    assert reference.returncode == 0, reference.stderr
    reference_jobs = len(openai_fake.jobs) + len(gemini_fake.jobs)
    openai_fake.clear()
    gemini_fake.clear()

    gemini_fake.batch_script(["hold"])  # the edit job stays in progress until released
    out = tmp_path / "run"
    args = ["synth", "--pipeline", "uniedit", "--source", "scenes", "--out", str(out), "--limit", "6",
            "--engine", "inline", "--no-progress", *backend_args("uniedit", openai_fake.base_url,
                                                                 gemini_fake.base_url), *FAST_RETRY, *BATCH]
    env = {**os.environ, **KEY_ENV}
    proc = subprocess.Popen(uniedit_cmd(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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
    jobs_before = len(openai_fake.jobs) + len(gemini_fake.jobs)
    assert not (out / "data").exists() or not list((out / "data").glob("*.parquet"))
    gemini_fake.release()

    rerun = synth("uniedit", out, openai_fake, gemini_fake, *BATCH, records=6)
    assert rerun.returncode == 0, rerun.stderr
    # 0 jobs resubmitted: the rerun created only the jobs that came after the held one (judge)
    new_jobs = len(openai_fake.jobs) + len(gemini_fake.jobs) - jobs_before
    assert len(gemini_fake.jobs) == 1 and new_jobs == reference_jobs - jobs_before
    assert paid_twice(openai_fake, gemini_fake) == []
    files = job_files(out)
    assert len({j["job_id"] for j in files}) == len(files) == reference_jobs
    assert comparable(rows(out)) == comparable(rows(tmp_path / "reference"))
    assert stats(out)["cost_usd"] == pytest.approx(stats(tmp_path / "reference")["cost_usd"], abs=1e-9)


def test_expired_job_keeps_its_done_half_and_resubmits_only_the_rest(tmp_path, fakes):
    openai_fake, gemini_fake = fakes
    gemini_fake.batch_script(["expire_half"])
    out = tmp_path / "run"
    proc = synth("uniedit", out, openai_fake, gemini_fake, *BATCH, records=6)
    assert proc.returncode == 0, proc.stderr
    first, second = sorted(gemini_fake.jobs.values(), key=lambda j: j.id)
    assert first.state == "expired" and first.answered == 3 and len(first.items) == 6
    keys_of = lambda job: {item["metadata"]["key"] for item in job.items}  # noqa: E731
    done = {first.items[i]["metadata"]["key"] for i, _, _ in first.results}
    assert keys_of(second) == keys_of(first) - done and len(second.items) == 3
    assert paid_twice(openai_fake, gemini_fake) == []
    found = rows(out)
    assert len(found) == 6 and all(r["accepted"] for r in found.values())
    statuses = Counter(j.get("provider_status") for j in job_files(out) if j["stage"] == "edit")
    assert statuses == {"expired": 1, "completed": 1}
    assert "ended expired: 3 of 6 requests answered" in proc.stderr


def test_failed_validation_item_errors_and_a_500_poll_are_survived(tmp_path, fakes):
    openai_fake, gemini_fake = fakes
    openai_fake.batch_script(["fail_validation"])  # the first (classify) job
    openai_fake.poll_script(["500", "503"])
    bad, flaky = Once(task_is("classify", about(1)), "400"), Once(task_is("rewrite", about(2)), "500")
    openai_fake.script(lambda request: bad(request) or flaky(request))
    out = tmp_path / "run"
    proc = synth("uniedit", out, openai_fake, gemini_fake, *BATCH, records=5)
    assert proc.returncode == 0, proc.stderr
    assert bad.hit and flaky.hit
    found = rows(out)
    assert len(found) == 5
    assert reasons(found) == {"classify_failed": 1} and "HTTP 400" in found[rid(1)]["reject_detail"]
    assert all(found[rid(i)]["accepted"] for i in (0, 2, 3, 4))
    states = Counter(j.state for j in openai_fake.jobs.values())
    # classify again, rewrite, rewrite retry, judge; record 2 (one wave behind) has a judge job of its own
    assert states == {"failed": 1, "completed": 5}
    # the item that failed with a 500 was sent again in a new job; the 400 was final (cached, not resent)
    assert sum(1 for r in openai_fake.batch_items if r.task == "rewrite" and about(2)(r)) == 2
    assert sum(1 for r in openai_fake.batch_items if r.task == "classify" and about(1)(r)) == 1
    assert paid_twice(gemini_fake) == []


def test_gemini_results_from_a_responses_file(tmp_path, fakes):
    openai_fake, gemini_fake = fakes
    gemini_fake.batch_output = "file"
    proc = synth("uniedit", tmp_path / "run", openai_fake, gemini_fake, *BATCH, records=3)
    assert proc.returncode == 0, proc.stderr
    found = rows(tmp_path / "run")
    assert len(found) == 3 and all(r["accepted"] for r in found.values())
    assert len(gemini_fake.batch_items) == 3 and online_calls(gemini_fake) == {}


def test_batch_flag_on_builtin_backends_says_once_that_they_run_online(tmp_path):
    from tests.conftest import run_cli

    out = tmp_path / "run"
    proc = run_cli("synth", "--out", str(out), "--limit", "6", "--engine", "inline", "--no-progress", "--batch")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "batch mode" in line]
    assert len(lines) == 1 and "classify (builtin), rewrite (builtin), edit (builtin), judge (builtin)" in lines[0]
    assert not (out / "batches").exists()
    assert_no_key_anywhere(out, proc.stdout, proc.stderr)


def test_a_cached_reply_shared_by_records_is_paid_once_in_the_run_cost(tmp_path, fakes):
    """Six records with the same image, question and answer (different ids): their calls repeat whenever the
    requests coincide (the classify call always; rewrite, edit and judge for records whose seeded instruction
    plans coincide), and those come from the cache. The run's cost is what the fakes billed; a shared reply is
    in its payer's row only, the others carry it in `attributed_cost_usd`."""
    from tests.e2e.test_backends_e2e import CHAT_USD, EDIT_USD, RECORD_USD
    from uniedit_synth.sources.scenes import ScenesSource

    openai_fake, gemini_fake = fakes
    (tmp_path / "scene.png").write_bytes(ScenesSource(count=1).record(0).image)
    (tmp_path / "vqa.jsonl").write_text("".join(
        json.dumps({"id": f"q{i}", "image": "scene.png", "question": "What colour is the cube?", "answer": "red"})
        + "\n" for i in range(6)))
    out = tmp_path / "run"
    # one call at a time, so a later record finds an earlier one's reply in the cache
    # one sample a record: grouping by image would merge the six (they share scene.png)
    proc = synth("uniedit", out, openai_fake, gemini_fake, *GPT_CLASSIFY, "--source", str(tmp_path / "vqa.jsonl"),
                 "--concurrency", "1", "--set", "source.group_by_image=false", records=6)
    assert proc.returncode == 0, proc.stderr
    edits = sum(1 for r in gemini_fake.requests if r.task == "edit")
    chats = Counter(r.task for r in openai_fake.requests)
    assert chats["classify"] == 1 and edits < 6  # shared replies
    billed = sum(chats.values()) * CHAT_USD + edits * EDIT_USD
    assert stats(out)["cost_usd"] == pytest.approx(billed, abs=1e-9)  # was 6 × RECORD_USD before
    found = rows(out)
    assert sum(r["cost_usd"] for r in found.values()) == pytest.approx(billed, abs=1e-9)
    assert all(r["attributed_cost_usd"] == pytest.approx(RECORD_USD, abs=1e-9) for r in found.values())
    assert max(r["cost_usd"] for r in found.values()) == pytest.approx(RECORD_USD, abs=1e-9)  # the first payer


def test_max_cost_reserves_a_job_before_submitting_and_a_rerun_finishes_without_paying_twice(tmp_path, fakes):
    from tests.e2e.test_backends_e2e import CHAT_USD, EDIT_USD

    openai_fake, gemini_fake = fakes
    out = tmp_path / "run"
    # room for the classify and rewrite jobs (estimated at ~$0.005 a request at batch prices) and for one or
    # two edits (~$0.06 each, reserved before the job goes out): the other records end budget_exhausted
    first = synth("uniedit", out, openai_fake, gemini_fake, *BATCH, "--max-cost", "0.12", records=6)
    assert first.returncode == 3, first.stderr
    assert 0 < len(gemini_fake.batch_items) < 6
    assert stats(out)["cost_usd"] <= 0.12 and reasons(rows(out))["budget_exhausted"] >= 4
    last = synth("uniedit", out, openai_fake, gemini_fake, *BATCH, "--max-cost", "100", records=6)
    assert last.returncode == 0, last.stderr
    assert all(r["accepted"] for r in rows(out).values()) and len(rows(out)) == 6
    assert paid_twice(openai_fake, gemini_fake) == []
    assert stats(out)["cost_usd"] == pytest.approx(0.5 * 6 * (3 * CHAT_USD + EDIT_USD), abs=1e-9)


def test_a_submit_answered_500_is_retried_and_a_lost_reply_does_not_create_a_second_job(tmp_path, fakes):
    openai_fake, gemini_fake = fakes
    openai_fake.submit_script(["500", "500_after"])  # classify: refused once, then created with the reply lost
    gemini_fake.submit_script(["500_after"])  # edit: created, reply lost
    out = tmp_path / "run"
    proc = synth("uniedit", out, openai_fake, gemini_fake, *BATCH, records=3)
    assert proc.returncode == 0, proc.stderr
    assert len(rows(out)) == 3 and all(r["accepted"] for r in rows(out).values())
    assert len(gemini_fake.jobs) == 1 and len(openai_fake.jobs) == 3  # classify, rewrite, judge: one job each
    assert paid_twice(openai_fake, gemini_fake) == []


def test_routes_find_a_job_by_name_through_the_real_clients(fakes, monkeypatch):
    """What re-attaching after a kill during submit relies on: the providers' job lists, read by the SDKs."""
    import asyncio

    from uniedit_synth.backends.base import EditRequest, TextRequest
    from uniedit_synth.backends.registry import create_backend
    from uniedit_synth.core.config import BackendSpec
    from uniedit_synth.core.specs import BatchSpec
    from uniedit_synth.sources.scenes import ScenesSource

    openai_fake, gemini_fake = fakes
    monkeypatch.setenv("UE_E2E_OPENAI_KEY", OPENAI_KEY)
    monkeypatch.setenv("UE_E2E_GEMINI_KEY", GEMINI_KEY)
    text = create_backend("gpt4o", BackendSpec(type="openai", model="gpt-4o", base_url=openai_fake.base_url,
                                               api_key_env="UE_E2E_OPENAI_KEY"), "text")
    editor = create_backend("nano", BackendSpec(type="gemini", model="nano", base_url=gemini_fake.root_url,
                                                api_key_env="UE_E2E_GEMINI_KEY"), "edit")
    image = ScenesSource(count=1).record(0).image

    async def run():
        found = {}
        for backend, kind, request in (
            (text, "text", TextRequest(task="judge", model="gpt-4o", prompt="hi")),
            (editor, "edit", EditRequest(model="nano", instruction="paint it red", image=image)),
        ):
            route = backend.batch_route(kind)
            ids = [await route.submit([("k" * 64, kind, request)], f"job-{i}", BatchSpec()) for i in range(3)]
            found[kind] = (ids, [await route.find(f"job-{i}") for i in range(3)], await route.find("job-9"))
            await backend.aclose()
        return found

    for ids, found, missing in asyncio.run(run()).values():
        assert found == ids and missing is None
    assert text.batch_route("edit") is None  # OpenAI image edits stay online


@pytest.mark.ray
def test_batch_mode_on_ray_workers(tmp_path, fakes):
    """Two Ray actors, each with its own batch runner, writing job files into one run directory."""
    openai_fake, gemini_fake = fakes
    out = tmp_path / "run"
    proc = synth("uniedit", out, openai_fake, gemini_fake, *BATCH, "--engine", "ray", "--workers", "2",
                 "--shard-size", "3", records=6)
    assert proc.returncode == 0, proc.stderr
    assert len(rows(out)) == 6 and all(r["accepted"] for r in rows(out).values())
    assert online_calls(openai_fake) == {} and online_calls(gemini_fake) == {}
    assert paid_twice(openai_fake, gemini_fake) == []
    jobs = job_files(out)
    assert {j["status"] for j in jobs} == {"ingested"} and sum(j["requests"] for j in jobs) == 24
    assert stats(out)["cost_usd"] == pytest.approx(sum(j["spent_usd"] for j in jobs), abs=1e-9)


def test_a_gemini_job_over_the_inline_limit_goes_as_an_uploaded_jsonl_file(fakes, monkeypatch):
    """Batch Mode's input file (File API resumable upload) with the requests in the SDK's own REST form; the
    results come back as a responses file and parse as the inline ones do."""
    import asyncio

    from uniedit_synth.backends.base import EditReply, EditRequest, TextReply, TextRequest
    from uniedit_synth.backends.batch_routes import GeminiBatch
    from uniedit_synth.backends.registry import create_backend
    from uniedit_synth.core.config import BackendSpec
    from uniedit_synth.core.specs import BatchSpec
    from uniedit_synth.engine.batch import request_info
    from uniedit_synth.sources.scenes import ScenesSource

    _, gemini_fake = fakes
    monkeypatch.setenv("UE_E2E_GEMINI_KEY", GEMINI_KEY)
    monkeypatch.setattr(GeminiBatch, "INLINE_LIMIT", 0)  # every job goes as a file
    spec = BackendSpec(type="gemini", model="nano", base_url=gemini_fake.root_url, api_key_env="UE_E2E_GEMINI_KEY")
    editor, text = create_backend("nano", spec, "edit"), create_backend("nano", spec, "text")
    image = ScenesSource(count=1).record(0).image
    edits = [("e" * 63 + str(i), "edit", EditRequest(model="nano", instruction=f"paint {i}", image=image))
             for i in range(2)]
    judge = [("j" * 64, "text", TextRequest(task="judge", model="nano", prompt="score it", images=[image],
                                             response_schema={"type": "object", "properties": {
                                                 "visual_quality": {"type": "integer"}}}))]

    async def run(backend, kind, items):
        route = backend.batch_route(kind)
        job_id = await route.submit(items, f"file-job-{kind}", BatchSpec())
        while (await route.poll(job_id)).state != "completed":
            await asyncio.sleep(0)
        from uniedit_synth.engine.batch import DeferredCall

        info = request_info([DeferredCall(None, k, key, r, "o") for key, k, r in items])
        requests = {key: {**i, "schema": info["schemas"].get(i.get("schema"))} for key, i in info["info"].items()}
        results = await route.results(job_id, requests)
        await backend.aclose()
        return results

    edited = asyncio.run(run(editor, "edit", edits))
    judged = asyncio.run(run(text, "text", judge))
    assert all(isinstance(r.reply, EditReply) and r.reply.image.startswith(b"\x89PNG") for r in edited.values())
    assert set(edited) == {key for key, _, _ in edits}
    assert isinstance(judged["j" * 64].reply, TextReply) and judged["j" * 64].reply.data == {"visual_quality": 4}
    assert len(gemini_fake.uploads) == 2 and all(j.meta["file_input"] for j in gemini_fake.jobs.values())
    assert len(gemini_fake.batch_items) == 3  # answered from the file's lines, as generateContent requests
