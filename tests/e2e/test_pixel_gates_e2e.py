"""`uniedit synth` with the real openai / google-genai SDKs against the fakes: edits come back in the source's
geometry (the request asks for the closest the model supports, the reply is resized to the source's size),
and an edit the pixel gates catch never reaches the judge."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from tests.conftest import run_cli
from tests.e2e.test_backends_e2e import (
    FAST_RETRY,
    GEMINI_KEY,
    KEY_ENV,
    OPENAI_KEY,
    assert_no_key_anywhere,
    backend_args,
)
from tests.fakes import FakeGemini, FakeOpenAI

pytestmark = pytest.mark.e2e

SOURCE_SIZE = (320, 240)  # 4:3, as the sources


def vqa_source(tmp_path: Path, count: int = 3) -> Path:
    """A JSONL source of 4:3 pictures with a few shapes on a gradient."""
    images = tmp_path / "images"
    images.mkdir()
    lines = []
    for i in range(count):
        picture = Image.linear_gradient("L").resize(SOURCE_SIZE).convert("RGB")
        draw = ImageDraw.Draw(picture)
        draw.ellipse((30 + 20 * i, 40, 110 + 20 * i, 120), fill=(200, 40, 40))
        draw.rectangle((200, 150, 280, 210), fill=(40, 90, 200))
        picture.save(images / f"{i}.png")
        lines.append(json.dumps({"id": f"q{i}", "image": f"{i}.png", "question": f"What colour is shape {i}?",
                                 "answer": "red"}))  # fmt: skip
    (tmp_path / "vqa.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "vqa.jsonl"


def synth(tmp_path: Path, pipeline: str, openai_fake: FakeOpenAI, gemini_fake: FakeGemini | None) -> Path:
    out = tmp_path / "run"
    source = vqa_source(tmp_path)
    proc = run_cli(
        "synth", "--pipeline", pipeline, "--source", str(source), "--image-root", str(tmp_path / "images"),
        "--out", str(out), "--engine", "inline", "--no-progress",
        *backend_args(pipeline, openai_fake.base_url, gemini_fake.base_url if gemini_fake else ""),
        *FAST_RETRY, env=KEY_ENV, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_no_key_anywhere(out, proc.stdout, proc.stderr)
    return out


def rows(out: Path) -> list[dict[str, Any]]:
    return [r for kind in ("data", "rejects") for p in sorted((out / kind).glob("shard-*.parquet"))
            for r in pq.read_table(p).to_pylist()]  # fmt: skip


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def test_gemini_edits_come_back_at_the_sources_size(tmp_path: Path) -> None:
    with FakeOpenAI(api_key=OPENAI_KEY) as openai_fake, FakeGemini(api_key=GEMINI_KEY) as gemini_fake:
        gemini_fake.edit_geometry = True  # replies at 1184x864, as the model does for 4:3 at 1K
        out = synth(tmp_path, "uniedit", openai_fake, gemini_fake)
        edits = [r for r in gemini_fake.requests if r.task == "edit"]
    assert edits and all(r.edit_geometry == "4:3" for r in edits)
    found = rows(out)
    accepted = [r for r in found if r["accepted"]]
    assert accepted, Counter(r["reject_reason"] for r in found)
    for row in found:
        if row["edited_image"]:
            assert size_of(row["edited_image"]["bytes"]) == SOURCE_SIZE


def test_gpt_image_edits_come_back_at_the_sources_size(tmp_path: Path) -> None:
    with FakeOpenAI(api_key=OPENAI_KEY) as openai_fake:
        openai_fake.edit_geometry = True  # replies at 1536x1024
        out = synth(tmp_path, "openai", openai_fake, None)
        edits = [r for r in openai_fake.requests if r.task == "edit"]
        judged = [r for r in openai_fake.requests if r.task == "judge"]
    assert edits and all(r.edit_geometry == "1536x1024" for r in edits)
    assert judged  # the fake counts judge calls under this name (the no-op test below counts none)
    found = rows(out)
    assert [r for r in found if r["accepted"]], Counter(r["reject_reason"] for r in found)
    for row in found:
        if row["edited_image"]:
            assert size_of(row["edited_image"]["bytes"]) == SOURCE_SIZE


def test_a_no_op_edit_is_rejected_before_the_judge_is_paid(tmp_path: Path) -> None:
    with FakeOpenAI(api_key=OPENAI_KEY) as openai_fake:
        openai_fake.script(lambda request: "unchanged" if request.task == "edit" else None)
        out = synth(tmp_path, "openai", openai_fake, None)
        tasks = Counter(r.task for r in openai_fake.requests)
    found = rows(out)
    assert Counter(r["reject_reason"] for r in found) == {"no_op_edit": 3}
    assert tasks["edit"] == 3 * 2  # each record edited again once (max_attempts 2), then rejected
    assert tasks["judge"] == 0  # no judge call paid for a caught pair
    assert all("no_op_delta" in r["reject_detail"] for r in found)
