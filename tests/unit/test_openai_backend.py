"""The OpenAI backends driven through the real `openai` SDK against the fake OpenAI server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from tests.fakes import FakeOpenAI
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
from uniedit_synth.backends.openai_backend import OpenAICompatibleText, OpenAIEditor, OpenAIText
from uniedit_synth.backends.registry import create_backend
from uniedit_synth.core.config import BackendSpec
from uniedit_synth.core.errors import BackendConfigError

CANARY = "sk-canary-7f3a9c2e51d84b06"

CLASSIFY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "task_category": {
            "type": "string",
            "enum": [
                "shape",
                "count",
                "color",
                "location",
                "knowledge",
                "caption",
                "ocr",
                "math",
                "multi-choice",
                "yes_no",
                "others",
            ],
        },
        "process_answer": {"type": "string"},
    },
    "required": ["task_category", "process_answer"],
    "additionalProperties": False,
}


def png(color: tuple[int, int, int] = (120, 130, 140), size: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=CANARY) as fake:
        yield fake


def make_spec(server: FakeOpenAI, **overrides: Any) -> BackendSpec:
    values: dict[str, Any] = {
        "type": "openai",
        "model": "gpt-4o",
        "base_url": server.base_url,
        "timeout_s": 5.0,
    }
    values.update(overrides)
    return BackendSpec(**values)


def classify_request(**overrides: Any) -> TextRequest:
    values: dict[str, Any] = {
        "task": "classify",
        "model": "gpt-4o",
        "system": "Classify the VQA pair.",
        "prompt": "Question: <vqa_question>What colour is the cube?</vqa_question>",
        "images": [png()],
        "response_schema": CLASSIFY_SCHEMA,
        "schema_name": "classify",
        "params": {"temperature": 0},
    }
    values.update(overrides)
    return TextRequest(**values)


def edit_request(**overrides: Any) -> EditRequest:
    values: dict[str, Any] = {
        "model": "gpt-image-1",
        "instruction": "If the cube is red, paint it blue; otherwise leave it. Refine the image.",
        "image": png(),
        "reference_answer": "red",
        "params": {"size": "1024x1024", "quality": "high"},
    }
    values.update(overrides)
    return EditRequest(**values)


def complete(backend: OpenAIText, request: TextRequest) -> TextReply:
    async def go() -> TextReply:
        try:
            return await backend.complete(request)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def edit(backend: OpenAIEditor, request: EditRequest) -> EditReply:
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
def test_structured_chat_success_sends_schema_images_and_params(server: FakeOpenAI) -> None:
    reply = complete(OpenAIText(make_spec(server), seed=11), classify_request())

    assert reply.data == {"task_category": "color", "process_answer": "red"}
    assert reply.model == "gpt-4o"
    [seen] = server.requests
    assert seen.path == "/v1/chat/completions" and seen.task == "classify"
    assert seen.header("authorization") == "<redacted>" and seen.auth_present
    body = seen.body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "classify", "schema": CLASSIFY_SCHEMA, "strict": True},
    }
    assert body["messages"][0] == {"role": "system", "content": "Classify the VQA pair."}
    user = body["messages"][1]["content"]
    assert user[0] == {"type": "text", "text": classify_request().prompt}
    assert user[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert base64.b64decode(user[1]["image_url"]["url"].split(",", 1)[1]) == png()
    assert body["temperature"] == 0 and body["seed"] == 11
    assert reply.usage == Usage(
        input_tokens=seen.usage["prompt_tokens"], output_tokens=seen.usage["completion_tokens"], images_in=1
    )


def test_schemas_are_made_strict_for_structured_outputs(server: FakeOpenAI) -> None:
    loose = {  # as pydantic writes it: no additionalProperties, an optional nullable field not required
        "type": "object",
        "properties": {
            "edit_instruction": {"type": "string"},
            "edit_program": {
                "anyOf": [{"type": "array", "items": {"$ref": "#/$defs/Step"}}, {"type": "null"}]
            },
        },
        "required": ["edit_instruction"],
        "$defs": {"Step": {"type": "object", "properties": {"op": {"type": "string"}}}},
    }
    reply = complete(
        OpenAIText(make_spec(server)), classify_request(response_schema=loose, schema_name="rewrite")
    )
    assert reply.data["edit_program"] is None and reply.data["edit_instruction"]
    sent = server.requests[0].body["response_format"]["json_schema"]["schema"]
    assert sent["additionalProperties"] is False and sent["required"] == ["edit_instruction", "edit_program"]
    assert sent["$defs"]["Step"] == {
        "type": "object",
        "properties": {"op": {"type": "string"}},
        "additionalProperties": False,
        "required": ["op"],
    }


def test_usage_is_exactly_what_the_server_reported(server: FakeOpenAI) -> None:
    server.usage_override = {"prompt_tokens": 1234, "completion_tokens": 56}
    reply = complete(OpenAIText(make_spec(server)), classify_request(images=[]))
    assert reply.usage == Usage(input_tokens=1234, output_tokens=56)
    assert (
        server.requests[0].body["messages"][1]["content"] == classify_request().prompt
    )  # plain text, no parts


def test_scripted_reply_content_and_unknown_params_go_to_extra_body(server: FakeOpenAI) -> None:
    server.script([{"content": {"task_category": "count", "process_answer": "3"}}])
    backend = OpenAICompatibleText(make_spec(server, type="openai-compatible", model="qwen"))
    reply = complete(backend, classify_request(model="qwen", params={"temperature": 0.2, "top_k": 5}))
    assert reply.data == {"task_category": "count", "process_answer": "3"}
    assert backend.provider == "openai-compatible"
    assert server.requests[0].body["top_k"] == 5


def test_edit_success_returns_png_and_usage(server: FakeOpenAI) -> None:
    source = png()
    reply = edit(OpenAIEditor(make_spec(server, model="gpt-image-1")), edit_request(image=source))

    with Image.open(io.BytesIO(reply.image)) as image:
        assert image.format == "PNG" and image.size == (48, 48)
        assert image.getpixel((24, 24)) != (120, 130, 140)  # the fake drew on it
    [seen] = server.requests
    assert seen.path == "/v1/images/edits"
    [upload] = seen.body["files"]["image"]
    assert (
        upload["data"] == source
        and upload["filename"] == "image.png"
        and upload["content_type"] == "image/png"
    )
    fields = seen.body["fields"]
    assert fields["model"] == "gpt-image-1" and fields["size"] == "1024x1024" and fields["quality"] == "high"
    assert fields["prompt"].startswith(edit_request().instruction)
    assert "Reference answer" in fields["prompt"] and fields["prompt"].rstrip().endswith("red")
    assert reply.usage == Usage(
        input_tokens=seen.usage["input_tokens"],
        output_tokens=seen.usage["output_tokens"],
        images_in=1,
        images_out=1,
    )


@pytest.mark.parametrize(
    "params",
    [{}, {"size": "1536x1024", "quality": "low", "n": 2, "input_fidelity": "high"}, {"size": "auto", "seed": 7}],
)
def test_edit_request_is_what_the_sdks_images_edit_sends(server: FakeOpenAI, params: dict[str, Any]) -> None:
    """The edit goes by the SDK's own POST without `images.edit`'s param transform: the same form fields and
    upload (unknown params in extra_body: form fields too), the same path, auth and multipart content type."""
    import openai

    request = edit_request(params=params)
    edit(OpenAIEditor(make_spec(server, model="gpt-image-1")), request)
    mine = server.requests[0]

    async def through_the_sdk() -> None:
        client = openai.AsyncOpenAI(api_key=CANARY, base_url=server.base_url, max_retries=0)
        known = {k: v for k, v in params.items() if k != "seed"}
        extra = {"seed": params["seed"]} if "seed" in params else None
        try:
            await client.images.edit(
                model="gpt-image-1", image=("image.png", request.image, "image/png"),
                prompt=mine.body["fields"]["prompt"], extra_body=extra, **known,
            )
        finally:
            await client.close()

    asyncio.run(through_the_sdk())
    sdk = server.requests[1]
    assert (mine.method, mine.path) == (sdk.method, sdk.path) == ("POST", "/v1/images/edits")
    assert mine.body == sdk.body and mine.auth_present and sdk.auth_present
    assert mine.headers["content-type"].split(";")[0] == sdk.headers["content-type"].split(";")[0]
    assert mine.headers["content-type"].startswith("multipart/form-data; boundary=")


def test_edit_hint_is_not_added_twice(server: FakeOpenAI) -> None:
    instruction = "Do the edit.\n\nReference answer (private hint): red"
    edit(OpenAIEditor(make_spec(server, model="gpt-image-1")), edit_request(instruction=instruction))
    assert server.requests[0].body["fields"]["prompt"] == instruction


def test_one_backend_serves_successive_event_loops(server: FakeOpenAI) -> None:
    backend = OpenAIText(make_spec(server))
    first = asyncio.run(backend.complete(classify_request()))  # its pooled connection dies with this loop
    second = complete(backend, classify_request())
    assert first.data == second.data and len(server.requests) == 2


def test_registry_builds_the_openai_classes(server: FakeOpenAI) -> None:
    spec = make_spec(server)
    assert isinstance(create_backend("t", spec, "text"), OpenAIText)
    assert isinstance(create_backend("e", spec, "edit"), OpenAIEditor)
    compatible = make_spec(server, type="openai-compatible")
    assert isinstance(create_backend("c", compatible, "text"), OpenAICompatibleText)
    assert create_backend("ce", compatible, "edit").provider == "openai-compatible"


# -- error mapping ------------------------------------------------------------------------------------------
def test_429_carries_retry_after_and_the_sdk_does_not_retry(server: FakeOpenAI) -> None:
    server.script(["429:7"])
    exc = expect_error(complete, OpenAIText(make_spec(server)), classify_request())
    assert isinstance(exc, RateLimited) and exc.retry_after == 7.0 and exc.status == 429
    assert len(server.requests) == 1


def test_429_without_header_has_no_retry_after(server: FakeOpenAI) -> None:
    server.script(["429"])
    exc = expect_error(edit, OpenAIEditor(make_spec(server, model="gpt-image-1")), edit_request())
    assert isinstance(exc, RateLimited) and exc.retry_after is None


@pytest.mark.parametrize("status", ["500", "502", "503", "504"])
def test_server_errors_are_retryable(server: FakeOpenAI, status: str) -> None:
    server.script([status])
    exc = expect_error(complete, OpenAIText(make_spec(server)), classify_request())
    assert type(exc) is RetryableError and exc.status == int(status)
    assert len(server.requests) == 1


def test_timeout_is_retryable(server: FakeOpenAI) -> None:
    server.script(["slow:6"])
    started = time.monotonic()
    exc = expect_error(complete, OpenAIText(make_spec(server, timeout_s=0.3)), classify_request())
    assert type(exc) is Unreachable and "timed out" in str(exc)
    assert time.monotonic() - started < 4.5  # the reply would take 6 s


def test_dropped_connection_is_retryable(server: FakeOpenAI) -> None:
    server.script(["drop"])
    exc = expect_error(complete, OpenAIText(make_spec(server)), classify_request())
    assert type(exc) is Unreachable and "connection" in str(exc)


@pytest.mark.parametrize("status", ["400", "404", "422"])
def test_client_errors_are_bad_requests(server: FakeOpenAI, status: str) -> None:
    server.script([status])
    exc = expect_error(complete, OpenAIText(make_spec(server)), classify_request())
    assert isinstance(exc, BadRequest) and f"HTTP {status}" in str(exc)


@pytest.mark.parametrize("status", ["401", "403"])
def test_auth_errors(server: FakeOpenAI, status: str) -> None:
    server.script([status])
    assert isinstance(expect_error(complete, OpenAIText(make_spec(server)), classify_request()), AuthError)


def test_wrong_key_is_auth_error_and_the_echoed_key_is_redacted() -> None:
    with FakeOpenAI(api_key="sk-the-right-one") as fake:  # echoes the presented (canary) key in its 401
        exc = expect_error(complete, OpenAIText(make_spec(fake)), classify_request())
        assert isinstance(exc, AuthError) and "Incorrect API key" in str(exc)
        assert_secret_free(exc)


@pytest.mark.parametrize("fault", ["moderation", "content_policy"])
def test_moderation_400s_are_safety_blocks(server: FakeOpenAI, fault: str) -> None:
    server.script([fault, fault])
    assert isinstance(expect_error(edit, OpenAIEditor(make_spec(server)), edit_request()), SafetyBlocked)
    assert isinstance(
        expect_error(complete, OpenAIText(make_spec(server)), classify_request()), SafetyBlocked
    )


@pytest.mark.parametrize("fault", ["content_filter", "refusal"])
def test_chat_content_filter_and_refusal_are_safety_blocks(server: FakeOpenAI, fault: str) -> None:
    server.script([fault])
    assert isinstance(
        expect_error(complete, OpenAIText(make_spec(server)), classify_request()), SafetyBlocked
    )


@pytest.mark.parametrize("fault", ["invalid_json", "truncated"])
def test_structured_output_invalid_json_is_malformed_without_repair(server: FakeOpenAI, fault: str) -> None:
    server.script([fault])
    exc = expect_error(complete, OpenAIText(make_spec(server)), classify_request())
    assert isinstance(exc, MalformedReply) and exc.raw
    assert len(server.requests) == 1


def test_reply_missing_a_required_key_is_malformed(server: FakeOpenAI) -> None:
    server.script([{"content": {"task_category": "color"}}])
    exc = expect_error(complete, OpenAIText(make_spec(server)), classify_request())
    assert isinstance(exc, MalformedReply) and "process_answer" in str(exc)


def test_edit_reply_without_image_data_is_a_no_image_reply_with_its_usage(server: FakeOpenAI) -> None:
    server.script(["no_image"])
    exc = expect_error(edit, OpenAIEditor(make_spec(server)), edit_request())
    assert isinstance(exc, NoImageReply) and "no image" in str(exc)
    assert exc.usage.input_tokens == server.requests[0].usage["input_tokens"] > 0


def test_edit_system_text_is_a_documented_prefix_of_the_prompt(server: FakeOpenAI) -> None:
    edit(OpenAIEditor(make_spec(server)), edit_request(system="You are an expert image editor."))
    prompt = server.requests[0].body["fields"]["prompt"]
    assert prompt.startswith("You are an expert image editor.\n\n" + edit_request().instruction)


def test_edit_reply_with_only_a_url_is_malformed(server: FakeOpenAI) -> None:
    server.script(["url_only"])
    exc = expect_error(edit, OpenAIEditor(make_spec(server)), edit_request())
    assert isinstance(exc, MalformedReply) and "URL" in str(exc)


# -- without structured outputs: JSON in text, one repair --------------------------------------------------
def compatible(server: FakeOpenAI) -> OpenAICompatibleText:
    return OpenAICompatibleText(make_spec(server, type="openai-compatible", structured_outputs=False))


def test_unstructured_invalid_json_gets_one_repair_then_malformed(server: FakeOpenAI) -> None:
    server.script(["invalid_json", "invalid_json", "ok"])
    exc = expect_error(complete, compatible(server), classify_request())
    assert isinstance(exc, MalformedReply) and "after one repair attempt" in str(exc)
    first, second = server.requests  # exactly two requests: the call and its one repair
    assert "response_format" not in first.body
    assert "JSON Schema" in first.body["messages"][0]["content"]  # the schema travels in the system text
    repair = second.body["messages"]
    assert repair[-2]["role"] == "assistant" and "oops" in repair[-2]["content"]  # the bad reply, quoted back
    assert repair[-1]["role"] == "user" and "not valid JSON" in repair[-1]["content"]


def test_unstructured_repair_succeeds_and_usage_adds_up(server: FakeOpenAI) -> None:
    server.script(["invalid_json", "ok"])
    reply = complete(compatible(server), classify_request())
    assert reply.data["task_category"] == "color"
    first, second = server.requests
    assert reply.usage.input_tokens == first.usage["prompt_tokens"] + second.usage["prompt_tokens"]
    assert reply.usage.output_tokens == first.usage["completion_tokens"] + second.usage["completion_tokens"]


def test_unstructured_fenced_json_is_accepted_first_time(server: FakeOpenAI) -> None:
    server.script(["fenced"])
    reply = complete(compatible(server), classify_request())
    assert reply.data == {"task_category": "color", "process_answer": "red"}
    assert len(server.requests) == 1


# -- configuration and secrets ----------------------------------------------------------------------------
def test_missing_key_names_the_env_var(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(BackendConfigError, match="OPENAI_API_KEY"):
        OpenAIText(make_spec(server))
    with pytest.raises(BackendConfigError, match="MY_LAB_KEY"):
        OpenAIEditor(make_spec(server, api_key_env="MY_LAB_KEY"))


def test_compatible_server_needs_no_key_but_needs_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with FakeOpenAI() as fake:
        reply = complete(compatible(fake), classify_request())
        assert reply.data["task_category"] == "color" and fake.requests[0].auth_present
    with pytest.raises(BackendConfigError, match="base_url"):
        OpenAICompatibleText(BackendSpec(type="openai-compatible", model="m"))


def test_unknown_option_is_a_config_error(server: FakeOpenAI) -> None:
    with pytest.raises(BackendConfigError, match="unknown option"):
        OpenAIText(make_spec(server, options={"jsonmode": True}))


def test_the_key_never_reaches_errors_or_logs(server: FakeOpenAI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    for fault in ["429:1", "500", "400", "401", "moderation", "drop", "invalid_json"]:
        server.script([fault])
        errors.append(expect_error(complete, OpenAIText(make_spec(server)), classify_request()))
    server.script(["invalid_json", "invalid_json"])
    errors.append(expect_error(complete, compatible(server), classify_request()))
    server.script(["moderation"])
    errors.append(expect_error(edit, OpenAIEditor(make_spec(server)), edit_request()))
    for exc in errors:
        assert_secret_free(exc)
    assert caplog.records, "debug logging was captured"
    for record in caplog.records:
        assert CANARY not in record.getMessage()
        assert CANARY not in repr(record.args)


# -- scale: the fake and the client pool under hundreds of concurrent calls ------------------------------------
def test_hundreds_of_concurrent_calls_with_seeded_random_faults() -> None:
    with FakeOpenAI(
        api_key=CANARY,
        latency=0.3,
        fault_rate=0.3,
        fault_seed=7,
        random_faults=["429:1", "500", "invalid_json"],
    ) as fake:
        backend = OpenAIText(make_spec(fake, timeout_s=10))

        async def go() -> list[Any]:
            try:
                calls = [backend.complete(classify_request(images=[])) for _ in range(300)]
                return await asyncio.gather(*calls, return_exceptions=True)
            finally:
                await backend.aclose()

        started = time.monotonic()
        results = asyncio.run(go())
        elapsed = time.monotonic() - started
        faults = [r.fault for r in fake.requests if r.fault != "ok"]
        errors = [r for r in results if isinstance(r, BaseException)]
        # served concurrently, not one after another (serially: 300 x 0.3 s = 90 s, at most 1 in flight)
        assert len(fake.requests) == 300 and fake.max_in_flight >= 100
        assert elapsed < 15.0
        assert 45 <= len(faults) <= 135 and len(errors) == len(faults)
        assert all(isinstance(e, (RateLimited, RetryableError, MalformedReply)) for e in errors)
