"""Judge presets: `three_axis` (default) and `release` (the Uni-Edit release's visual-quality filter)."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from uniedit_synth.backends.base import TextRequest
from uniedit_synth.core.bundled import prompts_dir
from uniedit_synth.core.config import BackendSpec, JudgeSpec
from uniedit_synth.core.prompts import load_prompt
from uniedit_synth.offline.builtin import BuiltinText


def test_three_axis_is_the_default() -> None:
    spec = JudgeSpec(backend="b")
    assert spec.preset == "three_axis" and spec.prompt == "judge.txt"
    assert spec.thresholds == {"instruction_following": 3, "visual_quality": 3, "coherence": 3}


def test_release_preset_keeps_visual_quality_3_with_its_own_prompt() -> None:
    spec = JudgeSpec(backend="b", preset="release")
    assert spec.prompt == "judge_release.txt" and spec.thresholds == {"visual_quality": 3}
    # a pipeline that names the three-axis prompt gets the release prompt: that one cannot fill this schema
    assert JudgeSpec(backend="b", preset="release", prompt="judge.txt").prompt == "judge_release.txt"
    assert JudgeSpec(backend="b", preset="release", prompt="my/judge.txt").prompt == "my/judge.txt"
    assert JudgeSpec(backend="b", preset="release", thresholds={"visual_quality": 4}).thresholds == {
        "visual_quality": 4
    }
    with pytest.raises(ValueError, match="visual_quality only"):
        JudgeSpec(backend="b", preset="release", thresholds={"visual_quality": 3, "coherence": 1})


def test_release_prompt_is_the_releases_quality_assessor() -> None:
    prompt = load_prompt(prompts_dir(), "judge_release.txt")
    for phrase in ("Image Quality Assessor", "do not need to consider any editing instructions", "Acceptable",
                   '"score"'):
        assert phrase in prompt.system
    assert "$" not in prompt.user  # no VQA text reaches this judge


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("image", "score"), [(_png(), 5), (b"not an image", 1)])
def test_builtin_release_judge_checks_the_edited_image(image: bytes, score: int) -> None:
    backend = BuiltinText(BackendSpec(type="builtin", model="builtin-text"))
    request = TextRequest(task="judge", model="builtin-text", prompt="p", images=[image],
                          context={"preset": "release"})
    reply = asyncio.run(backend.complete(request))
    assert reply.data["score"] == score and reply.data["analysis"]
