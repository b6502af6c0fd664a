"""The Gemini backends' own request JSON and reply reading against the SDK's: an online call writes the body the
SDK's `models.generate_content` would write (byte for byte, on the wire to the fake server) and reads the reply
as the SDK's models would (base64 in either alphabet, schema errors as MalformedReply, continuation hops)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from google import genai
from google.genai import types
from PIL import Image

from tests.fakes import FakeGemini
from tests.unit.test_gemini_backend import JUDGE_SCHEMA
from tests.unit.test_geometry import run_edit as run_edit_request
from uniedit_synth.backends.base import EditRequest, MalformedReply, NoImageReply, TextRequest, Usage
from uniedit_synth.backends.gemini_backend import GeminiEditor, GeminiText, request_json
from uniedit_synth.core.config import BackendSpec

KEY = "gm-wire-key-0c1d2e3f"
SCHEMA: dict[str, Any] = JUDGE_SCHEMA


def png(color: tuple[int, int, int], size: int = 48) -> bytes:
    out = io.BytesIO()
    # noise so that the base64 holds both '+/' and '-_' characters in its two alphabets
    image = Image.effect_noise((size, size), 80).convert("RGB")
    image.paste(color, (0, 0, size // 2, size // 2))
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    for name in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=KEY) as fake:
        yield fake


def spec(server: FakeGemini, model: str, **overrides: Any) -> BackendSpec:
    return BackendSpec(type="gemini", model=model, base_url=server.base_url, timeout_s=5.0, **overrides)


def recording_client(backend: Any, sent: list[tuple[str, bytes, dict[str, str]]]) -> genai.Client:
    """A client with the backend's HTTP options that records each request its httpx pool sends (URL, body
    bytes, headers) with an httpx event hook: the SDK itself is not touched."""

    async def hook(request: Any) -> None:
        sent.append((str(request.url), request.content, dict(request.headers)))

    options = types.HttpOptions(
        base_url=backend.spec.base_url, api_version="v1beta", timeout=int(backend.spec.timeout_s * 1000),
        retry_options=None, async_client_args={"event_hooks": {"request": [hook]}},
    )
    return genai.Client(api_key=KEY, vertexai=False, http_options=options)


def backend_wire(backend: Any, call: Any) -> tuple[Any, list[tuple[str, bytes, dict[str, str]]]]:
    """The backend's own call, through a recording client of the running loop."""
    sent: list[tuple[str, bytes, dict[str, str]]] = []

    async def go() -> Any:
        backend._clients[asyncio.get_running_loop()] = recording_client(backend, sent)
        try:
            return await call()
        finally:
            await backend.aclose()

    return asyncio.run(go()), sent


def sdk_wire(backend: Any, model: str, contents: Any, config: Any) -> list[tuple[str, bytes, dict[str, str]]]:
    """What `client.aio.models.generate_content` sends for the same contents and config."""
    sent: list[tuple[str, bytes, dict[str, str]]] = []

    async def go() -> None:
        client = recording_client(backend, sent)
        try:
            await client.aio.models.generate_content(model=model, contents=contents, config=config)
        finally:
            await client.aio.aclose()

    asyncio.run(go())
    return sent


def same_request(ours: tuple[str, bytes, dict[str, str]], sdk: tuple[str, bytes, dict[str, str]]) -> None:
    assert ours[0] == sdk[0]
    assert ours[1] == sdk[1]  # byte for byte
    volatile = {"content-length", "x-goog-api-client", "user-agent"}
    assert {k: v for k, v in ours[2].items() if k not in volatile} == {
        k: v for k, v in sdk[2].items() if k not in volatile
    }
    assert ours[2]["content-length"] == sdk[2]["content-length"]


EDITS = [
    {},
    {
        "system": "You edit images.",
        "source_size": (640, 480),
        "params": {"image_size": "2K", "response_modalities": ["TEXT", "IMAGE"], "temperature": 0.4, "seed": 3},
    },
    {"params": {"aspect_ratio": "auto", "image_size": None, "max_tokens": 900, "stop": ["END"]}},
]


@pytest.mark.parametrize("overrides", EDITS)
def test_edit_body_is_the_sdk_body_byte_for_byte(server: FakeGemini, overrides: dict[str, Any]) -> None:
    backend = GeminiEditor(spec(server, "gemini-3-pro-image-preview"))
    request = EditRequest(
        model="gemini-3-pro-image-preview", instruction='Paint the "cube" red ✓.', image=png((250, 0, 0)),
        reference_answer="3", **overrides,
    )
    reply, ours = backend_wire(backend, lambda: backend.edit(request))
    contents, config = backend._edit_request(request)
    sdk = sdk_wire(backend, request.model, contents, config)
    assert len(ours) == len(sdk) == 1
    same_request(ours[0], sdk[0])
    # the fake read the same request both times, and the image arrived intact
    first, second = server.requests
    assert first.body == second.body and first.path == second.path
    sent = first.body["contents"][0]["parts"][1]["inlineData"]["data"]
    assert base64.urlsafe_b64decode(sent) == request.image
    assert reply.usage.images_out == 1


@pytest.mark.parametrize("structured", [True, False])
def test_text_body_is_the_sdk_body_byte_for_byte(server: FakeGemini, structured: bool) -> None:
    backend = GeminiText(spec(server, "gemini-2.5-flash", structured_outputs=structured), seed=7)
    request = TextRequest(
        task="judge", model="gemini-2.5-flash", system="Score the edit.", prompt="Instruction: é",
        images=[png((0, 200, 0)), png((0, 0, 200))], response_schema=SCHEMA, schema_name="judge",
        params={"temperature": 0, "max_tokens": 300},
    )
    _, ours = backend_wire(backend, lambda: backend.complete(request))
    contents, config, _ = backend._text_request(request)
    same_request(ours[0], sdk_wire(backend, request.model, contents, config)[0])


def test_the_repair_round_sends_the_sdk_body(server: FakeGemini) -> None:
    server.script(["invalid_json", "ok"])
    backend = GeminiText(spec(server, "gemini-2.5-flash", structured_outputs=False))
    request = TextRequest(task="judge", model="gemini-2.5-flash", prompt="Judge.", images=[png((9, 9, 9))],
                          response_schema=SCHEMA, schema_name="judge")
    reply, ours = backend_wire(backend, lambda: backend.complete(request))
    assert len(ours) == 2 and reply.data["visual_quality"]
    contents, config, _ = backend._text_request(request)
    repair = json.loads(ours[1][1])["contents"][2]["parts"][0]["text"]  # replies.repair_message's own text
    assert repair.startswith("Your previous reply could not be used")
    contents += [
        types.Content(role="model", parts=[types.Part.from_text(text="Here you go: {task_category: color, oops")]),
        types.Content(role="user", parts=[types.Part.from_text(text=repair)]),
    ]
    same_request(ours[1], sdk_wire(backend, request.model, contents, config)[0])


def test_request_json_fills_slots_in_order() -> None:
    from uniedit_synth.backends.gemini_backend import content_json

    images = [b"\xfb\xff" * 5, b"\x00\x01"]
    body = {"contents": [content_json("user", "two", images)]}
    data = json.loads(request_json(body, images))
    assert [base64.urlsafe_b64decode(p["inlineData"]["data"]) for p in data["contents"][0]["parts"][1:]] == images


# -- replies ------------------------------------------------------------------------------------------------
def editor(server: FakeGemini) -> GeminiEditor:
    return GeminiEditor(spec(server, "gemini-3-pro-image-preview"))


def run_edit(backend: GeminiEditor) -> Any:
    return run_edit_request(
        backend, EditRequest(model="gemini-3-pro-image-preview", instruction="Edit.", image=png((1, 2, 3)))
    )


def reply_with(parts: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}], **extra}


def test_reply_image_in_either_base64_alphabet_and_the_last_answer_image() -> None:
    backend = editor_offline()
    image = bytes(range(256)) * 3
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        parts = [
            {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(b"draft").decode()}, "thought": True},
            {"text": "Done: "},
            {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(b"first").decode()}},
            {"inlineData": {"mimeType": "image/png", "data": encode(image).decode()}},
            {"inlineData": {"mimeType": "text/plain", "data": base64.b64encode(b"x").decode()}},
        ]
        usage = {"promptTokenCount": "12", "candidatesTokenCount": 30, "thoughtsTokenCount": 5}
        reply = backend._edit_reply(reply_with(parts, usageMetadata=usage), "m")
        assert reply.image == image and reply.text == "Done: "
        assert reply.usage == Usage(input_tokens=12, output_tokens=35, images_in=1, images_out=2)


def editor_offline() -> GeminiEditor:
    return GeminiEditor(BackendSpec(type="gemini", model="gemini-3-pro-image-preview", base_url="http://127.0.0.1:9"))


@pytest.mark.parametrize(
    "reply",
    [
        reply_with([{"inlineData": {"mimeType": "image/png", "data": "not base64!"}}]),
        reply_with([{"text": 5}]),
        reply_with("parts"),  # type: ignore[arg-type]
        {"candidates": ["x"]},
        {"candidates": [{"finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": "many"}},
    ],
)
def test_replies_off_the_schema_are_malformed(reply: dict[str, Any]) -> None:
    with pytest.raises(MalformedReply, match="did not match the API schema"):
        editor_offline()._edit_reply(reply, "m")


def test_no_candidates_is_a_no_image_reply_offline() -> None:
    with pytest.raises(NoImageReply):
        editor_offline()._edit_reply({"candidates": [], "usageMetadata": {"promptTokenCount": 3}}, "m")


def test_a_continued_generation_is_resumed_and_merged_as_the_sdk_does(server: FakeGemini) -> None:
    backend = editor(server)
    request = EditRequest(model="gemini-3-pro-image-preview", instruction="Edit.", image=png((4, 5, 6)),
                          params={"response_modalities": ["TEXT", "IMAGE"]})
    server.script(["continuation", "ok"])
    reply, ours = backend_wire(backend, lambda: backend.edit(request))
    resumed = json.loads(ours[1][1])
    assert len(ours) == 2 and resumed["continuationToken"] and "continuationToken" not in json.loads(ours[0][1])

    server.script(["continuation", "ok"])
    sent: list[tuple[str, bytes, dict[str, str]]] = []
    contents, config = backend._edit_request(request)

    async def through_the_sdk() -> Any:
        client = recording_client(backend, sent)
        try:
            return await client.aio.models.generate_content(model=request.model, contents=contents, config=config)
        finally:
            await client.aio.aclose()

    sdk_reply = backend._edit_reply(asyncio.run(through_the_sdk()), request.model)
    assert len(sent) == 2
    same_request(ours[0], sent[0])
    same_request(ours[1], sent[1])
    assert reply == sdk_reply and reply.text == "Working on it. Here is the edited image."
    assert reply.usage.output_tokens == sum(int(r.usage["candidatesTokenCount"]) for r in server.requests[:2])


# -- the fake server's own shortcuts ------------------------------------------------------------------------
def test_the_fakes_image_reply_writes_the_bytes_json_dumps_writes(server: FakeGemini) -> None:
    from tests.fakes.gemini_server import ImageReply

    blob = {"mimeType": "image/png", "data": base64.b64encode(png((7, 7, 7))).decode()}
    body = {"candidates": [{"content": {"parts": [{"text": "é \"q\""}, {"inlineData": blob}]}}], "x": [1.5, None]}
    assert ImageReply(body, blob).payload() == json.dumps(body).encode()
    assert blob["data"] != "" and body["candidates"][0]["content"]["parts"][1]["inlineData"] is blob


@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode,
                                    lambda b: base64.urlsafe_b64encode(b).rstrip(b"="),
                                    lambda b: base64.b64encode(b)[:8] + b"\n" + base64.b64encode(b)[8:]])
def test_the_fake_reads_input_images_in_any_base64(encode: Any) -> None:
    from tests.fakes.gemini_server import _image_bytes

    image = bytes(range(256)) + b"\xfb\xff\xfe"
    assert _image_bytes(encode(image).decode()) == image
