"""The judge presets of `uniedit eval` follow each benchmark's script: which prompt, which images in which order,
which score scale, and the sample formulas; the readers keep what the protocols need; the bootstrap is the
percentile bootstrap it says it is."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.eval_fixtures import WRITERS
from uniedit_synth.core.errors import UniEditError
from uniedit_synth.evaluate import stats
from uniedit_synth.evaluate.items import EvalItem, load_eval_set
from uniedit_synth.evaluate.presets import JudgeReplyError, protocol_for

EDIT = b"edited-image"


@pytest.fixture
def sets(tmp_path):
    return {name: load_eval_set(f"{name}={writer(tmp_path / name)}") for name, writer in WRITERS.items()}


def by_key(evalset, key):
    return next(item for item in evalset.items if item.key == key)


def test_readers_keep_what_the_protocols_read(sets):
    kris = sets["kris-bench"]
    assert {i.category for i in kris.items} == {"color_change", "chemistry", "anomaly_correction"}
    assert by_key(kris, "chemistry/1").extra["explain"].startswith("Iron rusts")
    rise = sets["risebench"]
    assert by_key(rise, "spatial_reasoning_1").reference_image is not None
    assert by_key(rise, "logical_reasoning_2").extra["reference_txt"] == "42"
    assert by_key(rise, "causal_reasoning_2").extra["consistency_free"] is True
    gedit = sets["gedit-bench"]
    assert {i.extra["language"] for i in gedit.items} == {"en", "cn"}
    assert len({i.key for i in gedit.items}) == len(gedit.items)
    assert {i.category for i in sets["imgedit-bench"].items} == {"replace", "style", "add", "extract"}


def test_unknown_spec_says_what_to_pass(tmp_path):
    with pytest.raises(UniEditError, match="kris-bench=DIR"):
        load_eval_set(str(tmp_path))
    with pytest.raises(UniEditError, match="annotation.json"):
        load_eval_set(f"kris-bench={tmp_path}")


def shape(calls):
    return [(c.name, c.prompt_file.split("/")[-1], len(c.images), tuple(c.scores.values())[0]) for c in calls]


def test_rise_calls_follow_eval_vanilla(sets):
    rise, protocol = sets["risebench"], protocol_for("risebench")
    temporal = protocol.calls(by_key(rise, "temporal_reasoning_1"), EDIT)
    assert shape(temporal) == [("consistency", "consist.txt", 2, (1, 5)), ("reasoning", "reasoning.txt", 1, (1, 5)),
                               ("quality", "generation.txt", 1, (1, 5))]
    assert "Rotten, blackened banana." in temporal[1].prompt and "{instruct}" not in temporal[1].prompt
    causal = protocol.calls(by_key(rise, "causal_reasoning_1"), EDIT)
    assert shape(causal)[1] == ("reasoning", "reasoning_w_input.txt", 2, (1, 5))
    free = protocol.calls(by_key(rise, "causal_reasoning_2"), EDIT)
    assert [c.name for c in free] == ["reasoning", "quality"]
    spatial_item = by_key(rise, "spatial_reasoning_1")
    spatial = protocol.calls(spatial_item, EDIT)
    assert shape(spatial) == [("consistency", "spatial_cons.txt", 2, (1, 5)),
                              ("reasoning", "spatial_ref_img.txt", 2, (1, 5)),
                              ("quality", "spatial_qual.txt", 1, (1, 5))]
    assert spatial[0].images == [spatial_item.reference_image, EDIT]  # upstream swaps img1 for the reference
    logical_txt = protocol.calls(by_key(rise, "logical_reasoning_2"), EDIT)
    assert shape(logical_txt) == [("consistency", "logical_cons_ans.txt", 2, (0, 1)),
                                  ("reasoning", "logical_txt.txt", 1, (0, 1))]
    logical_img = protocol.calls(by_key(rise, "logical_reasoning_1"), EDIT)
    assert shape(logical_img) == [("consistency", "logical_cons.txt", 2, (0, 1)),
                                  ("reasoning", "logical_img.txt", 2, (0, 1))]
    no_question = EvalItem("l", "logical_reasoning", "x", b"src", {"reasoning_wo_ins": True}, b"ref")
    assert protocol.calls(no_question, EDIT)[1].prompt_file == "risebench/logical_img_wo_q.txt"


def test_rise_scores_accuracy_and_the_reasoning_penalty():
    protocol = protocol_for("risebench")
    item = EvalItem("t", "temporal_reasoning", "x", b"")
    full = protocol.figures(item, {c: {"final_score": 5} for c in ("consistency", "reasoning", "quality")})
    assert full["score"] == pytest.approx(5.0) and full["accuracy"] == 1.0
    low = protocol.figures(item, {"consistency": {"final_score": 1}, "reasoning": {"final_score": 1},
                                  "quality": {"final_score": 1}})
    assert low["score"] == 1.0 and low["accuracy"] == 0.0  # 0.5 * 1 is floored at 1
    logical = EvalItem("l", "logical_reasoning", "x", b"")
    figures = protocol.figures(logical, {"consistency": {"final_score": 1}, "reasoning": {"final_score": 0}})
    assert figures["appearance_consistency"] == 5 and figures["instruction_reasoning"] == 1
    assert figures["score"] == pytest.approx(max(1, (0.3 * 5 + 0.7 * 1) * 0.5))
    with pytest.raises(JudgeReplyError):
        protocol.figures(item, {"consistency": {"final_score": 9}, "reasoning": {"final_score": 5},
                                "quality": {"final_score": 5}})


def test_kris_prompt_choice_and_formatting(sets):
    kris, protocol = sets["kris-bench"], protocol_for("kris-bench")
    knowledge = protocol.calls(by_key(kris, "chemistry/1"), EDIT)
    assert [c.name for c in knowledge] == ["consistency", "quality", "dual"]
    assert "Iron rusts" in knowledge[2].prompt and '"knowledge_score": X' in knowledge[2].prompt
    assert knowledge[1].images == [EDIT] and "{{" in knowledge[1].prompt  # prompt_quality is sent unformatted
    common = protocol.calls(by_key(kris, "anomaly_correction/3"), EDIT)
    assert [c.name for c in common] == ["consistency", "quality", "instruction"]
    assert "{instruct}" not in common[0].prompt and "{{" not in common[0].prompt


def test_gedit_viescore(sets):
    protocol = protocol_for("gedit-bench")
    item = sets["gedit-bench"].items[0]
    sc, pq = protocol.calls(item, EDIT)
    assert item.instruction in sc.prompt and "<instruction>" not in sc.prompt and sc.images == [item.source, EDIT]
    assert pq.images == [EDIT]
    figures = protocol.figures(item, {"SC": {"score": [8, 3]}, "PQ": {"score": [9, 6]}})
    assert figures == {"semantic_consistency": 3, "perceptual_quality": 6, "overall": math.sqrt(18)}


def test_imgedit_criteria_per_edit_type(sets):
    protocol = protocol_for("imgedit-bench")
    for item in sets["imgedit-bench"].items:
        (call,) = protocol.calls(item, EDIT)
        assert len(call.scores) == 3 and "<edit_prompt>" not in call.prompt and item.instruction in call.prompt
    item = by_key(sets["imgedit-bench"], "99")  # extract: Object Identity, Mask Precision, Visual Quality
    (call,) = protocol.calls(item, EDIT)
    assert list(call.scores) == ["object_identity", "mask_precision", "visual_quality"]
    figures = protocol.figures(item, {"score": {"object_identity": 5, "mask_precision": 4, "visual_quality": 4}})
    assert figures["score"] == 4.33


def test_bootstrap_is_the_percentile_bootstrap():
    assert stats.bootstrap_interval([0.5] * 7) == (0.5, 0.5)
    values = sorted(np.random.default_rng(0).normal(size=50).tolist())
    for q in (2.5, 50, 97.5):
        assert stats.percentile(values, q) == pytest.approx(np.percentile(values, q))
    diffs = [1.0, 0.0, 2.0, 1.0, -1.0, 3.0]
    low, high = stats.bootstrap_interval(diffs, 4000, seed=1)
    assert low < statistics_mean(diffs) < high and stats.bootstrap_interval(diffs, 4000, seed=1) == (low, high)


def statistics_mean(values):
    return sum(values) / len(values)


def test_paired_matches_by_key_and_skips_unjudged():
    model = [{"key": "a", "figures": {"x": 3.0}}, {"key": "b", "figures": {"x": 1.0}}, {"key": "c", "figures": None}]
    base = [{"key": "b", "figures": {"x": 2.0}}, {"key": "a", "figures": {"x": 1.0}}, {"key": "c", "figures": {"x": 0}}]
    result = stats.paired(model, base, resamples=200)
    assert result["figures"]["x"]["n"] == 2 and result["figures"]["x"]["mean_diff"] == pytest.approx(0.5)
