"""The rewrite prompt's exemplar pools (prompts/examples/, two worked examples drawn per record) and grounding
(`stages.rewrite.with_image`: the source image sent to the rewriter), through the real openai and google-genai
SDKs against the fake servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import glob
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.fakes import FakeGemini, FakeOpenAI
from uniedit_synth.api import synth
from uniedit_synth.backends.registry import create_backend
from uniedit_synth.core.bundled import prompts_dir
from uniedit_synth.core.config import RetrySpec, load_pipeline
from uniedit_synth.core.errors import ConfigError
from uniedit_synth.core.prompts import format_example, load_examples
from uniedit_synth.core.records import VQARecord
from uniedit_synth.engine.calls import ModelCaller
from uniedit_synth.engine.coordinator import Coordinator
from uniedit_synth.engine.run_info import prompt_files
from uniedit_synth.run.cache import ResponseCache
from uniedit_synth.stages.base import StageContext, WorkItem
from uniedit_synth.stages.rewrite import RewriteStage

KEY = "sk-test-grounding-key"
POOL_CATEGORIES = ("caption", "color", "count", "generic", "knowledge", "location", "math", "ocr", "shape")


def _sentences(text: str) -> list[str]:
    return [s.strip().lower() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


# ---------------------------------------------------------------------------------------- the pools


def test_every_pool_has_twenty_varied_worked_examples() -> None:
    closings: Counter = Counter()
    for category in POOL_CATEGORIES:
        pool = load_examples(prompts_dir(), f"examples/{category}.jsonl")
        assert len(pool.examples) >= 20, category
        assert len({e["question"] for e in pool.examples}) == len(pool.examples)
        closings.update(_sentences(e["instruction"])[-1] for e in pool.examples)
        # the instructions open in many ways, not one template
        assert len({e["instruction"].split()[0].lower() for e in pool.examples}) >= 6, category
    assert max(closings.values()) == 1, closings.most_common(3)  # no closing sentence shared by two examples


def test_two_examples_are_drawn_per_record_seeded_by_seed_and_id() -> None:
    pool = load_examples(prompts_dir(), "examples/color.jsonl")
    drawn = pool.draw(0, "scenes/0-000001", 2)
    assert len(drawn) == 2 and drawn[0] != drawn[1]
    assert pool.draw(0, "scenes/0-000001", 2) == drawn
    per_record = {json.dumps(pool.draw(0, f"r{i}", 2)) for i in range(40)}
    assert len(per_record) > 20
    assert pool.draw(1, "scenes/0-000001", 2) != drawn or pool.draw(2, "scenes/0-000001", 2) != drawn


def test_a_malformed_pool_line_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "color.jsonl").write_text('{"question": "q?", "answer": "a"}\n')
    with pytest.raises(ConfigError, match="color.jsonl:1"):
        load_examples(tmp_path, "examples/color.jsonl")


def test_the_pools_are_hashed_into_the_pipeline() -> None:
    files = prompt_files(load_pipeline("default"))
    assert "examples/color.jsonl" in files and "examples/generic.jsonl" in files
    off = load_pipeline("default", overrides={"stages": {"rewrite": {"examples": None}}})
    assert not any(name.startswith("examples/") for name in prompt_files(off))


def test_builtin_rewrites_never_clone_an_example(tmp_path: Path) -> None:
    out = tmp_path / "run"
    synth("default", out=out, limit=70, overrides={"engine": {"kind": "inline", "shard_size": 70}})
    import pyarrow.parquet as pq

    rows = [r for kind in ("data", "rejects") for p in sorted(glob.glob(str(out / kind / "*.parquet")))
            for r in pq.read_table(p).to_pylist() if r["edit_instruction"]]
    assert len(rows) > 30
    example_sentences = {s for c in POOL_CATEGORIES for e in load_examples(prompts_dir(), f"examples/{c}.jsonl").examples
                         for s in _sentences(e["instruction"])}
    cloned = [s for r in rows for s in _sentences(r["edit_instruction"]) if s in example_sentences]
    assert cloned == []
    versions = {json.loads(r["prompt_versions"]).get("rewrite") for r in rows}
    assert all(v and v.startswith("rewrite/") for v in versions)  # recorded (and naming the pool: see below)


# ---------------------------------------------------------------------------------------- real SDKs


def png(colour: tuple[int, int, int] = (40, 160, 90)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv("UE_GROUNDING_KEY", KEY)
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def gemini_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    monkeypatch.setenv("UE_GROUNDING_KEY", KEY)
    with FakeGemini(api_key=KEY) as fake:
        yield fake


def rewrite_stage(base_url: str, kind: str, tmp_path: Path, rewrite: dict[str, Any] | None = None) -> RewriteStage:
    model = "gpt-4o" if kind == "openai" else "gemini-2.5-flash"
    config = load_pipeline(
        "uniedit",
        overrides={
            "backends": {"writer": {"type": kind, "model": model, "base_url": base_url,
                                    "api_key_env": "UE_GROUNDING_KEY", "timeout_s": 5}},
            "stages": {"rewrite": {"backend": "writer", "styles": {"color": {"synthesis": 1.0}},
                                   **(rewrite or {})}},
        },
    )
    backend = create_backend("writer", config.backends["writer"], "text", seed=0)
    caller = ModelCaller("rewrite", backend, cache=ResponseCache(tmp_path / "cache"), coordinator=Coordinator({}),
                         prices={}, retry=RetrySpec(max_attempts=1), rate_limited=False)
    return RewriteStage(StageContext(config=config, callers={"rewrite": caller}, models={"rewrite": model}))


def item(image: bytes) -> WorkItem:
    record = VQARecord(id="test/kite", source="test", image=image, question="What colour is the kite?",
                       answer="green", category="color")
    return WorkItem(record=record, shard=0, image=image, task_category="color", process_answer="green")


def sent_images_openai(server: FakeOpenAI) -> list[bytes]:
    [request] = [r for r in server.requests if r.task == "rewrite"]
    images = []
    for message in request.body["messages"]:
        if isinstance(message["content"], list):
            for part in message["content"]:
                if part.get("type") == "image_url":
                    images.append(base64.b64decode(part["image_url"]["url"].split(",", 1)[1]))
    return images


def prompt_of_openai(server: FakeOpenAI) -> str:
    [request] = [r for r in server.requests if r.task == "rewrite"]
    return "\n".join(m["content"] if isinstance(m["content"], str) else
                     " ".join(p.get("text", "") for p in m["content"]) for m in request.body["messages"])


def test_openai_rewriter_receives_the_source_image_and_two_examples(openai_server: FakeOpenAI,
                                                                    tmp_path: Path) -> None:
    image = png()
    stage = rewrite_stage(openai_server.base_url, "openai", tmp_path)
    assert stage.spec.with_image  # on in the uniedit pipeline
    done = asyncio.run(stage(item(image)))
    assert sent_images_openai(openai_server) == [image]
    prompt = prompt_of_openai(openai_server)
    drawn = load_examples(prompts_dir(), "examples/color.jsonl").draw(0, "test/kite", 2)
    for example in drawn:
        assert format_example(example).splitlines()[-1] in prompt
    assert prompt.count("\ninstruction: ") == 2
    version = done.prompt_versions["rewrite"]
    plain = stage.prompt_for("color").version
    assert version.startswith("rewrite/color.txt@") and version != plain  # the pool is part of the version


def test_openai_rewriter_without_image_or_examples(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    stage = rewrite_stage(openai_server.base_url, "openai", tmp_path, {"with_image": False, "examples": None})
    done = asyncio.run(stage(item(png())))
    assert sent_images_openai(openai_server) == []
    assert "instruction: " not in prompt_of_openai(openai_server)
    assert done.prompt_versions["rewrite"] == stage.prompt_for("color").version


def test_gemini_rewriter_receives_the_source_image(gemini_server: FakeGemini, tmp_path: Path) -> None:
    image = png((200, 30, 30))
    stage = rewrite_stage(gemini_server.base_url, "gemini", tmp_path)
    asyncio.run(stage(item(image)))
    [request] = [r for r in gemini_server.requests if r.task == "rewrite"]
    parts = [p for content in request.body["contents"] for p in content.get("parts", [])]
    inline = [p.get("inline_data") or p.get("inlineData") for p in parts if p.get("inline_data") or p.get("inlineData")]
    assert [base64.b64decode(d["data"]) for d in inline] == [image]
    assert any("instruction: " in (p.get("text") or "") for p in parts)


def test_release_faithful_defaults_send_no_image() -> None:
    assert load_pipeline("uniedit").stages.rewrite.with_image
    assert load_pipeline("openai").stages.rewrite.with_image
    assert not load_pipeline("default").stages.rewrite.with_image  # the builtin rewriter reads no pixels
    release = load_pipeline("uniedit", overrides={"stages": {"rewrite": {"with_image": False}}})
    assert not release.stages.rewrite.with_image


def test_an_own_prompts_dir_without_pools_uses_the_shipped_ones(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    import shutil

    own = tmp_path / "prompts"
    shutil.copytree(prompts_dir(), own, ignore=shutil.ignore_patterns("examples"))
    stage = rewrite_stage(openai_server.base_url, "openai", tmp_path)
    stage.ctx.config.prompts_dir = str(own)
    assert stage.pool_for("color") == load_examples(prompts_dir(), "examples/color.jsonl")
    stage.spec.examples = "mine/{category}.jsonl"  # a pool the user named must be there
    with pytest.raises(ConfigError, match="exemplar pool not found"):
        stage.pool_for("color")
