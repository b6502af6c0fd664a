"""The realistic fake models (tests/fakes/real_models.py, real_edits.py): each failure kind is played as
described, deterministically, and through the real openai / google-genai SDKs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.fakes.real_edits import Stroke, gemini_size, openai_size, render_edit
from tests.fakes.real_models import (
    EDIT_COLOURS,
    KINDS,
    NO_OPS,
    Case,
    Playbook,
    RealisticGemini,
    RealisticOpenAI,
)
from uniedit_synth.method.answers import leaks_answer

TARGET = (0.40, 0.45, 0.55, 0.70)
OTHER = (0.10, 0.45, 0.25, 0.70)


def source_png(size: tuple[int, int] = (320, 240)) -> bytes:
    rng = np.random.default_rng(0)
    # a wall-and-floor gradient with a row of coloured blocks (so a re-framing moves edges, as in a scene)
    base = np.tile(np.linspace(90, 200, size[1], dtype=np.float32)[:, None, None], (1, size[0], 3))
    for index, x in enumerate(range(10, size[0] - 30, 40)):
        base[size[1] // 2 : size[1] // 2 + 40, x : x + 24] = ((60, 200, 90), (200, 70, 60), (70, 90, 210))[index % 3]
    pixels = np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def pixels(data: bytes, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB").resize(size, Image.Resampling.LANCZOS), dtype=np.float32)


def changed_share(edited: bytes, source: bytes, level: float = 30) -> float:
    return float((np.abs(pixels(edited) - pixels(source)).max(axis=2) > level).mean())


def case(kind: str = "good", category: str = "color", question: str = "What is the color of the small cube?",
         answer: str = "red") -> Case:
    return Case(question, answer, category, kind, TARGET, OTHER, "the small cube")


def rewrite_prompt(question: str, candidate: str | None, answer: str = "red") -> str:
    plan = "style: synthesis\nthen_edit: null" if candidate is None else (
        f"style: conditional\ncandidate: '{candidate}' (the condition tests whether the answer is this value)")
    return (f"Question: <vqa_question>{question}</vqa_question>\nReference answer: "
            f"<vqa_process_answer>{answer}</vqa_process_answer>\nAesthetics directive: "
            f"<vqa_aesthetics>Change nothing else.</vqa_aesthetics>\nPlan:\n<vqa_plan>{plan}</vqa_plan>")


# -- pixels ---------------------------------------------------------------------------------------------------
def test_pixel_plays_change_what_they_claim() -> None:
    source = source_png()
    edit = [Stroke(TARGET, "gold", ellipse=True)]
    wrong = [Stroke(OTHER, "gold", ellipse=True)]
    out = {play: render_edit(source, play, edit, wrong, (480, 320))
           for play in ("ok", "unchanged", "reencoded", "speck", "global", "reframed", "square", "wrong", "drift",
                        "oversized")}
    assert pixels(out["unchanged"]).tolist() == pixels(source).tolist()
    assert 0 < np.abs(pixels(out["reencoded"]) - pixels(source)).mean() < 3  # a no-op in disguise
    assert changed_share(out["reencoded"], source) < 0.01  # only ringing at hard edges
    assert changed_share(out["speck"], source) < 0.005
    assert 0.01 < changed_share(out["ok"], source) < 0.05  # local: the target only
    assert changed_share(out["global"], source, level=12) > 0.9  # every pixel moved
    assert changed_share(out["reframed"], source, level=12) > 0.1
    assert changed_share(out["oversized"], source) > 0.3
    drifted = np.abs(pixels(out["drift"]) - pixels(out["ok"]))
    assert 1 < drifted.mean() < 6 and changed_share(out["drift"], source) < 0.05  # honest: slight, everywhere
    for play, box in (("ok", TARGET), ("wrong", OTHER)):  # the change sits on its object
        ys, xs = np.nonzero(np.abs(pixels(out[play]) - pixels(source)).max(axis=2) > 60)
        assert box[0] < xs.mean() / 320 < box[2] and box[1] < ys.mean() / 240 < box[3]
    sizes = {play: Image.open(io.BytesIO(data)).size for play, data in out.items()}
    assert sizes["ok"] == (480, 320) and sizes["square"] == (1024, 1024) and sizes["unchanged"] == (320, 240)


def test_output_sizes_follow_the_request() -> None:
    assert openai_size("1024x1536", (320, 240)) == (1024, 1536)
    assert openai_size("auto", (320, 240)) == (1536, 1024)
    assert openai_size(None, (240, 240)) == (1024, 1024)
    assert gemini_size("4:3", (320, 240)) == (1184, 864)
    assert gemini_size(None, (320, 240)) == (1184, 864)  # the closest supported ratio to the source's


# -- text -----------------------------------------------------------------------------------------------------
def test_good_instructions_embed_the_question_and_leak_nothing() -> None:
    for index in range(4):
        question = f"What is the color of the small cube number {index}?"
        book = Playbook([case(question=question)])
        for candidate in ("red", "blue", None):
            reply = book.rewrite(book.cases[question], rewrite_prompt(question, candidate))
            assert question in reply["instruction"]
            assert reply["instruction"].endswith("Change nothing else.")
            without_question = reply["instruction"].replace(question, "")
            assert leaks_answer(without_question, "red", candidate_is_answer=candidate == "red") is None
            if candidate is not None:
                assert reply["then_edit"] in reply["instruction"] and reply["else_edit"] in reply["instruction"]
                assert candidate in reply["instruction"]


def test_text_kinds_break_the_rule_they_name() -> None:
    question = "What is the color of the small cube?"
    prompt = rewrite_prompt(question, "blue")
    plays = {}
    for kind in ("good", "swapped_branches", "noop_branch", "same_edit_reworded", "candidate_ignored",
                 "answer_form_outside", "answer_leaked"):
        book = Playbook([case(kind)])
        plays[kind] = book.rewrite(book.cases[question], prompt)
        assert book.played[question] == kind
    good, swapped = plays["good"], plays["swapped_branches"]
    assert (swapped["then_edit"], swapped["else_edit"]) == (good["else_edit"], good["then_edit"])
    assert swapped["instruction"] == good["instruction"]  # the clauses are right; the fields are not
    assert plays["noop_branch"]["then_edit"] in NO_OPS  # blue is not the answer: the branch that never runs
    same = plays["same_edit_reworded"]
    assert same["then_edit"] != same["else_edit"]
    assert {w for w in same["then_edit"].split() if w in EDIT_COLOURS} == {
        w for w in same["else_edit"].split() if w in EDIT_COLOURS}  # one colour, said two ways
    assert "blue" not in plays["candidate_ignored"]["instruction"]
    assert "grey" not in plays["answer_form_outside"]["instruction"]
    assert "red-tinted" in plays["answer_form_outside"]["instruction"]
    assert "is red" in plays["answer_leaked"]["instruction"]


def test_a_conditional_only_kind_on_another_plan_gets_a_stand_in() -> None:
    question = "What is the color of the small cube?"
    book = Playbook([case("swapped_branches")])
    book.rewrite(book.cases[question], rewrite_prompt(question, None))
    assert book.played[question] in KINDS and not KINDS[book.played[question]].conditional


def test_playbook_needs_unique_questions() -> None:
    with pytest.raises(ValueError, match="unique"):
        Playbook([case(), case("unchanged")])


# -- through the real SDKs --------------------------------------------------------------------------------------
JUDGE_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "required": ["observed_changes", "branch_observed", "changes_outside_target", "analysis",
                 "instruction_following", "visual_quality", "coherence"],
    "properties": {
        "observed_changes": {"type": "string"},
        "branch_observed": {"type": "string", "enum": ["expected", "other", "both", "none", "not_conditional"]},
        "changes_outside_target": {"type": "boolean"},
        "analysis": {"type": "string"},
        "instruction_following": {"type": "integer"}, "visual_quality": {"type": "integer"},
        "coherence": {"type": "integer"},
    },
}  # fmt: skip


def test_openai_sdk_rewrite_edit_and_a_lenient_judge() -> None:
    import base64
    import json

    from openai import OpenAI

    question = "What is the color of the small cube?"
    book = Playbook([case("judge_contradicts")])
    with RealisticOpenAI(book, api_key="sk-test") as server:
        client = OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        rewrite = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": rewrite_prompt(question, "red")}],
            response_format={"type": "json_schema", "json_schema": {"name": "edit_instruction", "schema": {
                "type": "object", "properties": {"instruction": {"type": "string"},
                                                 "then_edit": {"type": ["string", "null"]},
                                                 "else_edit": {"type": ["string", "null"]}}}}},
        )
        written = json.loads(rewrite.choices[0].message.content)
        assert question in written["instruction"]
        edited = client.images.edit(model="gpt-image-1", image=("src.png", source_png(), "image/png"),
                                    prompt=f"<vqa_question>{question}</vqa_question> {written['instruction']}",
                                    size="1536x1024")
        image = base64.b64decode(edited.data[0].b64_json)
        assert Image.open(io.BytesIO(image)).size == (1536, 1024)
        # the wrong branch was drawn: the else edit sits beside the target, the target itself is untouched
        diff = np.abs(pixels(image) - pixels(source_png())).max(axis=2) > 30
        x0, y0, x1, y1 = (round(v * s) for v, s in zip(TARGET, (320, 240, 320, 240), strict=True))
        assert diff.any() and diff[y0 + 5:y1 - 5, x0 + 5:x1 - 8].mean() < 0.2
        judged = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"<vqa_question>{question}</vqa_question>"}],
            response_format={"type": "json_schema", "json_schema": {"name": "judgement", "schema": JUDGE_SCHEMA}},
        )
        verdict = json.loads(judged.choices[0].message.content)
    assert verdict["branch_observed"] == "other" and verdict["instruction_following"] == 5
    assert list(verdict)[:4] == ["observed_changes", "branch_observed", "changes_outside_target", "analysis"]


def test_gemini_sdk_edit_follows_the_aspect_ratio_and_refusals_are_text() -> None:
    from google import genai
    from google.genai import types

    questions = ["What is the color of the small cube?", "What is the color of the large cube?"]
    book = Playbook([case("good", question=questions[0]), case("editor_refusal", question=questions[1])])
    for question in questions:
        book.rewrite(book.cases[question], rewrite_prompt(question, None))
    with RealisticGemini(book, api_key="g-test") as server:
        client = genai.Client(api_key="g-test", http_options={"base_url": server.base_url})
        replies = [
            client.models.generate_content(
                model="gemini-3-pro-image-preview",
                contents=[types.Part.from_bytes(data=source_png(), mime_type="image/png"),
                          f"Original Question: <vqa_question>{question}</vqa_question>"],
                config=types.GenerateContentConfig(response_modalities=["IMAGE"],
                                                   image_config=types.ImageConfig(aspect_ratio="4:3")),
            )
            for question in questions
        ]
    image = next(p.inline_data.data for p in replies[0].candidates[0].content.parts if p.inline_data)
    assert Image.open(io.BytesIO(image)).size == (1184, 864)
    parts = replies[1].candidates[0].content.parts
    assert not any(p.inline_data for p in parts) and "unable" in parts[0].text
