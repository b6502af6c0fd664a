"""The judge cascade end to end against the fake OpenAI server (issue 20 item 3): gpt-4o-mini judges every edit,
gpt-4o only the edits in the uncertainty band plus the seeded audit share; the costs and agreement figures are in
stats.json, the report and `uniedit inspect`."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.conftest import run_cli
from tests.e2e.test_backends_e2e import (  # noqa: F401 - openai_fake is a fixture, used by name
    _point,
    openai_fake,
    rows,
    stats,
    synth,
    text_of,
)
from uniedit_synth.core.prompts import neutralise
from uniedit_synth.method.cascade import audit_draw

pytestmark = pytest.mark.e2e

CHEAP, EXPENSIVE = "gpt-4o-mini", "gpt-4o"
AUDIT_SHARE = 0.3
#: the evidence-first judge's observations (required by its schema): the expected branch, nothing else changed
SEEN = {"observed_changes": "the target changed", "branch_observed": "expected", "changes_outside_target": False}
SURE_PASS = {**SEEN, "instruction_following": 5, "visual_quality": 5, "coherence": 5, "analysis": "clearly right"}
SURE_FAIL = {**SEEN, "instruction_following": 1, "visual_quality": 5, "coherence": 5, "analysis": "wrong branch"}
UNSURE = {**SEEN, "instruction_following": 3, "visual_quality": 5, "coherence": 5, "analysis": "maybe"}  # margin 0
EXPENSIVE_REPLY = {**SEEN, "instruction_following": 2, "visual_quality": 4, "coherence": 4, "analysis": "wrong, on a closer look"}


def question_in(request) -> str:
    """The question field of a judge prompt (the system text names the delimiters too: the last one counts)."""
    text = text_of(request)
    if "</vqa_question>" not in text:
        return ""
    return text.rsplit("</vqa_question>", 1)[0].rsplit("<vqa_question>", 1)[-1].strip()


def cheap_verdict(question: str) -> dict:
    kind = int(hashlib.sha256(question.encode()).hexdigest(), 16) % 3
    return (SURE_PASS, SURE_FAIL, UNSURE)[kind]


def test_expensive_judge_sees_only_the_band_and_the_audit_share(tmp_path, openai_fake):  # noqa: F811
    def script(request):
        if request.task != "judge":
            return None
        model = (request.body or {}).get("model")
        if model == CHEAP:
            return {"content": cheap_verdict(question_in(request))}
        return {"content": EXPENSIVE_REPLY}

    openai_fake.script(script)
    out = tmp_path / "run"
    proc = synth(
        "openai", out, openai_fake, None,
        "--set", "backends.mini.type=openai", "--set", f"backends.mini.model={CHEAP}",
        *_point("mini", openai_fake.base_url, "UE_E2E_OPENAI_KEY"),
        "--set", "stages.judge.backend=mini",
        "--set", "stages.judge.cascade=[mini, gpt4o]",
        "--set", f"stages.judge.audit_share={AUDIT_SHARE}",
        "--set", "stages.edit.max_attempts=1",
        "--set", "prices.gpt-4o-mini={input_per_mtok: 0.15, output_per_mtok: 0.60}",
        records=16,
    )
    assert proc.returncode == 0, proc.stderr
    judge_requests = [r for r in openai_fake.requests if r.task == "judge" and r.status == 200]
    cheap_calls = [r for r in judge_requests if r.body.get("model") == CHEAP]
    expensive_calls = [r for r in judge_requests if r.body.get("model") == EXPENSIVE]

    found = rows(out)
    judged = {rid: row for rid, row in found.items() if row["judge_cascade"]}
    assert len(cheap_calls) == len(judged) >= 8
    expected_expensive = set()
    for record_id, row in judged.items():
        entry = json.loads(row["judge_cascade"])
        cheap = cheap_verdict(neutralise(row["original_question"]))
        band = cheap is UNSURE
        audited = not band and audit_draw(0, record_id, 0) < AUDIT_SHARE
        assert entry["route"] == ("band" if band else "audit" if audited else "cheap"), record_id
        if band or audited:
            expected_expensive.add(neutralise(row["original_question"]))
            assert entry["decided_by"] == "expensive" and entry["expensive_model"] == EXPENSIVE
            assert row["scores"]["instruction_following"] == EXPENSIVE_REPLY["instruction_following"]
            assert row["reject_reason"] == "low_score"  # the expensive verdict decides
        else:
            assert entry["decided_by"] == "cheap" and entry["expensive"] is None
            assert row["accepted"] == (cheap is SURE_PASS)
    # the expensive judge was called for exactly those edits, once each
    assert sorted(question_in(r) for r in expensive_calls) == sorted(
        neutralise(row["original_question"]) for row in judged.values() if json.loads(row["judge_cascade"])["route"] != "cheap"
    )
    assert {question_in(r) for r in expensive_calls} == expected_expensive
    routes = [json.loads(r["judge_cascade"])["route"] for r in judged.values()]
    assert "band" in routes and "cheap" in routes and "audit" in routes

    figures = stats(out)["judge_cascade"]
    assert figures["judged"] == len(judged)
    assert figures["expensive_calls"] == len(expensive_calls)
    assert figures["routes"]["audit"] == routes.count("audit")
    audited_rows = [json.loads(r["judge_cascade"]) for r in judged.values()]
    audited_rows = [e for e in audited_rows if e["route"] == "audit"]
    agree = sum(e["cheap_pass"] == e["expensive_pass"] for e in audited_rows)
    assert figures["audit_agreement"] == round(agree / len(audited_rows), 4)
    confusion = figures["confusion"]["instruction_following"]
    assert sum(confusion.values()) == len(audited_rows)
    assert confusion.get("cheap_pass/expensive_fail", 0) == sum(
        e["cheap"]["instruction_following"] >= 3 for e in audited_rows
    )
    assert figures["cost_usd"]["cheap"] > 0 and figures["cost_usd"]["expensive"] > 0
    assert stats(out)["stages"]["judge"]["calls"] == len(judged)

    # the report and `uniedit inspect` say who decided
    report = run_cli("report", str(out), "--out", str(tmp_path / "report"), "--quiet")
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "report" / "index.html").read_text()
    assert "Judge cascade" in html and "audit agreement" in html.lower()
    sample = next(rid for rid, row in judged.items() if json.loads(row["judge_cascade"])["route"] == "band")
    shown = run_cli("inspect", str(out), "--id", sample)
    assert shown.returncode == 0, shown.stderr
    assert f"decided by    expensive judge ({EXPENSIVE}; route band)" in shown.stdout
    assert "judge/expensive" in shown.stdout


def test_non_edit_consistency_outside_the_region_the_judge_localised(tmp_path, openai_fake):  # noqa: F811
    """No edit program (a real rewriter): the judge's box is the region. The fake editor paints the central
    box [0.25, 0.75]²; a judge box around it leaves nothing changed outside (1.0), a corner box does not."""
    around, corner = [0.2, 0.2, 0.8, 0.8], [0.0, 0.0, 0.2, 0.2]

    def box_for(question: str) -> list[float]:
        return around if int(hashlib.sha256(question.encode()).hexdigest(), 16) % 2 else corner

    def script(request):
        if request.task != "judge":
            return None
        return {"content": {**SURE_PASS, "edit_region": box_for(question_in(request))}}

    openai_fake.script(script)
    out = tmp_path / "run"
    proc = synth(
        "openai", out, openai_fake, None,
        "--set", "stages.judge.localise_edit=true", "--set", "stages.judge.non_edit_threshold=0.99",
        "--set", "stages.edit.max_attempts=1", records=8,
    )
    assert proc.returncode == 0, proc.stderr
    judge_requests = [r for r in openai_fake.requests if r.task == "judge"]
    assert judge_requests and all("edit_region" in json.dumps(r.body) for r in judge_requests)
    judged = [row for row in rows(out).values() if row["scores"]["instruction_following"] is not None]
    assert len(judged) >= 4
    seen = set()
    for row in judged:
        box = box_for(neutralise(row["original_question"]))
        score = row["scores"]["non_edit_consistency"]
        if box is around:
            assert score == 1.0 and row["accepted"], row["id"]
            seen.add("around")
        else:
            assert score < 0.99 and row["reject_reason"] == "low_score", row["id"]
            assert "non_edit_consistency" in row["reject_detail"]
            seen.add("corner")
    assert seen == {"around", "corner"}
