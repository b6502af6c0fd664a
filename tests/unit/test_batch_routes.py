"""One HTTP-status → error mapping per provider: a batch item that fails as an online call would fails with the
same error class (a reject online is a reject in a batch, a retry online a retry in a batch).

Both sides go through the real SDKs against the fake servers on 127.0.0.1; the fakes answer a batch item through
their online handler, so one scripted fault reaches the online call and the batch item alike.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.fakes import FakeGemini, FakeOpenAI
from uniedit_synth.backends.base import (
    AuthError,
    BackendError,
    BadRequest,
    NotFound,
    RateLimited,
    RetryableError,
    SafetyBlocked,
    TextRequest,
)
from uniedit_synth.backends.gemini_backend import GeminiText
from uniedit_synth.backends.openai_backend import OpenAIText
from uniedit_synth.core.config import BackendSpec
from uniedit_synth.core.specs import BatchSpec

KEY = "sk-canary-batch-routes-5a1f"
SCHEMA: dict[str, Any] = {"type": "object", "properties": {"visual_quality": {"type": "integer"}},
                          "required": ["visual_quality"]}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    for name in ("OPENAI_BASE_URL", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(name, raising=False)


def request(model: str) -> TextRequest:
    return TextRequest(task="judge", model=model, prompt="score it", response_schema=SCHEMA, schema_name="judge")


def online_error(backend: Any, req: TextRequest) -> BackendError:
    async def go() -> BackendError:
        try:
            await backend.complete(req)
        except BackendError as exc:
            return exc
        finally:
            await backend.aclose()
        raise AssertionError("the online call succeeded")

    return asyncio.run(go())


def batch_error(backend: Any, req: TextRequest) -> BackendError:
    async def go() -> BackendError:
        route = backend.batch_route("text")
        key = "k" * 64
        try:
            job_id = await route.submit([(key, "text", req)], "job", BatchSpec())
            while (await route.poll(job_id)).state != "completed":
                await asyncio.sleep(0)
            requests = {key: {"kind": "text", "model": req.model, "images": 0, "schema": SCHEMA}}
            results = await route.results(job_id, requests)
        finally:
            await backend.aclose()
        assert results[key].reply is None, "the batch item succeeded"
        return results[key].error

    return asyncio.run(go())


OPENAI_CASES = [
    ("400", BadRequest), ("404", NotFound), ("413", BadRequest), ("422", BadRequest),
    ("401", AuthError), ("403", AuthError), ("429", RateLimited), ("409", RetryableError),
    ("500", RetryableError), ("503", RetryableError), ("moderation", SafetyBlocked),
    ("content_policy", SafetyBlocked),
]


@pytest.mark.parametrize(("fault", "expected"), OPENAI_CASES)
def test_openai_batch_items_fail_as_online_calls_do(fault: str, expected: type) -> None:
    with FakeOpenAI(api_key=KEY) as fake:
        spec = BackendSpec(type="openai", model="gpt-4o", base_url=fake.base_url, timeout_s=5.0)
        fake.script([fault])
        online = online_error(OpenAIText(spec), request("gpt-4o"))
        fake.script([fault])
        batch = batch_error(OpenAIText(spec), request("gpt-4o"))
    assert type(online) is expected and type(batch) is expected, (online, batch)
    assert len(fake.batch_items) == 1
    assert KEY not in str(batch)


GEMINI_CASES = [
    ("400", BadRequest), ("404", NotFound), ("422", BadRequest), ("401", AuthError), ("403", AuthError),
    ("429", RateLimited), ("500", RetryableError), ("503", RetryableError), ("504", RetryableError),
]


@pytest.mark.parametrize(("fault", "expected"), GEMINI_CASES)
def test_gemini_batch_items_fail_as_online_calls_do(fault: str, expected: type) -> None:
    with FakeGemini(api_key=KEY) as fake:
        spec = BackendSpec(type="gemini", model="gemini-2.5-flash", base_url=fake.base_url, timeout_s=5.0)
        fake.script([fault])
        online = online_error(GeminiText(spec), request("gemini-2.5-flash"))
        fake.script([fault])
        batch = batch_error(GeminiText(spec), request("gemini-2.5-flash"))
    assert type(online) is expected and type(batch) is expected, (online, batch)
    assert len(fake.batch_items) == 1


def test_a_google_rpc_code_reads_as_its_http_status() -> None:
    with FakeGemini(api_key=KEY) as fake:
        backend = GeminiText(BackendSpec(type="gemini", model="m", base_url=fake.base_url))
    assert type(backend.status_error(3, "bad")) is BadRequest  # INVALID_ARGUMENT
    assert type(backend.status_error(16, "who")) is AuthError  # UNAUTHENTICATED
    assert type(backend.status_error(8, "slow down")) is RateLimited  # RESOURCE_EXHAUSTED
    assert type(backend.status_error(14, "later")) is RetryableError  # UNAVAILABLE
    assert type(backend.status_error(10, "aborted")) is RetryableError  # ABORTED (409): another try
    assert "HTTP 400" in str(backend.status_error(9, "precondition"))  # FAILED_PRECONDITION
