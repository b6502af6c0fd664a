"""Issue 24 as a user meets it: the `uniedit` pipeline through the real SDKs against the fakes, with a judge
that gives 5/5/5 to everything but reports (truthfully) that it saw the other branch: no pair gets into the
data, every reject says why; and instructions end with varied preservation clauses, never the release's global
aesthetics request."""

from __future__ import annotations

import pytest

from tests.e2e.test_backends_e2e import gemini_fake, openai_fake, reasons, rows, synth  # noqa: F401
from uniedit_synth.method.plan import RELEASE_CLOSING

pytestmark = pytest.mark.e2e

LENIENT_OTHER = {
    "observed_changes": "the object was painted gold",
    "branch_observed": "other",
    "changes_outside_target": False,
    "analysis": "A clean, convincing edit.",
    "instruction_following": 5,
    "visual_quality": 5,
    "coherence": 5,
}


def test_a_lenient_judge_that_saw_the_other_branch_lets_nothing_in(tmp_path, openai_fake, gemini_fake):  # noqa: F811
    openai_fake.set_reply("judge", LENIENT_OTHER)
    out = tmp_path / "run"
    proc = synth(
        "uniedit", out, openai_fake, gemini_fake,
        "--set", "stages.edit.max_attempts=1",
        "--set", "stages.rewrite.styles={color: {conditional: 1.0}, default: {conditional: 1.0}}",
        records=6,
    )
    assert proc.returncode == 0, proc.stderr
    found = rows(out)
    judged = [r for r in found.values() if r["scores"] and r["scores"]["instruction_following"] is not None]
    assert judged and not any(r["accepted"] for r in found.values())
    assert set(reasons(found)) <= {"low_score", "filtered_category", "rewrite_failed", "leaks_answer"}
    for row in judged:
        assert row["reject_reason"] == "low_score"
        assert row["reject_detail"].startswith("branch_observed=other")
        assert row["scores"]["instruction_following"] == 5
    judge_requests = [r for r in openai_fake.requests if r.task == "judge"]
    schema = judge_requests[0].body["response_format"]["json_schema"]["schema"]
    assert list(schema["properties"])[:4] == ["observed_changes", "branch_observed", "changes_outside_target",
                                              "analysis"]


def test_instructions_end_with_a_drawn_preservation_clause(tmp_path, openai_fake, gemini_fake):  # noqa: F811
    out = tmp_path / "run"
    proc = synth("uniedit", out, openai_fake, gemini_fake, records=6)
    assert proc.returncode == 0, proc.stderr
    prompts = [r for r in openai_fake.requests if r.task == "rewrite"]
    assert prompts
    closings = set()
    for request in prompts:
        text = "\n".join(m["content"] if isinstance(m["content"], str) else " ".join(p.get("text", "") for p in m["content"])
                         for m in request.body["messages"])
        closing = text.split("<vqa_aesthetics>")[-1].split("</vqa_aesthetics>")[0].strip()
        assert closing and closing != RELEASE_CLOSING and "appealing" not in closing
        closings.add(closing)
    assert len(closings) >= 2
