"""The builtin offline backends: classify / rewrite / judge and the editor, as the engine's stages call them."""

from __future__ import annotations

import asyncio
import io
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from uniedit_synth.backends.base import BadRequest, EditRequest, TextRequest, request_key
from uniedit_synth.backends.registry import create_backend
from uniedit_synth.core.config import BackendSpec
from uniedit_synth.core.errors import BackendConfigError
from uniedit_synth.core.records import TASK_CATEGORIES, VQARecord
from uniedit_synth.method.plan import draw_plan
from uniedit_synth.offline.builtin import BuiltinEditor, BuiltinText, heuristic_category
from uniedit_synth.offline.flaws import expected_edited_png
from uniedit_synth.offline.questions import SCENE_CATEGORIES, generate_vqa, possible_answers
from uniedit_synth.sources.scenes import ScenesSource

DIRECTIVE = "Keep the lighting and style of the scene unchanged."
NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()


_LOOP: asyncio.AbstractEventLoop | None = None


@pytest.fixture(scope="module", autouse=True)
def event_loop_for_module() -> Iterator[None]:
    """One loop for the module: `asyncio.run` per call would cost more than the calls under test."""
    global _LOOP
    _LOOP = asyncio.new_event_loop()
    yield
    _LOOP.close()
    _LOOP = None


def run(coro: Any) -> Any:
    assert _LOOP is not None
    return _LOOP.run_until_complete(coro)


def text_backend(**options: Any) -> BuiltinText:
    return BuiltinText(BackendSpec(type="builtin", model="builtin-text", options=options), seed=0)


def editor(**options: Any) -> BuiltinEditor:
    return BuiltinEditor(BackendSpec(type="builtin", model="builtin-edit", options=options), seed=0)


def states_answer(instruction: str, answer: str) -> bool:
    """An independent leak check (not the module's): whole-word match, plurals and number words included."""
    words = re.findall(r"[a-z0-9]+", instruction.lower())
    norm = answer.strip().lower()
    forms = {norm, norm + "s", norm + "es"}
    if norm.isdigit() and int(norm) < len(NUMBER_WORDS):
        forms.add(NUMBER_WORDS[int(norm)])
    return any(w in forms for w in words)


def classify_request(record: VQARecord) -> TextRequest:
    return TextRequest(
        task="classify",
        model="builtin-text",
        prompt=f"classify: {record.question}",
        context={
            "question": record.question,
            "answer": record.answer,
            "source_category": record.category,
            "meta": record.meta,
        },
    )


def rewrite_request(
    question: str, answer: str, category: str, meta: dict, images: list[bytes] = ()
) -> TextRequest:
    return TextRequest(
        task="rewrite",
        model="builtin-text",
        prompt=f"rewrite: {question}",
        images=list(images),
        context={
            "question": question,
            "answer": answer,
            "process_answer": answer.lower(),
            "task_category": category,
            "meta": meta,
        },
    )


def edit_request(image: bytes, rewrite: dict, meta: dict, attempt: int = 0) -> EditRequest:
    return EditRequest(
        model="builtin-edit",
        instruction=rewrite["instruction"],
        image=image,
        reference_answer="x",
        attempt=attempt,
        context={"edit_program": rewrite["edit_program"], "meta": meta, "task_category": "count"},
    )


def judge_request(source: bytes, edited: bytes, rewrite: dict, meta: dict) -> TextRequest:
    return TextRequest(
        task="judge",
        model="builtin-text",
        prompt="judge",
        images=[source, edited],
        context={
            "instruction": rewrite["instruction"],
            "edit_program": rewrite["edit_program"],
            "meta": meta,
            "question": "q",
            "process_answer": "a",
            "task_category": "count",
        },
    )


def scene_meta(rng: random.Random, category: str) -> tuple[str, str, dict]:
    scene, question, answer, spec = generate_vqa(rng, category, size=128)
    return (
        question,
        answer,
        {
            "world": "scenes",
            "scene": scene.model_dump(mode="json"),
            "question_spec": spec,
            "answer_space": [str(v) for v in possible_answers(scene, spec["query"])],
        },
    )


# ---------------------------------------------------------------- classify


def test_classify_scene_records_uses_the_true_category() -> None:
    backend = text_backend()
    for record in ScenesSource(count=14, seed=4, image_size=96):
        reply = run(backend.complete(classify_request(record)))
        assert reply.data["task_category"] == record.category
        assert reply.data["process_answer"] == record.answer.strip().lower()
        assert reply.model == "builtin-text"
        assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("question", "answer", "expected"),
    [
        ("How many people are in the photo?", "Three", "count"),
        ("What color is the car?", "Blue", "color"),
        ("What shape is the table?", "round", "shape"),
        ("Where is the cat sitting?", "on the sofa", "location"),
        ("What does the sign say?", "STOP", "ocr"),
        ("What is 12 + 7?", "19", "math"),
        ("Is the door open?", "Yes", "yes_no"),
        ("Which animal is shown? A) cat B) dog C) cow", "B", "multi-choice"),
        ("Describe the image.", "a dog on a beach", "caption"),
        ("Why is the man wearing a helmet?", "safety", "knowledge"),
        ("What is the man holding?", "umbrella", "others"),
    ],
)
def test_classify_generic_heuristics(question: str, answer: str, expected: str) -> None:
    assert heuristic_category(question, answer) == expected
    reply = run(
        text_backend().complete(
            TextRequest(
                task="classify",
                model="m",
                prompt="",
                context={"question": question, "answer": answer, "source_category": None, "meta": {}},
            )
        )
    )
    assert reply.data["task_category"] == expected
    assert reply.data["task_category"] in TASK_CATEGORIES
    normalised = {"Three": "3", "on the sofa": "on the sofa", "a dog on a beach": "dog on a beach"}
    assert reply.data["process_answer"] == normalised.get(answer, answer.lower())


# ---------------------------------------------------------------- rewrite


def test_rewrite_never_leaks_over_1000_records_and_covers_every_category() -> None:
    backend = text_backend()
    rng = random.Random(2024)
    seen: Counter[str] = Counter()
    templates: dict[str, set[str]] = {}
    styles: Counter[str] = Counter()
    for index in range(1000):
        category = SCENE_CATEGORIES[index % len(SCENE_CATEGORIES)]
        question, answer, meta = scene_meta(rng, category)
        plan = draw_plan(0, f"r{index}", category, answer, answer_space=meta["answer_space"])
        request = rewrite_request(question, answer, category, meta)
        request.context["plan"] = plan.model_dump()
        reply = run(backend.complete(request))
        instruction = reply.data["instruction"]
        if category == "multi-choice":  # the quoted question lists the options; the check is on the rest
            instruction_rest = instruction.replace(question, "")
            assert not states_answer(re.split(r"\b(?:If|When|if|when)\b", instruction_rest)[0], answer), instruction
        elif plan.candidate_is_answer:  # the answer may only appear as the candidate, inside the condition
            assert not states_answer(re.split(r"\b(?:If|When|if|when)\b", instruction)[0], answer), instruction
        else:
            assert not states_answer(instruction, answer), (answer, instruction)
        assert instruction.endswith(DIRECTIVE)
        if plan.operator == "switch":  # multiple choice: one clause per option instead of if / otherwise
            assert len(reply.data["branches"]) == len(plan.operands) >= 3
        else:
            has_else = re.search(r"\b(otherwise|if not|or else|in every other case)\b", instruction, re.I)
            assert bool(has_else) == plan.conditional, (plan, instruction)
            assert bool(reply.data["then_edit"]) == bool(reply.data["else_edit"]) == plan.conditional
        assert reply.data["edit_program"]["kind"] == "scene"
        seen[category] += 1
        styles[plan.style] += 1
        templates.setdefault(category, set()).add(re.sub(r'"[^"]*"', "", instruction)[:30])
    assert set(seen) == set(SCENE_CATEGORIES)
    assert set(styles) == {"conditional", "synthesis", "render", "transform"}
    assert all(len(t) >= 3 for t in templates.values()), "instructions should vary within a category"


def test_rewrite_embeds_the_question() -> None:
    backend = text_backend()
    rng = random.Random(5)
    verbatim = 0
    for _ in range(60):
        question, answer, meta = scene_meta(rng, "knowledge")
        instruction = run(backend.complete(rewrite_request(question, answer, "knowledge", meta))).data[
            "instruction"
        ]
        verbatim += question.rstrip("?") in instruction
    assert verbatim == 60, (
        "knowledge questions must be embedded verbatim (a paraphrase would give the fact away)"
    )


def test_rewrite_is_deterministic_and_seeded() -> None:
    rng = random.Random(9)
    requests = [
        rewrite_request(*scene_meta(rng, c)[:2], c, scene_meta(random.Random(c), c)[2])
        for c in SCENE_CATEGORIES
    ]
    first = [run(text_backend().complete(r)).data for r in requests]
    second = [run(text_backend().complete(r)).data for r in requests]
    assert first == second
    other_seed = BuiltinText(BackendSpec(type="builtin", model="builtin-text"), seed=1)
    third = [run(other_seed.complete(r)).data for r in requests]
    assert third != first


def test_leak_rate_makes_the_answer_appear() -> None:
    rng = random.Random(1)
    cases = [scene_meta(rng, SCENE_CATEGORIES[i % 7]) for i in range(200)]
    cases = [(q, a, SCENE_CATEGORIES[i % 7], m) for i, (q, a, m) in enumerate(cases)]
    always = text_backend(leak_rate=1.0)
    assert all(
        states_answer(run(always.complete(rewrite_request(*c))).data["instruction"], c[1]) for c in cases
    )
    half = text_backend(leak_rate=0.5)
    leaked = sum(
        states_answer(run(half.complete(rewrite_request(*c))).data["instruction"], c[1]) for c in cases
    )
    assert 60 <= leaked <= 140
    for case in cases[:20]:
        assert run(half.complete(rewrite_request(*case))).data["instruction"].endswith(DIRECTIVE)


# ---------------------------------------------------------------- edit and judge, end to end


def pipeline(
    records: list[VQARecord], text: BuiltinText, edit: BuiltinEditor, attempt: int = 0
) -> list[dict]:
    async def one(record: VQARecord) -> dict:
        classified = (await text.complete(classify_request(record))).data
        rewrite = (
            await text.complete(
                rewrite_request(record.question, record.answer, classified["task_category"], record.meta)
            )
        ).data
        edited = await edit.edit(edit_request(record.image, rewrite, record.meta, attempt))
        verdict = (await text.complete(judge_request(record.image, edited.image, rewrite, record.meta))).data
        correct = edited.image == expected_edited_png(record.image, rewrite["edit_program"], record.meta)
        return {"verdict": verdict, "correct": correct, "edited": edited, "rewrite": rewrite}

    async def all_of() -> list[dict]:
        return [await one(r) for r in records]

    return run(all_of())


def test_error_rate_zero_accepts_everything() -> None:
    records = list(ScenesSource(count=49, seed=3, image_size=128))
    results = pipeline(records, text_backend(), editor(error_rate=0.0))
    for result in results:
        assert result["correct"]
        scores = [result["verdict"][k] for k in ("instruction_following", "visual_quality", "coherence")]
        assert min(scores) >= 4, result["verdict"]
        assert result["verdict"]["analysis"]
        assert result["edited"].usage.images_in == 1 and result["edited"].usage.images_out == 1


def test_judge_rejects_exactly_the_erroneous_edits() -> None:
    records = list(ScenesSource(count=84, seed=5, image_size=128))
    results = pipeline(records, text_backend(), editor(error_rate=0.3))
    wrong = [r for r in results if not r["correct"]]
    assert 10 <= len(wrong) <= 45
    for result in results:
        following = result["verdict"]["instruction_following"]
        if result["correct"]:
            assert (
                min(result["verdict"][k] for k in ("instruction_following", "visual_quality", "coherence"))
                >= 4
            )
        else:
            assert following <= 2, result["verdict"]


def test_error_rate_one_fails_every_edit_and_retry_can_succeed() -> None:
    records = list(ScenesSource(count=14, seed=6, image_size=96))
    results = pipeline(records, text_backend(), editor(error_rate=1.0))
    assert not any(r["correct"] for r in results)
    assert all(r["verdict"]["instruction_following"] <= 2 for r in results)
    flaky = editor(error_rate=0.5)
    outcomes = {attempt: pipeline(records, text_backend(), flaky, attempt) for attempt in (0, 1, 2)}
    assert any(
        not outcomes[0][i]["correct"] and (outcomes[1][i]["correct"] or outcomes[2][i]["correct"])
        for i in range(len(records))
    ), "a later attempt should be able to succeed where attempt 0 failed"
    again = pipeline(records, text_backend(), flaky, 0)
    assert [r["edited"].image for r in again] == [r["edited"].image for r in outcomes[0]]


def random_png(seed: int = 0, size: tuple[int, int] = (160, 120)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("How many birds are there?", "7"),
        ("What color is the kite?", "yellow"),
        ("What is on the table?", "a cup"),
    ],
)
def test_generic_mode_end_to_end_on_a_non_scene_image(question: str, answer: str) -> None:
    image = random_png()
    record = VQARecord(id="files/x", source="files", image=image, question=question, answer=answer)
    text = text_backend()
    classified = run(text.complete(classify_request(record))).data
    rewrite = run(
        text.complete(rewrite_request(question, answer, classified["task_category"], {}, images=[image]))
    ).data
    assert rewrite["edit_program"]["kind"] == "generic"
    assert not states_answer(rewrite["instruction"], answer)
    assert rewrite["instruction"].endswith(DIRECTIVE)
    good = run(editor(error_rate=0.0).edit(edit_request(image, rewrite, {})))
    verdict = run(text.complete(judge_request(image, good.image, rewrite, {}))).data
    assert min(verdict[k] for k in ("instruction_following", "visual_quality", "coherence")) >= 4
    for attempt in range(3):
        bad = run(editor(error_rate=1.0).edit(edit_request(image, rewrite, {}, attempt)))
        verdict = run(text.complete(judge_request(image, bad.image, rewrite, {}))).data
        assert verdict["instruction_following"] <= 2, verdict


# ---------------------------------------------------------------- plumbing: call log, latency, options, registry


def test_call_log_gets_one_line_per_call(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("UNIEDIT_CALL_LOG", str(log))
    record = next(iter(ScenesSource(count=1, image_size=96)))
    text, edit = text_backend(), editor(error_rate=0.0)
    classify = classify_request(record)
    run(text.complete(classify))
    rewrite_req = rewrite_request(record.question, record.answer, record.category or "", record.meta)
    rewrite = run(text.complete(rewrite_req)).data
    edit_req = edit_request(record.image, rewrite, record.meta)
    run(edit.edit(edit_req))
    lines = log.read_text().splitlines()
    assert lines == [
        f"classify\t{request_key('text', classify)}",
        f"rewrite\t{request_key('text', rewrite_req)}",
        f"edit\t{request_key('edit', edit_req)}",
    ]


@pytest.mark.serial
def test_latency_sleeps_without_blocking_the_loop() -> None:
    backend = text_backend(latency_s=0.2)
    record = next(iter(ScenesSource(count=1, image_size=96)))

    async def many() -> None:
        await asyncio.gather(*(backend.complete(classify_request(record)) for _ in range(10)))

    start = time.perf_counter()
    run(many())
    elapsed = time.perf_counter() - start
    assert 0.19 <= elapsed < 1.0


def test_bad_options_unknown_task_and_missing_context_are_clear_errors() -> None:
    with pytest.raises(BackendConfigError, match="error_rate"):
        editor(error_rate=2)
    with pytest.raises(BackendConfigError, match="leak_rate"):
        text_backend(leak_rate="lots")
    with pytest.raises(BadRequest, match="no task"):
        run(text_backend().complete(TextRequest(task="poem", model="m", prompt="")))
    with pytest.raises(BadRequest, match="question"):
        run(text_backend().complete(TextRequest(task="rewrite", model="m", prompt="", context={})))
    with pytest.raises(BadRequest, match="edit_program"):
        run(
            text_backend().complete(
                judge_request(random_png(), random_png(), {"instruction": "x", "edit_program": None}, {})
            )
        )
    broken = {"instruction": "x", "edit_program": {"kind": "scene", "condition": {}}}
    with pytest.raises(BadRequest, match="cannot apply"):
        run(editor(error_rate=0).edit(edit_request(random_png(), broken, {"scene": {}})))
    verdict = run(
        text_backend().complete(judge_request(random_png(), random_png(1), broken, {"scene": {}}))
    ).data
    assert verdict["instruction_following"] == 1


def test_editor_without_a_program_still_makes_a_visible_deterministic_edit() -> None:
    """A real LLM rewriter writes no program (pipelines/local-vllm.yaml pairs one with the builtin editor)."""
    image = random_png(3)
    request = EditRequest(
        model="m", instruction="If the sky is blue, add a bird.", image=image, reference_answer="blue"
    )
    first = run(editor(error_rate=0).edit(request))
    assert first.image == run(editor(error_rate=0).edit(request)).image
    assert not np.array_equal(
        np.asarray(Image.open(io.BytesIO(first.image)).convert("RGB")),
        np.asarray(Image.open(io.BytesIO(image))),
    )


def test_registry_builds_the_builtin_backends() -> None:
    spec = BackendSpec(type="builtin", model="builtin-v1")
    text = create_backend("offline", spec, "text", seed=3)
    edit = create_backend("offline", spec, "edit")
    assert isinstance(text, BuiltinText) and isinstance(edit, BuiltinEditor)
    assert text.name == edit.name == "builtin"
    assert text.provider == edit.provider == "builtin"
    assert text.seed == 3
    run(text.aclose())
    run(edit.aclose())
