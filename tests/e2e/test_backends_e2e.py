"""`uniedit synth` with the real backends, end to end through the engine, against the fake OpenAI and Gemini
servers on 127.0.0.1 (the unmodified `openai` and `google-genai` clients; nothing is mocked in-process).

Every run here also proves that no API key leaks: `synth()` greps the whole output directory (run.json,
manifest, stats, parquet bytes and rows, cache entries) and the captured stdout/stderr for the canary keys.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import REPO, run_cli
from tests.fakes import FakeGemini, FakeOpenAI
from tests.fakes.base import RecordedRequest, b64decode_any
from uniedit_synth.offline.questions import SCENE_CATEGORIES
from uniedit_synth.offline.render import PNG_NEW
from uniedit_synth.sources.scenes import ScenesSource, pin_scene_png

pytestmark = pytest.mark.e2e

CANARY = "canary-7f3a9c2e51d84b06"  # in both keys: found anywhere, a key leaked
OPENAI_KEY = f"sk-{CANARY}-openai"
GEMINI_KEY = f"sk-{CANARY}-gemini"
KEY_ENV = {"UE_E2E_OPENAI_KEY": OPENAI_KEY, "UE_E2E_GEMINI_KEY": GEMINI_KEY}

GPT4O = "gpt-4o-2024-11-20"
NANO_PRO = "gemini-3-pro-image-preview"
# what `--source scenes` reads, in order, its images encoded as a new run of these real-model pipelines pins them
# (run.json scene_png: PNG_NEW's bytes; engine/run_info.py)
RECORDS = [pin_scene_png(ScenesSource(count=16), PNG_NEW).record(i) for i in range(16)]

# retries fast enough for tests; the back-off itself stays (jitter off, so it is predictable)
FAST_RETRY = ["--set", "retry.initial_s=0.05", "--set", "retry.max_s=0.2", "--set", "retry.jitter_s=0"]


# -- fixtures and helpers ---------------------------------------------------------------------------------
@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=OPENAI_KEY) as fake:
        yield fake


@pytest.fixture
def gemini_fake() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=GEMINI_KEY) as fake:
        yield fake


def _point(backend: str, url: str, key_env: str) -> list[str]:
    return [
        "--set",
        f"backends.{backend}.base_url={url}",
        "--set",
        f"backends.{backend}.api_key_env={key_env}",
    ]


def _unlimited(*buckets: str) -> list[str]:
    """Lift the pipeline's production rate limits (an explicit YAML null clears a key)."""
    out: list[str] = []
    for bucket in buckets:
        out += [
            "--set",
            f"limits.rate_limits.{bucket}.rpm=null",
            "--set",
            f"limits.rate_limits.{bucket}.tpm=null",
        ]
    return out


def backend_args(pipeline: str, openai_url: str, gemini_url: str = "") -> list[str]:
    """Point a preset pipeline's backends at the fakes, with keys from env vars named in `api_key_env`."""
    if pipeline == "uniedit":
        return [
            *_point("gpt4o", openai_url, "UE_E2E_OPENAI_KEY"),
            *_point("nano-pro", gemini_url, "UE_E2E_GEMINI_KEY"),
            *_unlimited(f"openai/{GPT4O}", f"gemini/{NANO_PRO}"),
        ]
    if pipeline == "openai":
        return [
            *_point("gpt4o", openai_url, "UE_E2E_OPENAI_KEY"),
            *_point("gpt-image", openai_url, "UE_E2E_OPENAI_KEY"),
            *_unlimited("openai/gpt-4o", "openai/gpt-image-1"),
        ]
    if pipeline == "local-vllm":
        return _point("local", openai_url, "UE_E2E_OPENAI_KEY")
    raise ValueError(pipeline)


def synth(
    pipeline: str,
    out: Path,
    openai_fake: FakeOpenAI,
    gemini_fake: FakeGemini | None,
    *args: str,
    records: int = 4,
    engine: str = "inline",
    progress: bool = False,
    env: dict[str, str] | None = None,
):
    """`uniedit synth` as a subprocess against the fakes; asserts that no key leaked anywhere."""
    gemini_url = gemini_fake.base_url if gemini_fake else ""
    proc = run_cli(
        "synth",
        "--pipeline",
        pipeline,
        "--source",
        "scenes",
        "--out",
        str(out),
        "--limit",
        str(records),
        "--engine",
        engine,
        *([] if progress else ["--no-progress"]),
        *backend_args(pipeline, openai_fake.base_url, gemini_url),
        *FAST_RETRY,
        *args,
        env={**KEY_ENV, **(env or {})},
        timeout=300,  # a bound, not a timing check: a loaded CI host starts Ray slowly
    )
    assert_no_key_anywhere(out, proc.stdout, proc.stderr)
    return proc


def assert_no_key_anywhere(out: Path, *texts: str) -> None:
    for text in texts:
        assert CANARY not in text
    files = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    for path in files:
        assert CANARY.encode() not in path.read_bytes(), f"API key found in {path}"
    for path in (p for p in files if p.suffix == ".parquet"):  # compressed pages: check the decoded rows too
        assert CANARY not in repr(pq.read_table(path).to_pylist()), f"API key found in rows of {path}"


def rows(out: Path) -> dict[str, dict[str, Any]]:
    """Every output row (accepted and rejected) by id."""
    found: dict[str, dict[str, Any]] = {}
    for kind in ("data", "rejects"):
        for path in sorted((out / kind).glob("shard-*.parquet")):
            for row in pq.read_table(path).to_pylist():
                assert row["id"] not in found, f"{row['id']} left the pipeline twice"
                found[row["id"]] = row
    return found


def reasons(found: dict[str, dict[str, Any]]) -> Counter:
    return Counter(r["reject_reason"] for r in found.values() if not r["accepted"])


def stats(out: Path) -> dict[str, Any]:
    return json.loads((out / "stats.json").read_text())


def rid(i: int) -> str:
    return RECORDS[i].id


def text_of(request: RecordedRequest) -> str:
    """All prompt text of a chat or generateContent request (to tell which record a request is for)."""
    body = request.body if isinstance(request.body, dict) else {}
    if "messages" in body:
        parts = []
        for message in body["messages"]:
            content = message.get("content")
            parts += [content] if isinstance(content, str) else [p.get("text", "") for p in content or []]
        return "\n".join(parts)
    if "fields" in body:
        return body["fields"].get("prompt", "")
    return "\n".join(p.get("text", "") for c in body.get("contents", []) for p in c.get("parts", []))


def about(i: int) -> Callable[[RecordedRequest], bool]:
    """Whether a request concerns record i (its question is in the prompt; unique among the first 8)."""
    question = RECORDS[i].question
    return lambda request: question in text_of(request)


def edit_images(fake: FakeGemini) -> list[bytes]:
    out = []
    for request in fake.requests:
        for content in request.body.get("contents", []):
            for part in content.get("parts", []):
                inline = part.get("inlineData") or part.get("inline_data")
                if inline:
                    out.append(b64decode_any(inline["data"]))
    return out


def by_task(fake: FakeOpenAI | FakeGemini) -> Counter:
    return Counter(r.task for r in fake.requests)


class Once:
    """A per-request fault script: `fault` for the first request `match` accepts, normal replies after."""

    def __init__(self, match: Callable[[RecordedRequest], bool], fault: Any, times: int = 1):
        self.match, self.fault, self.left = match, fault, times
        self.hit: list[RecordedRequest] = []
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> Any:
        with self._lock:
            if self.left and self.match(request):
                self.left -= 1
                self.hit.append(request)
                return self.fault
        return None


def task_is(
    task: str, also: Callable[[RecordedRequest], bool] = lambda r: True
) -> Callable[[RecordedRequest], bool]:
    return lambda request: request.task == task and also(request)


# -- 1. the three preset pipelines -------------------------------------------------------------------------
@pytest.mark.parametrize("pipeline", ["uniedit", "openai", "local-vllm"])
def test_preset_pipeline_runs_end_to_end_against_the_fakes(tmp_path, openai_fake, gemini_fake, pipeline):
    out = tmp_path / "run"
    # uniedit: GPT-4o also classifies (not trusting the source's categories), as in the paper
    extra = {
        "uniedit": ["--set", "stages.classify.trust_source_category=false"],
        # the builtin editor errs on purpose (for the offline judge to catch); the fake judge would not
        "local-vllm": ["--set", "backends.editor.options.error_rate=0"],
    }.get(pipeline, [])
    proc = synth(pipeline, out, openai_fake, gemini_fake, "--shard-size", "2", *extra, records=4)
    assert proc.returncode == 0, proc.stderr
    found, totals = rows(out), stats(out)
    assert totals["read"] == 4 and totals["accepted"] + totals["rejected"] == 4 and len(found) == 4
    assert totals["status"] == "finished"
    limits = json.loads((out / "run.json").read_text())["config"]["limits"]["rate_limits"]
    assert all(
        limit == {"rpm": None, "tpm": None} for limit in limits.values()
    )  # `--set ...=null` cleared them

    expected_models = {
        "uniedit": (GPT4O, NANO_PRO, GPT4O),
        "openai": ("gpt-4o", "gpt-image-1", "gpt-4o"),
        "local-vllm": ("Qwen/Qwen2.5-VL-7B-Instruct", "builtin-editor", "Qwen/Qwen2.5-VL-7B-Instruct"),
    }[pipeline]
    for row in found.values():
        assert row["accepted"], (row["id"], row["reject_reason"], row["reject_detail"])
        models = row["models"]
        assert (models["rewriter"], models["editor"], models["judge"]) == expected_models
        versions = (
            json.loads(row["prompt_versions"])
            if isinstance(row["prompt_versions"], str)
            else row["prompt_versions"]
        )
        assert {"rewrite", "edit", "judge"} <= set(versions) and all("@" in v for v in versions.values())
        # no edit program from a real rewriter: no known edit region, so non-edit consistency is not measured
        assert row["scores"] == {
            "instruction_following": 4.0, "visual_quality": 4.0, "coherence": 4.0, "non_edit_consistency": None
        }
        assert row["edited_image"]["bytes"] and row["edited_image"]["bytes"] != row["source_image"]["bytes"]

    openai_models = {r.model for r in openai_fake.requests}
    if pipeline == "uniedit":
        assert by_task(openai_fake) == {"classify": 4, "rewrite": 4, "judge": 4} and openai_models == {GPT4O}
        assert by_task(gemini_fake) == {"edit": 4} and {r.model for r in gemini_fake.requests} == {NANO_PRO}
        assert sorted(edit_images(gemini_fake)) == sorted(RECORDS[i].image for i in range(4))
    elif pipeline == "openai":
        assert by_task(openai_fake) == {"rewrite": 4, "edit": 4, "judge": 4} and not gemini_fake.requests
        assert openai_models == {"gpt-4o", "gpt-image-1"}
    else:
        assert by_task(openai_fake) == {"rewrite": 4, "judge": 4} and not gemini_fake.requests
        # a server without JSON-schema output: json_object mode, the schema travels in the system text
        assert all(r.body["response_format"] == {"type": "json_object"} for r in openai_fake.requests)
    assert all(r.auth_present for r in [*openai_fake.requests, *gemini_fake.requests])


# -- 2. the cost ledger is exact -----------------------------------------------------------------------------
# scripted usage: every chat call reports these tokens, every Gemini edit these (and one output image)
CHAT_USAGE = {"prompt_tokens": 1237, "completion_tokens": 389}
GEMINI_USAGE = {"promptTokenCount": 1511, "candidatesTokenCount": 1303}
# the uniedit.yaml price table, by hand (USD per 1M tokens; per output image)
GPT4O_IN, GPT4O_OUT = 2.50, 10.00
NANO_IN, NANO_OUT, NANO_IMAGE_OUT = 2.00, 12.00, 0.1206
CHAT_USD = 1237 * GPT4O_IN / 1e6 + 389 * GPT4O_OUT / 1e6  # 0.0069825
EDIT_USD = 1511 * NANO_IN / 1e6 + 1303 * NANO_OUT / 1e6 + NANO_IMAGE_OUT  # 0.139258
RECORD_USD = 3 * CHAT_USD + EDIT_USD  # classify, rewrite, judge + one edit


def scripted_usage(openai_fake: FakeOpenAI, gemini_fake: FakeGemini) -> None:
    openai_fake.usage_override = dict(CHAT_USAGE)
    gemini_fake.usage_override = dict(GEMINI_USAGE)


def test_price_table_by_hand_matches_the_pipeline():
    prices = yaml.safe_load((REPO / "pipelines" / "uniedit.yaml").read_text())["prices"]
    assert prices[GPT4O] == {"input_per_mtok": GPT4O_IN, "output_per_mtok": GPT4O_OUT}
    assert prices[NANO_PRO] == {
        "input_per_mtok": NANO_IN,
        "output_per_mtok": NANO_OUT,
        "per_image_out": NANO_IMAGE_OUT,
    }


def test_cost_ledger_is_exact_for_scripted_usage(tmp_path, openai_fake, gemini_fake):
    scripted_usage(openai_fake, gemini_fake)
    # the first classify call fails (a 500 is not billed; its retry is) and record 1's edit is judged too
    # weak: a reject that still carries everything it cost
    weak = {
        "content": {"observed_changes": "a blurred mug", "branch_observed": "not_conditional",
                    "changes_outside_target": False, "instruction_following": 4, "visual_quality": 1,
                    "coherence": 4, "analysis": "blurry"}
    }
    first_classify, weak_judge = Once(task_is("classify"), "500"), Once(task_is("judge", about(1)), weak)
    openai_fake.script(lambda request: first_classify(request) or weak_judge(request))
    out = tmp_path / "run"
    proc = synth(
        "uniedit",
        out,
        openai_fake,
        gemini_fake,
        "--shard-size",
        "2",
        "--set",
        "stages.classify.trust_source_category=false",
        "--set",
        "stages.edit.max_attempts=1",
        records=5,
        progress=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert first_classify.hit and weak_judge.hit
    assert by_task(openai_fake) == {"classify": 6, "rewrite": 5, "judge": 5} and by_task(gemini_fake) == {
        "edit": 5
    }

    total = 5 * RECORD_USD  # 15 chat calls + 5 edits = 0.8010275 USD
    found = rows(out)
    assert reasons(found) == {"low_score": 1} and not found[rid(1)]["accepted"]
    for record_id, row in found.items():
        assert row["cost_usd"] == pytest.approx(RECORD_USD, abs=1e-9), record_id
    assert sum(r["cost_usd"] for r in found.values()) == pytest.approx(total, abs=1e-9)
    assert stats(out)["cost_usd"] == pytest.approx(total, abs=1e-9)
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sum(e["spent_usd"] for e in manifest) == pytest.approx(total, abs=1e-9)
    # the live progress bar (stderr) and the summary (stdout) show the same money
    assert f"$={total:.4f}" in proc.stderr
    assert f"cost ${total:.4f} (this invocation ${total:.4f})" in proc.stdout


# -- 3. --max-cost stops cleanly, and a rerun with a higher budget pays nothing twice -----------------------
def request_bodies(fake: FakeOpenAI | FakeGemini, ok_only: bool = False) -> list[str]:
    return [
        json.dumps(r.body, sort_keys=True, default=repr)
        for r in fake.requests
        if not ok_only or r.status == 200
    ]


def paid(out: Path) -> float:
    """Money actually paid in this output dir: every invocation's manifest lines count what it paid."""
    return sum(json.loads(line)["spent_usd"] for line in (out / "manifest.jsonl").read_text().splitlines())


def test_max_cost_stops_cleanly_and_reruns_finish_without_repeating_a_call(
    tmp_path, openai_fake, gemini_fake
):
    scripted_usage(openai_fake, gemini_fake)
    out = tmp_path / "run"
    # one call in flight per stage at most, so the overshoot past the budget is bounded by one record's calls
    common = [
        "--shard-size",
        "2",
        "--concurrency",
        "1",
        "--set",
        "stages.classify.trust_source_category=false",
    ]
    sent: list[str] = []  # every request body the fakes saw, over all invocations
    paid_for: set[str] = set()  # those that returned a reply
    left = 8
    for budget in (2.5 * RECORD_USD, 4.5 * RECORD_USD, 6.5 * RECORD_USD):
        proc = synth("uniedit", out, openai_fake, gemini_fake, *common, "--max-cost", str(budget), records=8)
        assert proc.returncode == 3, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "stopped by --max-cost" in proc.stderr and "run again with a higher --max-cost" in proc.stderr
        found, totals = rows(out), stats(out)
        assert len(found) == totals["read"] == 8 and totals["status"] == "budget_exhausted"
        assert set(reasons(found)) == {"budget_exhausted"} and 0 < reasons(found)["budget_exhausted"] < left
        left = reasons(found)["budget_exhausted"]
        # it stops starting paid calls at the budget, counting what earlier invocations paid
        assert budget <= paid(out) < budget + RECORD_USD
        again = request_bodies(openai_fake) + request_bodies(gemini_fake)
        assert not paid_for & set(again), "a call that had returned was paid again"
        sent += again
        paid_for |= set(request_bodies(openai_fake, ok_only=True) + request_bodies(gemini_fake, ok_only=True))
        openai_fake.clear()
        gemini_fake.clear()

    last = synth("uniedit", out, openai_fake, gemini_fake, *common, "--max-cost", "100", records=8)
    assert last.returncode == 0, last.stderr
    found, totals = rows(out), stats(out)
    assert len(found) == 8 and totals["accepted"] == 8 and totals["status"] == "finished"
    again = request_bodies(openai_fake) + request_bodies(gemini_fake)
    assert again and not paid_for & set(again), "a call that had returned was paid again"
    sent += again
    # over the four invocations every call of the run was made exactly once, and paid once
    assert len(sent) == len(set(sent)) == 8 * 4
    assert totals["cost_usd"] == pytest.approx(8 * RECORD_USD, abs=1e-9) and paid(out) == pytest.approx(
        8 * RECORD_USD
    )


# -- 4. rate limits are cluster-wide: one worker's 429 pauses every worker; configured rpm holds -------------
# One Ray run (2 workers) serves two tests: the Retry-After pause here, and the category caps (section 10).
IMAGE_INDEX = {record.image: i for i, record in enumerate(RECORDS)}
CATEGORY_OF = {record.question: record.category for record in RECORDS}
assert len(CATEGORY_OF) == len({(r.question, r.category) for r in RECORDS})  # a question names one category
CAPS = ["--set", "stages.classify.category_caps.count=1", "--set", "stages.classify.category_caps.color=1"]
# the later `count` and `color` records of 16: the offline world's categories cycle in SCENE_CATEGORIES order
CAPPED = [rid(i) for i in range(16) if i >= len(SCENE_CATEGORIES) and i % len(SCENE_CATEGORIES) in (0, 1)]


def classify_as_source(request: RecordedRequest) -> Any:
    """The fake classifier answers each record's own category (GPT-4o's job in the paper)."""
    if request.task != "classify":
        return None
    text = text_of(request)
    # the last delimited fields: the system text names the same tags when it explains them
    question = re.findall(r"<vqa_question>(.*?)</vqa_question>", text, re.S)[-1]
    answer = re.findall(r"<vqa_answer>(.*?)</vqa_answer>", text, re.S)[-1]
    return {"content": {"task_category": CATEGORY_OF[question], "process_answer": answer.lower()}}


def source_image(request: RecordedRequest) -> bytes | None:
    """The first input image of a judge (chat), an image edit (multipart) or a Gemini request."""
    body = request.body if isinstance(request.body, dict) else {}
    for message in body.get("messages", []):
        for part in message.get("content") if isinstance(message.get("content"), list) else []:
            if part.get("type") == "image_url":
                return b64decode_any(part["image_url"]["url"].split(",", 1)[1])
    if "files" in body:
        files = body["files"].get("image") or body["files"].get("image[]")
        return files[0]["data"]
    for content in body.get("contents", []):
        for part in content.get("parts", []):
            inline = part.get("inlineData") or part.get("inline_data")
            if inline:
                return b64decode_any(inline["data"])
    return None


def manifest_workers(out: Path) -> dict[int, str]:
    """Record index → the worker that ran its shard."""
    owner = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(line)
        for k in range(entry["records"]):
            owner[entry["shard"] * entry["records"] + k] = entry["worker"]
    return owner


@dataclass
class RayRun:
    out: Path
    proc: Any
    openai_requests: list[RecordedRequest]
    gemini_requests: list[RecordedRequest]
    throttled: RecordedRequest


def record_of(request: RecordedRequest) -> int:
    """Which of RECORDS a request is for: by its image, else by its question and answer."""
    image = source_image(request)
    if image is not None:
        return IMAGE_INDEX[image]
    text = text_of(request)
    return next(i for i, r in enumerate(RECORDS) if r.question in text and r.answer.lower() in text.lower())


# each shard's records get their edits back 0.1, 0.5, 0.9 and 1.3 s after sending them, so judgements keep
# falling due on both workers for a while after any moment
EDIT_SECONDS = (0.1, 0.5, 0.9, 1.3)


class FirstJudgeOnceBothWorkersRewrite:
    """`429, Retry-After: 2` for the first judge call made after rewrites of 3 shards were seen: a worker holds
    at most 2 shards at once, so by then both workers have records between rewrite and judgement."""

    def __init__(self) -> None:
        self.shards: set[int] = set()
        self.throttle = Once(task_is("judge", lambda request: len(self.shards) >= 3), "429:2")

    def __call__(self, request: RecordedRequest) -> Any:
        if request.task == "rewrite":
            self.shards.add(record_of(request) // 4)
        return self.throttle(request) or classify_as_source(request)


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory) -> Iterator[RayRun]:
    """16 records (shards of 4) on 2 Ray workers; one judge call gets `429, Retry-After: 2`."""
    with (
        FakeOpenAI(api_key=OPENAI_KEY, latency=0.02) as openai_fake,
        FakeGemini(api_key=GEMINI_KEY) as gemini_fake,
    ):
        script = FirstJudgeOnceBothWorkersRewrite()
        openai_fake.script(script)
        gemini_fake.script(lambda request: f"slow:{EDIT_SECONDS[record_of(request) % 4]}")
        out = tmp_path_factory.mktemp("ray") / "run"
        proc = synth(
            "uniedit",
            out,
            openai_fake,
            gemini_fake,
            "--workers",
            "2",
            "--shard-size",
            "4",
            "-vv",
            "--set",
            "stages.classify.trust_source_category=false",
            *CAPS,
            records=16,
            engine="ray",
        )
        assert proc.returncode == 0, proc.stderr
        yield RayRun(out, proc, openai_fake.requests, gemini_fake.requests, script.throttle.hit[0])


@pytest.mark.ray
def test_retry_after_from_one_worker_pauses_every_worker(ray_run: RayRun):
    totals = stats(ray_run.out)
    assert (
        totals["read"] == 16
        and totals["accepted"] + totals["rejected"] == 16
        and len(rows(ray_run.out)) == 16
    )
    owner = manifest_workers(ray_run.out)
    assert len(set(owner.values())) == 2, "both workers ran shards"

    throttled = ray_run.throttled
    retried = next(
        r
        for r in ray_run.openai_requests
        if r.started > throttled.started and text_of(r) == text_of(throttled)
    )
    assert retried.started - throttled.finished >= 2 - 0.1, "the throttled call waited out its Retry-After"
    # The coordinator paused the bucket for [p, p + 2] from some p after the 429, and every worker must stop
    # within 1 s of it (the leases' guarantee: a worker sends on news at most LeaseHolder.POLL_S old, plus the RPC): so no
    # call to the bucket may start in [429 + 1, 429 + 2], from either worker.
    pause = (throttled.finished + 1.0, throttled.finished + 2)
    in_pause = [r for r in ray_run.openai_requests if pause[0] < r.started < pause[1]]
    assert not in_pause, [(r.task, round(r.started - throttled.finished, 3)) for r in in_pause]
    # and it held the other worker too: a record of it got its edit back after the 429 (Gemini was not
    # paused), so its judgement was due then, yet that judgement went out only after the 1 s it had to stop
    other = set(owner.values()) - {owner[record_of(throttled)]}
    edit_back = {
        record_of(r): r.finished
        for r in ray_run.gemini_requests
        if throttled.finished < r.finished < pause[1] and owner[record_of(r)] in other
    }
    first_judge: dict[int, float] = {}
    for r in ray_run.openai_requests:
        if r.task == "judge":
            i = record_of(r)
            first_judge[i] = min(first_judge.get(i, math.inf), r.started)
    held = [i for i in edit_back if first_judge.get(i, math.inf) >= pause[0]]
    assert held, ("the other worker had judgements held by the pause", edit_back, first_judge)
    assert totals["rate_limits"][f"openai/{GPT4O}"]["pauses"] == 1


@pytest.mark.serial
def test_configured_rpm_holds_across_concurrent_shards(tmp_path, openai_fake, gemini_fake):
    rpm = 240  # one request per 250 ms
    out = tmp_path / "run"
    proc = synth(
        "openai",
        out,
        openai_fake,
        gemini_fake,
        "--shard-size",
        "2",
        "--set",
        f"limits.rate_limits.openai/gpt-4o.rpm={rpm}",
        records=4,
    )
    assert proc.returncode == 0, proc.stderr
    starts = sorted(r.started for r in openai_fake.requests if r.model == "gpt-4o")
    assert len(starts) == 8  # rewrite and judge for 4 records, 2 shards at once, 32 calls allowed per stage
    interval = 60 / rpm
    # The limiter spaces the calls it starts; on its way to the server a call may be held up by a new
    # connection (name lookup, connect) by up to about an interval, which lets the next one catch up.
    transport = interval
    for i in range(len(starts)):
        for j in range(i + 1, len(starts)):
            # N per minute, plus one burst (the limiter lets a second request through at once)
            assert j - i + 1 <= (starts[j] - starts[i] + transport) / interval + 2, (
                i,
                j,
                starts[j] - starts[i],
            )
    assert stats(out)["rate_limits"]["openai/gpt-4o"]["granted"] == 8


# -- 5. retries, bad requests, a rejected key --------------------------------------------------------------
def test_5xx_and_timeouts_are_retried_with_backoff_and_succeed(tmp_path, openai_fake, gemini_fake):
    openai_fake.script(["500", "503", "slow:4"])  # the first three calls: the classifications
    gemini_fake.script(["500", "slow:4"])  # the first two edits
    out = tmp_path / "run"
    proc = synth(
        "uniedit",
        out,
        openai_fake,
        gemini_fake,
        "--set",
        "stages.classify.trust_source_category=false",
        "--set",
        "backends.gpt4o.timeout_s=1",
        "--set",
        "backends.nano-pro.timeout_s=1",
        records=3,
    )
    assert proc.returncode == 0, proc.stderr
    found = rows(out)
    assert len(found) == 3 and all(r["accepted"] for r in found.values())
    assert by_task(openai_fake) == {"classify": 3 + 3, "rewrite": 3, "judge": 3}
    assert by_task(gemini_fake) == {"edit": 3 + 2}
    for fake in (openai_fake, gemini_fake):
        requests = sorted(fake.requests, key=lambda r: r.started)
        failed = [r for r in requests if r.fault != "ok"]
        assert [r.fault for r in failed] == (
            ["500", "503", "slow:4"] if fake is openai_fake else ["500", "slow:4"]
        )
        for bad in failed:
            retry = next(
                r
                for r in requests
                if r.started > bad.started
                and r.task == bad.task
                and text_of(r) == text_of(bad)
                and source_image(r) == source_image(bad)
            )
            if bad.fault.startswith("slow"):
                assert retry.started - bad.started >= 1.0  # the client gave up at timeout_s, then retried
            else:
                assert retry.started - bad.finished >= 0.04  # after the back-off (initial_s 0.05, no jitter)


def test_400_is_not_retried_and_rejects_with_the_stage_reason(tmp_path, openai_fake, gemini_fake):
    gemini_fake.script(["400"])  # the first edit
    bad_judge = Once(task_is("judge"), "400")
    openai_fake.script(bad_judge)
    out = tmp_path / "run"
    proc = synth("uniedit", out, openai_fake, gemini_fake, records=3)
    assert proc.returncode == 0, proc.stderr
    found = rows(out)
    assert reasons(found) == {"edit_failed": 1, "judge_failed": 1}
    assert all("HTTP 400" in r["reject_detail"] for r in found.values() if not r["accepted"])
    # one request each: the edit that got a 400 is neither retried nor re-attempted, and is not judged
    assert by_task(gemini_fake) == {"edit": 3} and by_task(openai_fake) == {"rewrite": 3, "judge": 2}
    edit_failed = next(r for r in found.values() if r["reject_reason"] == "edit_failed")
    assert source_image(gemini_fake.requests[0]) == edit_failed["source_image"]["bytes"]


@pytest.mark.serial  # "nothing starts 0.25 s after the 401" assumes the client hears of it within 0.25 s
def test_401_aborts_the_run_with_a_one_line_error(tmp_path, openai_fake, gemini_fake):
    openai_fake.latency = gemini_fake.latency = 0.03
    seen = Counter()

    def twelfth_is_401(request: RecordedRequest) -> str | None:
        seen["n"] += 1
        return "401" if seen["n"] == 12 else None

    openai_fake.script(twelfth_is_401)
    out = tmp_path / "run"
    proc = synth(
        "uniedit",
        out,
        openai_fake,
        gemini_fake,
        "--concurrency",
        "2",
        "--shard-size",
        "4",
        "--set",
        "stages.classify.trust_source_category=false",
        records=24,
    )
    assert proc.returncode not in (0, 3), proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "check your API key" in lines[0], (
        proc.stderr
    )
    rejected = next(r for r in openai_fake.requests if r.status == 401)
    # calls already on the wire when the run learnt of the 401 may land; nothing is started afterwards
    late = [r for r in [*openai_fake.requests, *gemini_fake.requests] if r.started > rejected.finished + 0.25]
    assert not late, [(r.task, round(r.started - rejected.finished, 3)) for r in late]
    assert len(openai_fake.requests) + len(gemini_fake.requests) < 24 * 4 / 2  # far from done
    assert stats(out)["status"] == "failed"


# -- 6. safety blocks are rejects, never retried ------------------------------------------------------------
def test_openai_safety_blocks_reject_without_retry(tmp_path, openai_fake, gemini_fake):
    moderated, refused = Once(task_is("edit"), "moderation"), Once(task_is("judge"), "refusal")
    openai_fake.script(lambda request: moderated(request) or refused(request))
    out = tmp_path / "run"
    proc = synth("openai", out, openai_fake, gemini_fake, records=3)
    assert proc.returncode == 0, proc.stderr
    found = rows(out)
    assert reasons(found) == {"safety_blocked": 2}
    details = sorted(r["reject_detail"] for r in found.values() if not r["accepted"])
    assert "moderation_blocked" in details[0] and "refused" in details[1], details
    assert by_task(openai_fake) == {"rewrite": 3, "edit": 3, "judge": 2}


def test_gemini_safety_blocks_reject_without_retry(tmp_path, openai_fake, gemini_fake):
    gemini_fake.script(["safety", "image_safety", "noimage:IMAGE_SAFETY", "blocked_prompt", "noimage"])
    out = tmp_path / "run"
    proc = synth("uniedit", out, openai_fake, gemini_fake, records=5)
    assert proc.returncode == 0, proc.stderr
    found = rows(out)
    # a refusal by finishReason or prompt feedback is a safety block; an image-less STOP is asked again
    assert reasons(found) == {"safety_blocked": 4}
    details = " | ".join(r["reject_detail"] or "" for r in found.values())
    for said in (
        "finishReason SAFETY",
        "finishReason IMAGE_SAFETY",
        "prompt blocked: SAFETY",
    ):
        assert said in details
    assert by_task(gemini_fake) == {"edit": 6} and by_task(openai_fake) == {"rewrite": 5, "judge": 1}


# -- 7. malformed JSON from the judge ----------------------------------------------------------------------
def test_malformed_judge_json_gets_one_repair_then_rejects(tmp_path, openai_fake, gemini_fake):
    # local-vllm: no JSON-schema output, so a bad reply gets one repair round-trip
    still_bad = Once(task_is("judge", about(0)), "invalid_json", times=2)
    repaired = Once(task_is("judge", about(1)), "invalid_json")
    openai_fake.script(lambda request: still_bad(request) or repaired(request))
    out = tmp_path / "run"
    proc = synth(
        "local-vllm", out, openai_fake, None, "--set", "backends.editor.options.error_rate=0", records=3
    )
    assert proc.returncode == 0, proc.stderr
    found = rows(out)
    assert (
        found[rid(0)]["reject_reason"] == "judge_failed"
        and "after one repair attempt" in found[rid(0)]["reject_detail"]
    )
    assert found[rid(1)]["accepted"] and found[rid(2)]["accepted"]
    judges = Counter(
        next(i for i in range(3) if about(i)(r)) for r in openai_fake.requests if r.task == "judge"
    )
    assert judges == {0: 2, 1: 2, 2: 1}
    repair = [r for r in openai_fake.requests if r.task == "judge" and about(1)(r)][1]
    assert [m["role"] for m in repair.body["messages"]] == ["system", "user", "assistant", "user"]
    assert "could not be used" in repair.body["messages"][-1]["content"]


def test_malformed_judge_json_under_strict_structured_output_is_rejected_at_once(
    tmp_path, openai_fake, gemini_fake
):
    openai_fake.script(Once(task_is("judge", about(0)), "invalid_json"))
    out = tmp_path / "run"
    proc = synth("uniedit", out, openai_fake, gemini_fake, records=2)
    assert proc.returncode == 0, proc.stderr
    found = rows(out)
    assert found[rid(0)]["reject_reason"] == "judge_failed" and found[rid(1)]["accepted"]
    assert by_task(openai_fake) == {"rewrite": 2, "judge": 2}


# -- 8. no API key anywhere --------------------------------------------------------------------------------
def test_no_api_key_in_outputs_logs_or_errors(tmp_path, openai_fake, gemini_fake):
    # faults that make the backends write error text, with debug logging and JSON logs
    openai_fake.script(["500", "invalid_json"])
    gemini_fake.script(["400", "safety"])
    out = tmp_path / "run"
    proc = synth(
        "uniedit",
        out,
        openai_fake,
        gemini_fake,
        "-vv",
        "--log-format",
        "json",
        "--set",
        "stages.classify.trust_source_category=false",
        records=4,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["read"] == 4
    assert (out / "cache").is_dir() and any((out / "cache").rglob("*.pack"))  # a final shard's replies, packed
    assert (
        json.loads((out / "run.json").read_text())["config"]["backends"]["gpt4o"]["api_key_env"]
        == "UE_E2E_OPENAI_KEY"
    )
    # (synth() has grepped every file, the parquet rows, stdout and stderr for the key)

    # a wrong key: the fake echoes the presented key in its 401 message, as OpenAI does
    wrong = synth(
        "uniedit",
        tmp_path / "wrong",
        openai_fake,
        gemini_fake,
        "-vv",
        env={"UE_E2E_OPENAI_KEY": f"sk-{CANARY}-wrong"},
        records=2,
    )
    assert wrong.returncode not in (0, 3) and "check your API key" in wrong.stderr
    assert "Incorrect API key provided: ***" in wrong.stderr  # the echoed key, redacted


# -- 9. the answer-leak check rejects before the image is paid for -----------------------------------------
def test_answer_leak_is_rejected_before_any_image_is_paid_for(tmp_path, openai_fake, gemini_fake):
    leaky = {
        "content": {
            "instruction": "Repaint the large cone in a brighter green and add a soft shadow.",
            "then_edit": None,
            "else_edit": None,
            "candidate": None,
        }
    }
    openai_fake.script(Once(task_is("rewrite", about(1)), leaky))  # record 1 asks for the colour: green
    out = tmp_path / "run"
    proc = synth("uniedit", out, openai_fake, gemini_fake, records=4)
    assert proc.returncode == 0, proc.stderr
    found = rows(out)
    assert reasons(found) == {"leaks_answer": 1} and found[rid(1)]["reject_reason"] == "leaks_answer"
    assert "green" in found[rid(1)]["reject_detail"]
    sent = edit_images(gemini_fake)
    assert len(sent) == 3 and RECORDS[1].image not in sent
    assert sorted(sent) == sorted(RECORDS[i].image for i in (0, 2, 3))


# -- 10. category caps do not depend on timing or worker count ---------------------------------------------
@pytest.mark.ray
def test_category_caps_are_the_same_for_any_worker_count(tmp_path, openai_fake, gemini_fake, ray_run: RayRun):
    openai_fake.latency = (0.0, 0.05)  # classifications finish in a random order
    openai_fake.script(classify_as_source)
    out = tmp_path / "run"
    proc = synth(
        "uniedit",
        out,
        openai_fake,
        gemini_fake,
        "--shard-size",
        "4",
        "--workers",
        "1",
        "--set",
        "stages.classify.trust_source_category=false",
        *CAPS,
        records=16,
    )
    assert proc.returncode == 0, proc.stderr

    def outcome(found: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
        return (
            sorted(k for k, r in found.items() if r["accepted"]),
            sorted(k for k, r in found.items() if r["reject_reason"] == "category_capped"),
        )

    inline, on_ray = outcome(rows(out)), outcome(rows(ray_run.out))
    assert inline == on_ray  # 1 inline worker, 2 Ray workers: the same records pass and the same are capped
    assert inline == (
        sorted(set(map(rid, range(16))) - set(CAPPED)),
        sorted(CAPPED),
    )  # the first ones, in source order
