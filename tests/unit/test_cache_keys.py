"""Cache keys hold what reaches the model: `context` only for backends that read it; old entries stay valid."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from uniedit_synth.backends.base import (
    Backend,
    EditRequest,
    TextReply,
    TextRequest,
    request_key,
)
from uniedit_synth.core.config import BackendSpec, RetrySpec
from uniedit_synth.core.digests import image_digest
from uniedit_synth.engine.calls import Ledger, ModelCaller
from uniedit_synth.engine.coordinator import Coordinator
from uniedit_synth.run.cache import KEYS_MARKER, ResponseCache
from uniedit_synth.run.store import RunDir


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


# -- keys stay what they were; a new run's cache skips the second (old-key) lookup ----------------------------
FIXED_TEXT = TextRequest(task="judge", model="gpt-4o", system="sys", prompt="is it red?",
                         images=[b"\x89PNG-source", b"edited"],
                         response_schema={"type": "object", "properties": {"ok": {"type": "boolean"}}},
                         schema_name="verdict", params={"temperature": 0}, context={"scene": [1, 2]})
FIXED_EDIT = EditRequest(model="gpt-image-1", instruction="make the cube blue", image=b"\x89PNG-source",
                         context={"program": "x"}, source_size=(256, 256))
FIXED_EDIT_PLAIN = EditRequest(model="gpt-image-1", instruction="make the cube blue", image=b"\x89PNG-source")
#: (kind, request) -> (key with context, key without), as main computed them before the CPU-per-record work
FIXED_KEYS = [
    ("text", FIXED_TEXT, "0f578657d8b8e8edffc3efe3d94e7f7020e62dab06790de26e7a34e55e8f90f3",
     "5b378a3643d4bbc666199742d03c0d175f38206e8a0f0597e6ec4f0b5e16123f"),
    ("edit", FIXED_EDIT, "f4af3dcae3273c2cfdcf57a496e7f9ed87f4557822c6ec2cf14dc6dc75dd01d0",
     "5172bc532225fbcc53820b560923e851304fda18fea9e08f5397f8d20a5aac6d"),
    ("edit", FIXED_EDIT_PLAIN, "7eea9cabfa76eff4b8d4daccdfca8a29c0aa3de1576456dc4549a0777db39e50",
     "2cf32a68f456da99cff1f2b52bc30be963b0540004dd3f3c96e02ce0921c674e"),
]


@pytest.mark.parametrize("kind,req,with_context,without", FIXED_KEYS)
def test_keys_of_a_fixed_request_are_unchanged(kind, req, with_context, without):
    for _ in range(2):  # the second time the image digests are remembered ones
        assert request_key(kind, req) == with_context
        assert request_key(kind, req, with_context=False) == without


def test_a_remembered_image_digest_belongs_to_the_same_bytes_only():
    first = bytes(range(256)) * 8
    assert image_digest(first) == hashlib.sha256(first).hexdigest()
    other = bytes(reversed(first))
    assert image_digest(other) == hashlib.sha256(other).hexdigest()
    grown = bytearray(first)
    assert image_digest(grown) == hashlib.sha256(grown).hexdigest()
    grown.extend(b"more")  # a mutable buffer is never remembered
    assert image_digest(grown) == hashlib.sha256(grown).hexdigest()


def test_a_new_runs_cache_is_marked_and_misses_look_up_one_key(tmp_path: Path):
    run = RunDir(tmp_path / "run")
    run.create_dirs()
    cache = ResponseCache(run.cache_fs())
    assert not cache.legacy_keys and (run.cache_dir / KEYS_MARKER).is_file()
    # an entry under the old key cannot be in such a cache: planted by hand, it is not looked up
    old = request_key("text", request({"program": 1}))
    cache.put(old, {"data": {"n": 41}, "model": "m", "_call": {"cost_usd": 0.5, "latency_s": 1.0}})
    backend = CountingText(reads_context=False)
    assert ask(caller(backend, run.cache_dir), request({"program": 1})) == [{"n": 1}] and backend.calls == 1


def test_an_existing_runs_cache_is_not_marked_and_keeps_its_old_entries(tmp_path: Path):
    run = RunDir(tmp_path / "run")
    old = request_key("text", request({"program": 1}))  # a cache written before the keys changed
    ResponseCache(tmp_path / "run" / "cache").put(
        old, {"data": {"n": 41}, "model": "m", "_call": {"cost_usd": 0.5, "latency_s": 1.0}})
    run.create_dirs()  # the rerun
    assert not (run.cache_dir / KEYS_MARKER).exists() and ResponseCache(run.cache_fs()).legacy_keys
    backend = CountingText(reads_context=False)
    assert ask(caller(backend, run.cache_dir), request({"program": 1})) == [{"n": 41}] and backend.calls == 0


def test_a_cache_with_only_packs_is_not_marked(tmp_path: Path):
    (tmp_path / "cache" / "packs").mkdir(parents=True)
    (tmp_path / "cache" / "packs" / "shard-00000.pack").write_bytes(b"x")
    assert not ResponseCache(tmp_path / "cache").mark_new()
    assert ResponseCache(tmp_path / "cache").legacy_keys
    assert ResponseCache(tmp_path / "empty").mark_new() and not ResponseCache(tmp_path / "empty").legacy_keys


def test_remembered_digests_hold_at_most_the_budget(monkeypatch):
    from uniedit_synth.core import digests

    monkeypatch.setattr(digests, "DIGEST_BUDGET", 4000)
    images = [bytes([n]) * 900 for n in range(10)]
    assert [image_digest(b) for b in images] == [hashlib.sha256(b).hexdigest() for b in images]
    assert digests._held <= 4000 and digests._digests[id(images[-1])][0] is images[-1]
    assert id(images[0]) not in digests._digests  # the oldest went first
