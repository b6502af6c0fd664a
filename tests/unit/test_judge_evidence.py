"""The evidence-first judge: observations before scores in the schema, the builtin judge's observations true
by construction (a pixel oracle), and code that rejects on them whatever the scores."""

from __future__ import annotations

import io
import random
from typing import Any

import numpy as np
import pytest
from PIL import Image

from uniedit_synth.core.config import JudgeSpec, load_pipeline
from uniedit_synth.method.plan import InstructionPlan, draw_plan
from uniedit_synth.offline.checks import evidence_ok, judge_probe
from uniedit_synth.offline.choose import scene_program
from uniedit_synth.offline.flaws import apply_flaw, expected_edited_png
from uniedit_synth.offline.generic import generic_program
from uniedit_synth.offline.observe import observe
from uniedit_synth.offline.questions import SCENE_CATEGORIES, generate_vqa
from uniedit_synth.offline.render import render_png
from uniedit_synth.stages.judge import evidence_misses
from uniedit_synth.stages.schemas import JUDGE_LOCALISED_SCHEMA, JUDGE_SCHEMA, JudgeReply

OBSERVATIONS = ["observed_changes", "branch_observed", "changes_outside_target", "analysis"]
SCORES = ["instruction_following", "visual_quality", "coherence"]


def test_schema_lists_observations_before_scores() -> None:
    for schema in (JUDGE_SCHEMA, JUDGE_LOCALISED_SCHEMA):
        keys = list(schema["properties"])
        assert keys[:7] == OBSERVATIONS + SCORES
        assert set(OBSERVATIONS + SCORES) <= set(schema["required"])
    assert JUDGE_SCHEMA["properties"]["branch_observed"]["enum"] == [
        "expected",
        "other",
        "both",
        "none",
        "not_conditional",
    ]


@pytest.mark.parametrize(
    ("evidence", "rejected"),
    [
        ({"branch_observed": "expected", "changes_outside_target": False}, False),
        ({"branch_observed": "not_conditional", "changes_outside_target": False}, False),
        ({"branch_observed": "other", "changes_outside_target": False}, True),
        ({"branch_observed": "both", "changes_outside_target": False}, True),
        ({"branch_observed": "none", "changes_outside_target": False}, True),
        ({"branch_observed": "expected", "changes_outside_target": True}, True),
        (None, False),  # the release preset's judge makes no observations
    ],
)
def test_observations_reject_whatever_the_scores(evidence: dict[str, Any] | None, rejected: bool) -> None:
    assert bool(evidence_misses(evidence)) == rejected
    if evidence is not None:
        assert evidence_ok(evidence) == (not rejected)


def test_reply_model_keeps_the_observations() -> None:
    reply = JudgeReply.model_validate(
        {
            "observed_changes": "x",
            "branch_observed": "other",
            "changes_outside_target": False,
            "analysis": "a",
            "instruction_following": 5,
            "visual_quality": 5,
            "coherence": 5,
        }
    )
    assert reply.branch_observed == "other"
    with pytest.raises(ValueError):
        JudgeReply.model_validate({**reply.model_dump(), "branch_observed": "maybe"})


def test_defaults_coherence_3_and_exact_content_4_release_unchanged() -> None:
    for name in ("openai", "uniedit"):
        spec = load_pipeline(name).stages.judge
        assert spec.thresholds["coherence"] >= 3
        assert spec.exact_thresholds == {"instruction_following": 4}
        assert {"count", "ocr", "math"} <= set(spec.exact_categories)
    release = JudgeSpec(backend="gpt4o", preset="release")
    assert release.thresholds == {"visual_quality": 3} and release.exact_thresholds == {}


def scene_probes(count: int, seed: int = 3) -> list[tuple[bytes, dict[str, Any], dict[str, Any]]]:
    rng = random.Random(seed)
    out = []
    for index in range(count * 3):
        category = SCENE_CATEGORIES[index % len(SCENE_CATEGORIES)]
        scene, _, answer, spec = generate_vqa(rng, category, size=128)
        plan = draw_plan(seed, f"s{index}", category, answer).model_dump()
        try:
            program = scene_program(scene, spec, rng, avoid=answer, plan=plan, nested_rate=0.3)
        except ValueError:
            continue
        meta = {"world": "scenes", "scene": scene.model_dump(mode="json"), "question_spec": spec}
        out.append((render_png(scene), program, meta))
        if len(out) == count:
            break
    return out


def generic_probes(count: int) -> list[tuple[bytes, dict[str, Any], dict[str, Any]]]:
    rng = random.Random(5)
    out = []
    for index in range(count):
        noise = np.random.default_rng(index).integers(0, 256, (150, 200, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noise).save(buffer, "PNG")
        answer = rng.choice(["7", "12", "red", "blue", "yes"])
        plan = draw_plan(0, f"g{index}", "others", answer).model_dump()
        program = generic_program("What is it?", answer, "others", (200, 150), rng, plan=plan)
        out.append((buffer.getvalue(), program, {}))
    return out


@pytest.mark.parametrize("kind", ["scene", "generic"])
def test_builtin_observations_are_true(kind: str) -> None:
    probes = scene_probes(24) if kind == "scene" else generic_probes(12)
    seen_kinds = set()
    for source, program, meta in probes:
        conditional = program["condition"]["test"]["op"] != "always"
        good = expected_edited_png(source, program, meta)
        seen = observe(source, good, program, meta)
        assert seen["branch_observed"] == ("expected" if conditional else "not_conditional"), seen
        assert seen["changes_outside_target"] is False and seen["observed_changes"]
        unchanged = observe(source, source, program, meta)
        assert unchanged["branch_observed"] == ("none" if conditional else "not_conditional")
        if conditional:
            other, applied = apply_flaw(source, program, meta, "wrong_branch", random.Random(1))
            if applied == "wrong_branch":
                seen_kinds.add("wrong_branch")
                assert observe(source, other, program, meta)["branch_observed"] == "other"
        collateral, applied = apply_flaw(source, program, meta, "collateral_change", random.Random(2))
        if applied == "collateral_change":
            seen_kinds.add("collateral_change")
            assert observe(source, collateral, program, meta)["changes_outside_target"] is True
    assert seen_kinds == {"wrong_branch", "collateral_change"}


def test_judge_probe_with_observations_keeps_precision_and_recall() -> None:
    figures = judge_probe(scene_probes(12) + generic_probes(4), seed=0)
    assert figures["overall"] == {"precision": 1.0, "recall": 1.0}


def test_plan_types_still_validate() -> None:  # the judge reads expected/wrong edits from the plan
    plan = InstructionPlan(
        style="conditional", candidate="red", candidate_is_answer=True, expected_branch="then"
    )
    assert plan.expected_edit is None
