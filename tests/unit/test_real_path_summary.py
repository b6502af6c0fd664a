"""benchmarks/real_path.py's verdicts: which rows fail the check, the gist of a reject, the deal of kinds."""

from __future__ import annotations

import io

from PIL import Image

from benchmarks.real_path import DEAL, deal, gate_of, summarise
from tests.fakes.real_models import KINDS, Case


def png(size: tuple[int, int]) -> dict[str, bytes]:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 200, 200)).save(out, format="PNG")
    return {"bytes": out.getvalue()}


def case(question: str, kind: str) -> Case:
    return Case(question, "red", "color", kind, (0.4, 0.4, 0.5, 0.5), (0.1, 0.4, 0.2, 0.5), "the cube")


def row(question: str, accepted: bool, size=(320, 240), reason=None, detail=None) -> dict:
    return {"id": f"realpath/{question}", "original_question": question, "accepted": accepted,
            "reject_reason": reason, "reject_detail": detail, "edited_image": png(size)}


def test_the_check_fails_on_a_defect_kept_a_good_record_lost_or_a_wrong_aspect() -> None:
    cases = [case("q1", "good"), case("q2", "unchanged"), case("q3", "good"), case("q4", "wrong_object"),
             case("q5", "global_rerender"), case("q6", "square_output")]
    rows = [
        row("q1", True),
        row("q2", True),  # a defect kept
        row("q3", False, reason="no_op_edit", detail="largest local change 3.1 < no_op_delta 26"),  # good lost
        row("q4", True),  # judge-only: shown, not a failure
        row("q5", False, reason="over_edited", detail="the whole image shifted: median 44"),
        row("q6", True, size=(1024, 1024)),  # kept, but not at the source's aspect
    ]
    summary = summarise("openai", rows, {}, cases)
    failures = "\n".join(summary["failures"])
    assert "defective pair accepted: realpath/q2 (unchanged)" in failures
    assert "good record rejected: realpath/q3" in failures
    assert "realpath/q6 accepted at 1024x1024" in failures
    assert "q1" not in failures and "q4" not in failures and "q5" not in failures
    assert len(summary["failures"]) == 3
    assert summary["aspect_mismatch"] == 1 and (summary["good_kept"], summary["good_played"]) == (2, 3)
    assert summary["table"]["global_rerender"]["gates"] == {"over_edited (the whole image shifted)": 1}


def test_played_kind_overrides_the_dealt_one() -> None:
    summary = summarise("uniedit", [row("q1", True)], {"q1": "unchanged"}, [case("q1", "swapped_branches")])
    assert summary["table"]["unchanged"]["accepted"] == 1 and summary["failures"]


def test_gate_of_keeps_the_rule_and_drops_numbers_and_prefixes() -> None:
    assert gate_of({"reject_reason": "rewrite_failed", "reject_detail":
                    "rewrite: distinct branches: then_edit and else_edit are the same edit (after one repair request)"}
                   ) == "rewrite_failed (distinct branches)"
    assert gate_of({"reject_reason": "safety_blocked", "reject_detail": "rewrite: openai gpt-4o: refused: no"}) == (
        "safety_blocked (refused)")
    assert gate_of({"reject_reason": "low_score", "reject_detail": None}) == "low_score"


def test_deal_gives_conditional_kinds_only_to_conditional_plans() -> None:
    rows = [{"id": f"s{i:03d}", "category": "color", "answer": "red"} for i in range(sum(DEAL.values()))]
    cases = [case(f"q{i}", "good") for i in range(len(rows))]
    deal(rows, cases)
    from benchmarks.real_path import LABEL, predicted_conditional

    for r, c in zip(rows, cases, strict=True):
        if KINDS[c.kind].conditional:
            assert predicted_conditional(f"{LABEL}/{r['id']}", r)
    dealt = {c.kind for c in cases}
    assert {"good", "unchanged", "swapped_branches", "judge_contradicts", "wrong_object"} <= dealt
