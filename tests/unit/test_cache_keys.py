"""Cache keys hold what reaches the model: `context` only for backends that read it; old entries stay valid."""

from __future__ import annotations

import asyncio
from pathlib import Path

from uniedit_synth.backends.base import Backend, TextReply, TextRequest, request_key
from uniedit_synth.core.config import BackendSpec, RetrySpec
from uniedit_synth.engine.calls import Ledger, ModelCaller
from uniedit_synth.engine.coordinator import Coordinator
from uniedit_synth.run.cache import ResponseCache


class CountingText(Backend):
    provider = "fake"

    def __init__(self, reads_context: bool):
        self.spec = BackendSpec(type="fake", model="m")
        self.reads_context = reads_context
        self.calls = 0

    async def complete(self, request: TextRequest) -> TextReply:
        self.calls += 1
        return TextReply(data={"n": self.calls}, model="m")


def request(context: dict) -> TextRequest:
    return TextRequest(task="judge", model="m", system="s", prompt="p", context=context)


def caller(backend, cache_dir: Path) -> ModelCaller:
    return ModelCaller("judge", backend, cache=ResponseCache(cache_dir), coordinator=Coordinator(rate_limits={}),
                       prices={}, retry=RetrySpec(), rate_limited=False)


def ask(call: ModelCaller, *requests: TextRequest) -> list[dict]:
    async def go():
        return [(await call.text(r, Ledger())).data for r in requests]

    return asyncio.run(go())


def test_context_is_not_in_a_real_backends_key(tmp_path: Path):
    backend = CountingText(reads_context=False)
    replies = ask(caller(backend, tmp_path), request({"program": 1}), request({"program": 2, "new": True}))
    assert backend.calls == 1 and replies == [{"n": 1}, {"n": 1}]  # same prompt: one paid call


def test_context_is_in_a_builtin_backends_key(tmp_path: Path):
    backend = CountingText(reads_context=True)
    ask(caller(backend, tmp_path), request({"program": 1}), request({"program": 2}))
    assert backend.calls == 2
    assert request_key("text", request({"a": 1})) != request_key("text", request({"a": 1}), with_context=False)


def test_entries_cached_under_the_old_key_are_still_found(tmp_path: Path):
    cache = ResponseCache(tmp_path)
    old = request_key("text", request({"program": 1}))  # how every run before this change keyed it
    cache.put(old, {"data": {"n": 41}, "model": "m", "_call": {"cost_usd": 0.5, "latency_s": 1.0}})
    backend = CountingText(reads_context=False)
    assert ask(caller(backend, tmp_path), request({"program": 1})) == [{"n": 41}]
    assert backend.calls == 0
    new = request_key("text", request({"program": 1}), with_context=False)
    assert cache.peek(new)[0] is not None  # copied under the new key
