"""Fake OpenAI and Gemini servers on 127.0.0.1 that speak the real REST protocols, for tests and benchmarks.

`FakeOpenAI` / `FakeGemini` are context managers giving `base_url`; they record every request, add latency,
and answer from a script of faults (`server.script(["429:2", "500", "ok"])`) or a seeded random fault mode.
Run one by hand with `python -m tests.fakes.openai_server --port 0 --latency 0.05` (or `gemini_server`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import DEFAULT_REPLIES, Fault, RecordedRequest
    from .gemini_server import FakeGemini
    from .openai_server import FakeOpenAI

__all__ = ["DEFAULT_REPLIES", "Fault", "FakeGemini", "FakeOpenAI", "RecordedRequest"]

_WHERE = {
    "DEFAULT_REPLIES": "base",
    "Fault": "base",
    "RecordedRequest": "base",
    "FakeGemini": "gemini_server",
    "FakeOpenAI": "openai_server",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m tests.fakes.openai_server` does not import the module twice.
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{_WHERE[name]}", __name__), name)
