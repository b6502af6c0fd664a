"""Every SDK client of a process verifies servers with one TLS context (backends/provider.shared_ssl_context):
building one loads the CA bundle (~30 ms of CPU), and each backend made its own client for each event loop."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from uniedit_synth.backends.gemini_backend import GeminiEditor
from uniedit_synth.backends.openai_backend import OpenAIEditor, OpenAIText
from uniedit_synth.backends.provider import shared_ssl_context
from uniedit_synth.core.config import BackendSpec


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("GEMINI_API_KEY", "gm-test")


def contexts(backends: list) -> list[ssl.SSLContext]:
    """The TLS context of each backend's client on the running loop (httpx's pool holds it)."""
    out = []
    for backend in backends:
        client = backend._client()
        http = client.aio._api_client._async_httpx_client if isinstance(backend, GeminiEditor) else client._client
        out.append(http._transport._pool._ssl_context)
    return out


def test_openai_and_gemini_clients_of_every_loop_share_one_context() -> None:
    backends = [
        OpenAIText(BackendSpec(type="openai", model="gpt-4o")),
        OpenAIEditor(BackendSpec(type="openai", model="gpt-image-1")),
        GeminiEditor(BackendSpec(type="gemini", model="gemini-2.5-flash-image", options={"max_connections": 8})),
    ]

    async def on_a_loop() -> list[ssl.SSLContext]:
        try:
            return contexts(backends)
        finally:
            for backend in backends:
                await backend.aclose()

    first, second = asyncio.run(on_a_loop()), asyncio.run(on_a_loop())
    shared = shared_ssl_context()
    assert isinstance(shared, ssl.SSLContext) and shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname
    assert all(context is shared for context in first + second)
