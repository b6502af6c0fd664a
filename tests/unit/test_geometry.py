"""Keeping the source's geometry: each editor is asked for the closest geometry it supports, through the real
google-genai / openai SDKs against the fake servers, and the edit stage brings the reply back to the source's
size."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import pytest
from google.genai import types
from PIL import Image

from tests.fakes import FakeGemini, FakeOpenAI
from uniedit_synth.backends.base import EditRequest, request_key
from uniedit_synth.backends.diffusers_backend import DiffusersEditor
from uniedit_synth.backends.gemini_backend import GeminiEditor
from uniedit_synth.backends.geometry import (
    GEMINI_ASPECT_RATIOS,
    gemini_aspect_ratio,
    gpt_image_size,
    rounded_size,
)
from uniedit_synth.backends.openai_backend import OpenAIEditor
from uniedit_synth.core.config import BackendSpec, load_pipeline
from uniedit_synth.core.errors import ConfigError

KEY = "geom-canary-5d2c"


def png(size: tuple[int, int], colour: tuple[int, int, int] = (90, 120, 150)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    for name in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def run_edit(backend: Any, request: EditRequest) -> Any:
    async def go() -> Any:
        try:
            return await backend.edit(request)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_the_gemini_ratios_are_the_sdks_own_list() -> None:
    described = types.ImageConfig.model_fields["aspect_ratio"].description or ""
    assert tuple(re.findall(r'"(\d+:\d+)"', described)) == GEMINI_ASPECT_RATIOS


@pytest.mark.parametrize(
    ("size", "ratio", "gpt"),
    [
        ((320, 240), "4:3", "1536x1024"),
        ((240, 320), "3:4", "1024x1536"),
        ((500, 500), "1:1", "1024x1024"),
        ((1920, 1080), "16:9", "1536x1024"),
        ((600, 400), "3:2", "1536x1024"),
        ((2100, 900), "21:9", "1536x1024"),
        ((300, 330), "1:1", "1024x1024"),
    ],
)
def test_closest_supported_geometry(size: tuple[int, int], ratio: str, gpt: str) -> None:
    assert gemini_aspect_ratio(size) == ratio
    assert gpt_image_size(size) == gpt


def test_diffusers_size_is_the_sources_rounded_to_the_models_multiple() -> None:
    assert rounded_size((320, 240)) == (320, 240)
    assert rounded_size((333, 250)) == (336, 256)
    assert rounded_size((640, 480), long_side=1024) == (1024, 768)
    spec = BackendSpec(type="diffusers", model="some/editor", options={})
    editor = DiffusersEditor(spec)
    request = EditRequest(model="some/editor", instruction="x", image=png((333, 250)), source_size=(333, 250))
    params = editor.payload(request)["params"]
    assert (params["width"], params["height"]) == (336, 256)
    unkept = editor.payload(request.model_copy(update={"source_size": None}))["params"]
    assert (unkept["width"], unkept["height"]) == (333, 250)  # as before keep_geometry


def test_gemini_request_carries_the_matched_aspect_ratio() -> None:
    with FakeGemini(api_key=KEY) as fake:
        fake.edit_geometry = True
        spec = BackendSpec(
            type="gemini", model="gemini-3-pro-image-preview", base_url=fake.base_url, timeout_s=5
        )
        source = png((320, 240))
        request = EditRequest(model=spec.model, instruction="paint it", image=source, source_size=(320, 240))
        reply = run_edit(GeminiEditor(spec), request)
        assert fake.requests[0].body["generationConfig"]["imageConfig"]["aspectRatio"] == "4:3"
        assert size_of(reply.image) == (1184, 864)  # what the model returns for 4:3 at 1K
        run_edit(GeminiEditor(spec), request.model_copy(update={"source_size": None}))
        assert fake.requests[1].body["generationConfig"]["imageConfig"]["aspectRatio"] == "1:1"  # as before
        explicit = request.model_copy(update={"params": {"aspect_ratio": "16:9"}})
        run_edit(GeminiEditor(spec), explicit)
        assert fake.requests[2].body["generationConfig"]["imageConfig"]["aspectRatio"] == "16:9"


def test_gpt_image_request_carries_the_matched_size() -> None:
    with FakeOpenAI(api_key=KEY) as fake:
        fake.edit_geometry = True
        spec = BackendSpec(type="openai", model="gpt-image-1", base_url=fake.base_url, timeout_s=5)
        request = EditRequest(
            model=spec.model, instruction="paint it", image=png((240, 320)), source_size=(240, 320),
            params={"quality": "high"},
        )  # fmt: skip
        reply = run_edit(OpenAIEditor(spec), request)
        assert fake.requests[0].body["fields"]["size"] == "1024x1536"
        assert size_of(reply.image) == (1024, 1536)
        run_edit(OpenAIEditor(spec), request.model_copy(update={"params": {"size": "auto"}}))
        assert fake.requests[1].body["fields"]["size"] == "auto"  # an explicit setting wins


def test_cache_key_without_source_size_is_the_old_one() -> None:
    request = EditRequest(model="m", instruction="x", image=b"img")
    payload = request.model_dump()
    del payload["source_size"]
    import hashlib
    import json

    payload["image_sha256"] = [hashlib.sha256(payload.pop("image")).hexdigest()]
    blob = json.dumps({"kind": "edit", **payload}, sort_keys=True, ensure_ascii=False, default=str)
    assert request_key("edit", request) == hashlib.sha256(blob.encode()).hexdigest()
    assert request_key("edit", request.model_copy(update={"source_size": (4, 3)})) != request_key(
        "edit", request
    )


def test_a_fixed_geometry_needs_keep_geometry_off() -> None:
    with pytest.raises(ConfigError, match="keep_geometry"):
        load_pipeline("uniedit", {"stages": {"edit": {"params": {"aspect_ratio": "1:1"}}}})
    with pytest.raises(ConfigError, match="keep_geometry"):
        load_pipeline("openai", {"stages": {"edit": {"params": {"size": "1024x1024"}}}})
    release = load_pipeline(
        "uniedit", {"stages": {"edit": {"keep_geometry": False, "params": {"aspect_ratio": "1:1"}}}}
    )
    assert release.stages.edit.params["aspect_ratio"] == "1:1" and not release.stages.edit.keep_geometry
    with pytest.raises(ConfigError, match="quote it"):  # YAML 1.1 reads 1:1 as 61
        load_pipeline(
            "uniedit", {"stages": {"edit": {"keep_geometry": False, "params": {"aspect_ratio": 61}}}}
        )
    for name in ("default", "uniedit", "openai", "local-vllm", "open-weights"):
        assert load_pipeline(name).stages.edit.keep_geometry


def test_audit_flags_pairs_whose_aspect_differs(tmp_path) -> None:
    from tests.unit.synthetic_runs import make_sample, write_run
    from uniedit_synth.audit.checks import flagged_ids, format_audit, run_audit

    samples = [make_sample(i) for i in range(4)]
    for sample, size in zip(
        samples[:2], [(64, 48), (66, 64)], strict=True
    ):  # 4:3 (33 % off), 3 % off + a bit
        sample.edited_image = png(size)
    samples[2].edited_image = png((65, 64))  # 1.6 % off: within the tolerance
    run = write_run(tmp_path / "run", samples)
    for use_cache in (True, True):  # the second pass reads the fingerprint cache: same figures
        result = run_audit(str(run), use_cache=use_cache)
        assert result["aspect_mismatch"]["ids"] == ["synth/0000", "synth/0001"]
        assert result["aspect_mismatch"]["differences"]["synth/0000"] == pytest.approx(1 / 3, abs=1e-3)
    assert "aspect mismatches    2 (50.0 %)" in format_audit(result)
    assert set(flagged_ids(result, ["aspect_mismatch"])) == {"synth/0000", "synth/0001"}
