"""The Gemini backends driven through the real `google-genai` SDK against the fake Gemini server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from tests.fakes import FakeGemini
from uniedit_synth.backends.base import (
    AuthError,
    BackendError,
    BadRequest,
    EditReply,
    EditRequest,
    MalformedReply,
    NoImageReply,
    RateLimited,
    RetryableError,
    SafetyBlocked,
    TextReply,
    TextRequest,
    Unreachable,
    Usage,
)
from uniedit_synth.backends.gemini_backend import GeminiEditor, GeminiText
from uniedit_synth.backends.registry import create_backend
from uniedit_synth.core.config import BackendSpec
from uniedit_synth.core.errors import BackendConfigError

CANARY = "gm-canary-4be1d07c93a2f658"

JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "instruction_following": {"type": "integer", "minimum": 1, "maximum": 5},
        "visual_quality": {"type": "integer", "minimum": 1, "maximum": 5},
        "coherence": {"type": "integer", "minimum": 1, "maximum": 5},
        "analysis": {"type": "string"},
    },
    "required": ["instruction_following", "visual_quality", "coherence", "analysis"],
}


def png(color: tuple[int, int, int] = (90, 100, 110), size: int = 40) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", CANARY)
    for name in (
        "GOOGLE_API_KEY",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=CANARY) as fake:
        yield fake


def make_spec(server: FakeGemini, **overrides: Any) -> BackendSpec:
    values: dict[str, Any] = {
        "type": "gemini",
        "model": "gemini-2.5-flash",
        "base_url": server.base_url,
        "timeout_s": 5.0,
    }
    values.update(overrides)
    return BackendSpec(**values)


def judge_request(**overrides: Any) -> TextRequest:
    values: dict[str, Any] = {
        "task": "judge",
        "model": "gemini-2.5-flash",
        "system": "Score the edit.",
        "prompt": "Edit instruction: <vqa_instruction>Paint it.</vqa_instruction>",
        "images": [png(), png((200, 10, 10))],
        "response_schema": JUDGE_SCHEMA,
        "schema_name": "judge",
        "params": {"temperature": 0, "max_tokens": 300},
    }
    values.update(overrides)
    return TextRequest(**values)


def edit_request(**overrides: Any) -> EditRequest:
    values: dict[str, Any] = {
        "model": "gemini-3-pro-image-preview",
        "instruction": "Count the spheres; if there are three, add a lantern. Refine the image.",
        "image": png(),
        "reference_answer": "3",
    }
    values.update(overrides)
    return EditRequest(**values)


def editor(server: FakeGemini, **overrides: Any) -> GeminiEditor:
    return GeminiEditor(make_spec(server, model="gemini-3-pro-image-preview", **overrides))


def complete(backend: GeminiText, request: TextRequest) -> TextReply:
    async def go() -> TextReply:
        try:
            return await backend.complete(request)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def edit(backend: GeminiEditor, request: EditRequest) -> EditReply:
    async def go() -> EditReply:
        try:
            return await backend.edit(request)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def expect_error(fn: Any, *args: Any) -> BackendError:
    with pytest.raises(BackendError) as info:
        fn(*args)
    return info.value


def assert_secret_free(exc: BaseException) -> None:
    seen: BaseException | None = exc
    while seen is not None:
        assert CANARY not in str(seen) and CANARY not in repr(seen.args)
        seen = (
            seen.__cause__
            if seen.__cause__ is not None
            else (None if seen.__suppress_context__ else seen.__context__)
        )


# -- success paths ------------------------------------------------------------------------------------------
def test_text_success_sends_json_schema_system_and_images(server: FakeGemini) -> None:
    server.thoughts_tokens = 17
    reply = complete(GeminiText(make_spec(server), seed=5), judge_request())

    assert reply.data["instruction_following"] == 4 and reply.data["analysis"]
    [seen] = server.requests
    assert seen.path == "/v1beta/models/gemini-2.5-flash:generateContent" and seen.task == "judge"
    assert seen.header("x-goog-api-key") == "<redacted>" and seen.auth_present
    body = seen.body
    assert body["systemInstruction"]["parts"][0]["text"] == "Score the edit."
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["responseJsonSchema"] == JUDGE_SCHEMA
    assert config["temperature"] == 0 and config["maxOutputTokens"] == 300 and config["seed"] == 5
    parts = body["contents"][0]["parts"]
    assert parts[0]["text"] == judge_request().prompt and len(parts) == 3 and "inlineData" in parts[1]
    assert reply.usage == Usage(
        input_tokens=seen.usage["promptTokenCount"],
        output_tokens=seen.usage["candidatesTokenCount"] + 17,  # thinking is billed as output
        images_in=2,
    )


def test_usage_is_exactly_what_the_server_reported(server: FakeGemini) -> None:
    server.usage_override = {"promptTokenCount": 777, "candidatesTokenCount": 88}
    reply = complete(GeminiText(make_spec(server)), judge_request(images=[]))
    assert reply.usage == Usage(input_tokens=777, output_tokens=88)


def test_edit_success_returns_png_with_paper_defaults(server: FakeGemini) -> None:
    source = png()
    reply = edit(editor(server), edit_request(image=source))

    with Image.open(io.BytesIO(reply.image)) as image:
        assert image.format == "PNG" and image.size == (40, 40)
        assert image.getpixel((20, 20)) != (90, 100, 110)
    [seen] = server.requests
    assert seen.path == "/v1beta/models/gemini-3-pro-image-preview:generateContent" and seen.task == "edit"
    config = seen.body["generationConfig"]
    assert config["responseModalities"] == ["IMAGE"]
    assert config["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "1K"}
    prompt = seen.body["contents"][0]["parts"][0]["text"]
    assert prompt.startswith(edit_request().instruction) and "Reference answer" in prompt
    assert reply.usage == Usage(
        input_tokens=seen.usage["promptTokenCount"],
        output_tokens=seen.usage["candidatesTokenCount"],
        images_in=1,
        images_out=1,
    )
    assert reply.model == "gemini-3-pro-image-preview"


def test_edit_params_override_image_config_and_modalities(server: FakeGemini) -> None:
    request = edit_request(
        params={
            "aspect_ratio": "16:9",
            "image_size": "2K",
            "response_modalities": ["TEXT", "IMAGE"],
            "temperature": 0.4,
        }
    )
    reply = edit(editor(server), request)
    config = server.requests[0].body["generationConfig"]
    assert config["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert config["responseModalities"] == ["TEXT", "IMAGE"] and config["temperature"] == 0.4
    assert reply.text == "Here is the edited image."


def test_one_backend_serves_successive_event_loops(server: FakeGemini) -> None:
    backend = editor(server)
    first = asyncio.run(backend.edit(edit_request()))  # its pooled connection dies with this loop
    second = edit(backend, edit_request())
    assert first.image == second.image and len(server.requests) == 2


def test_registry_builds_the_gemini_classes(server: FakeGemini) -> None:
    spec = make_spec(server)
    assert isinstance(create_backend("t", spec, "text"), GeminiText)
    assert isinstance(create_backend("e", spec, "edit"), GeminiEditor)
    assert create_backend("e", spec, "edit").provider == "gemini"


# -- error mapping ------------------------------------------------------------------------------------------
def test_429_carries_retry_after_and_the_sdk_does_not_retry(server: FakeGemini) -> None:
    server.script(["429:9"])
    exc = expect_error(edit, editor(server), edit_request())
    assert isinstance(exc, RateLimited) and exc.retry_after == 9.0 and exc.status == 429
    assert len(server.requests) == 1


def test_429_retry_info_in_the_body_is_used_without_a_header(server: FakeGemini) -> None:
    server.script(["quota:4"])
    exc = expect_error(complete, GeminiText(make_spec(server)), judge_request())
    assert isinstance(exc, RateLimited) and exc.retry_after == 4.0


@pytest.mark.parametrize("status", ["500", "502", "503", "504"])
def test_server_errors_are_retryable(server: FakeGemini, status: str) -> None:
    server.script([status])
    exc = expect_error(complete, GeminiText(make_spec(server)), judge_request())
    assert type(exc) is RetryableError and exc.status == int(status)
    assert len(server.requests) == 1


def test_timeout_is_retryable(server: FakeGemini) -> None:
    server.script(["slow:6"])
    started = time.monotonic()
    exc = expect_error(edit, editor(server, timeout_s=0.3), edit_request())
    assert type(exc) is Unreachable and "timed out" in str(exc)
    assert time.monotonic() - started < 4.5  # the reply would take 6 s


def test_dropped_connection_is_retryable(server: FakeGemini) -> None:
    server.script(["drop"])
    exc = expect_error(complete, GeminiText(make_spec(server)), judge_request())
    assert type(exc) is Unreachable and "connection" in str(exc)


@pytest.mark.parametrize("status", ["400", "404", "422"])
def test_client_errors_are_bad_requests(server: FakeGemini, status: str) -> None:
    server.script([status])
    exc = expect_error(edit, editor(server), edit_request())
    assert isinstance(exc, BadRequest) and f"HTTP {status}" in str(exc)


@pytest.mark.parametrize("fault", ["401", "403", "bad_key"])
def test_auth_errors(server: FakeGemini, fault: str) -> None:
    server.script([fault])
    assert isinstance(expect_error(complete, GeminiText(make_spec(server)), judge_request()), AuthError)


def test_wrong_key_is_auth_error() -> None:
    with FakeGemini(api_key="the-right-one") as fake:
        exc = expect_error(complete, GeminiText(make_spec(fake)), judge_request())
        assert isinstance(exc, AuthError) and "API key not valid" in str(exc)
        assert_secret_free(exc)


@pytest.mark.parametrize(
    "fault", ["safety", "image_safety", "prohibited", "blocked_prompt", "noimage:IMAGE_SAFETY"]
)
def test_safety_blocks_on_edit(server: FakeGemini, fault: str) -> None:
    server.script([fault])
    exc = expect_error(edit, editor(server), edit_request())
    assert isinstance(exc, SafetyBlocked)
    assert len(server.requests) == 1


@pytest.mark.parametrize("fault", ["safety", "blocked_prompt:PROHIBITED_CONTENT"])
def test_safety_blocks_on_text(server: FakeGemini, fault: str) -> None:
    server.script([fault])
    exc = expect_error(complete, GeminiText(make_spec(server)), judge_request())
    assert isinstance(exc, SafetyBlocked)


@pytest.mark.parametrize("fault", ["noimage", "noimage:NO_IMAGE", "noimage:MAX_TOKENS"])
def test_edit_without_image_and_no_safety_reason_is_a_no_image_reply(server: FakeGemini, fault: str) -> None:
    server.script([{"fault": fault, "text": "I would rather describe the scene."}])
    exc = expect_error(edit, editor(server), edit_request())
    assert isinstance(exc, NoImageReply) and not isinstance(exc, (SafetyBlocked, MalformedReply))
    assert "no image part" in str(exc) and "rather describe" in str(exc) and "rather describe" in exc.text
    [seen] = server.requests
    # what the provider bills for the text-only reply travels with the error, so the engine can charge it
    assert exc.usage == Usage(
        input_tokens=seen.usage["promptTokenCount"], output_tokens=seen.usage["candidatesTokenCount"], images_in=1
    )


def test_edit_reply_without_candidates_is_a_no_image_reply(server: FakeGemini) -> None:
    server.script(["no_candidates"])
    exc = expect_error(edit, editor(server), edit_request())
    assert isinstance(exc, NoImageReply) and "no candidates" in str(exc)


def test_edit_sends_the_system_text_as_system_instruction(server: FakeGemini) -> None:
    edit(editor(server), edit_request(system="You are an expert image editor."))
    body = server.requests[0].body
    assert body["systemInstruction"]["parts"][0]["text"] == "You are an expert image editor."
    assert "You are an expert" not in body["contents"][0]["parts"][0]["text"]


def test_noimage_every_fault_answers_text_only_on_every_nth_image_call() -> None:
    with FakeGemini(api_key=CANARY, noimage_every=3) as server:
        outcomes = []
        for _ in range(6):
            try:
                edit(editor(server), edit_request())
                outcomes.append("image")
            except NoImageReply:
                outcomes.append("text")
    assert outcomes == ["image", "image", "text", "image", "image", "text"]


@pytest.mark.parametrize("fault", ["invalid_json", "truncated"])
def test_structured_invalid_json_is_malformed_without_repair(server: FakeGemini, fault: str) -> None:
    server.script([fault])
    exc = expect_error(complete, GeminiText(make_spec(server)), judge_request())
    assert isinstance(exc, MalformedReply)
    assert len(server.requests) == 1


def test_unstructured_invalid_json_gets_one_repair_then_malformed(server: FakeGemini) -> None:
    server.script(["invalid_json", "invalid_json", "ok"])
    exc = expect_error(complete, GeminiText(make_spec(server, structured_outputs=False)), judge_request())
    assert isinstance(exc, MalformedReply) and "after one repair attempt" in str(exc)
    first, second = server.requests
    assert "responseJsonSchema" not in first.body["generationConfig"]
    assert "JSON Schema" in first.body["systemInstruction"]["parts"][0]["text"]
    roles = [content.get("role") for content in second.body["contents"]]
    assert roles == ["user", "model", "user"]
    assert "not valid JSON" in second.body["contents"][-1]["parts"][0]["text"]


def test_unstructured_repair_succeeds(server: FakeGemini) -> None:
    server.script(["invalid_json", "ok"])
    reply = complete(GeminiText(make_spec(server, structured_outputs=False)), judge_request())
    assert reply.data["coherence"] == 4 and len(server.requests) == 2


# -- configuration and secrets ----------------------------------------------------------------------------
def test_missing_key_names_the_env_vars(server: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    with pytest.raises(BackendConfigError, match="GEMINI_API_KEY or GOOGLE_API_KEY"):
        GeminiText(make_spec(server))
    with pytest.raises(BackendConfigError, match="NANO_KEY"):
        GeminiEditor(make_spec(server, api_key_env="NANO_KEY"))


def test_google_api_key_is_the_fallback(server: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("GOOGLE_API_KEY", CANARY)
    assert complete(GeminiText(make_spec(server)), judge_request()).data["visual_quality"] == 4


def test_unknown_param_is_a_config_error(server: FakeGemini) -> None:
    with pytest.raises(BackendConfigError, match="unknown parameter 'temprature'"):
        complete(GeminiText(make_spec(server)), judge_request(params={"temprature": 0}))
    assert server.requests == []


def test_the_key_never_reaches_errors_or_logs(server: FakeGemini, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    for fault in ["429:1", "500", "400", "401", "bad_key", "drop", "safety", "noimage"]:
        server.script([fault])
        errors.append(expect_error(edit, editor(server), edit_request()))
    server.script(["invalid_json", "invalid_json"])
    errors.append(
        expect_error(complete, GeminiText(make_spec(server, structured_outputs=False)), judge_request())
    )
    for exc in errors:
        assert_secret_free(exc)
    assert caplog.records, "debug logging was captured"
    for record in caplog.records:
        assert CANARY not in record.getMessage()
        assert CANARY not in repr(record.args)


# -- scale: the pool size option lets hundreds of calls be in flight ------------------------------------------
def test_max_connections_option_allows_hundreds_in_flight() -> None:
    with FakeGemini(api_key=CANARY, latency=0.8) as fake:
        backend = GeminiText(make_spec(fake, timeout_s=10, options={"max_connections": 300}))

        async def go() -> list[TextReply]:
            try:
                return await asyncio.gather(*[backend.complete(judge_request(images=[])) for _ in range(150)])
            finally:
                await backend.aclose()

        started = time.monotonic()
        replies = asyncio.run(go())
        assert len(replies) == 150 and all(r.data["coherence"] == 4 for r in replies)
        assert fake.max_in_flight > 100  # above httpx's default pool of 100
        assert time.monotonic() - started < 15.0  # serially: 150 x 0.8 s
