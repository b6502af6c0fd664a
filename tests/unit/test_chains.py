"""Multi-turn chains: the config, the chain columns, the next turn's question (offline world and fact questions),
min_turns, the bagel chain rows, the chain dataset and the chain totals."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from uniedit_synth.api import load_pipeline
from uniedit_synth.core.config import pipeline_hash
from uniedit_synth.core.plan import InstructionPlan
from uniedit_synth.core.records import SAMPLE_SCHEMA, Sample, row_to_sample, sample_to_row, samples_to_table
from uniedit_synth.core.specs import ChainSpec
from uniedit_synth.engine.driver import run_synth
from uniedit_synth.export.bagel import chain_row
from uniedit_synth.method.answers import candidate_in_condition, leaks_answer
from uniedit_synth.method.branches import branch_mismatch, read_branches
from uniedit_synth.method.chain import chain_totals, fact_question, format_chain_totals
from uniedit_synth.offline.chain import NoNextTurn, next_scene_turn
from uniedit_synth.offline.choose import scene_program
from uniedit_synth.offline.program import ProgramError, apply_program
from uniedit_synth.offline.questions import answer_query, format_answer
from uniedit_synth.offline.render import render_png
from uniedit_synth.offline.world import Scene
from uniedit_synth.sources.scenes import ScenesSource


# -- config ----------------------------------------------------------------------------------------------
def test_chain_spec_bounds_and_the_hash_of_single_turn_runs():
    with pytest.raises(ValidationError, match="min_turns"):
        ChainSpec(turns=2, min_turns=3)
    with pytest.raises(ValidationError):
        ChainSpec(turns=0)
    single = load_pipeline("default")
    assert single.stages.chain.turns == 1
    assert "chain" not in single.hashed_view()["stages"]  # single-turn runs keep the hash they had
    chained = load_pipeline("default", {"stages": {"chain": {"turns": 3, "min_turns": 2}}})
    assert chained.stages.chain == ChainSpec(turns=3, min_turns=2)
    assert pipeline_hash(chained, {}) != pipeline_hash(single, {})


# -- columns ---------------------------------------------------------------------------------------------
def test_chain_columns_are_in_the_schema_and_round_trip():
    assert {"chain_id", "turn", "parent_id"} <= set(SAMPLE_SCHEMA.names)
    single = Sample(id="a", source="s", shard=0)
    row = sample_to_row(single)
    assert (row["chain_id"], row["turn"], row["parent_id"]) == ("a", 1, None)  # turn 1 of its own chain
    later = Sample(id="a~t2", source="s", shard=0, chain_id="a", turn=2, parent_id="a")
    table = samples_to_table([later, single])
    assert table.column("id").to_pylist() == ["a", "a~t2"]
    back = row_to_sample(table.to_pylist()[1])
    assert (back.chain_id, back.turn, back.parent_id) == ("a", 2, "a")
    old = {k: v for k, v in table.to_pylist()[0].items() if k not in ("chain_id", "turn", "parent_id")}
    assert row_to_sample(old).turn == 1  # a row written before the chain columns


# -- the next turn's question ----------------------------------------------------------------------------
def _scene_turn(index: int) -> tuple[dict, dict, bytes, str] | None:
    record = ScenesSource(count=index + 1).record(index)
    scene = Scene.model_validate(record.meta["scene"])
    try:
        program = scene_program(scene, record.meta["question_spec"], random.Random(index), avoid=record.answer,
                                plan={"style": "synthesis"})
    except ProgramError:
        return None
    return record.meta, program, render_png(apply_program(scene, program)), record.question


def test_next_scene_turn_asks_about_the_edited_scene_with_its_true_answer():
    asked = 0
    for index in range(12):
        turn = _scene_turn(index)
        if turn is None:
            continue
        meta, program, edited, question = turn
        try:
            new_q, answer, category, new_meta = next_scene_turn(meta, program, edited, question, seed=0,
                                                                chain_id=f"c{index}", turn=2)
        except NoNextTurn:
            continue
        asked += 1
        after = Scene.model_validate(new_meta["scene"])
        assert render_png(after) == edited  # the question is about the scene the image shows
        assert answer == format_answer(answer_query(after, new_meta["question_spec"]["query"]))
        assert new_q != question and new_meta["question_spec"]["category"] == category
        again = next_scene_turn(meta, program, edited, question, seed=0, chain_id=f"c{index}", turn=2)
        assert again == (new_q, answer, category, new_meta)  # seeded: a rerun asks the same
    assert asked >= 8


def test_next_scene_turn_refuses_an_image_that_does_not_show_the_programs_scene():
    meta, program, _edited, question = next(t for t in map(_scene_turn, range(12)) if t is not None)
    source = render_png(Scene.model_validate(meta["scene"]))  # the unedited image
    with pytest.raises(NoNextTurn, match="does not show"):
        next_scene_turn(meta, program, source, question, seed=0, chain_id="c", turn=2)


def test_fact_question_asks_what_the_verified_edit_established():
    plan = InstructionPlan(style="conditional", candidate="red", candidate_is_answer=False, expected_branch="else",
                           then_edit="add a blue mug.", else_edit="remove the lamp")
    seen = {fact_question(plan, None, None, "What colour?", seed=0, chain_id=f"c{i}", turn=2) for i in range(40)}
    assert seen == {("Does the picture show this change: remove the lamp?", "yes"),
                    ("Does the picture show this change: add a blue mug?", "no")}
    synthesis = InstructionPlan(style="synthesis")
    assert fact_question(synthesis, "draw a red panel", None, "q", seed=0, chain_id="c", turn=2) == (
        "Does the picture show this change: draw a red panel?", "yes")
    repeated = "Does the picture show this change: draw a red panel?"
    assert fact_question(synthesis, "draw a red panel", None, repeated, seed=0, chain_id="c", turn=3) is None
    assert fact_question(None, None, None, "q", seed=0, chain_id="c", turn=2) is None
    # a synthesis instruction as the effect: the edit after its quoted question, not the whole instruction
    whole = 'First, decide "What colour is the circle?". Then fill a panel in the corner with that colour. Keep it.'
    assert fact_question(synthesis, whole, None, "q", seed=0, chain_id="c", turn=2) == (
        "Does the picture show this change: fill a panel in the corner with that colour?", "yes")
    assert fact_question(synthesis, "x" * 200, None, "q", seed=0, chain_id="c", turn=2) is None


def test_fact_question_of_a_synthesis_instruction_asks_about_its_action_clause():
    """A synthesis turn's intended effect is its whole instruction, too long to quote: the next turn asks
    about the clause that made the visible change, and the chain goes on instead of breaking."""
    synthesis = InstructionPlan(style="synthesis")
    whole = ("Work out the colour of the object the question asks about in the original image, then add a small "
             "ceramic mug painted in that same colour next to it. Refine the image with a visually appealing, "
             "harmonious look.")
    assert len(whole) > 160
    expected = ("Does the picture show this change: add a small ceramic mug painted in that same colour next to it?",
                "yes")
    assert fact_question(synthesis, whole, whole, "q", seed=0, chain_id="c", turn=2) == expected
    assert fact_question(None, None, whole, "q", seed=0, chain_id="c", turn=2) == expected
    answered = ('Answer "How many cubes are in the scene?" and draw that many red stars on the back wall, evenly '
                "spaced, each about as large as the smallest cube. Keep everything else exactly as it is, "
                "same framing and lighting.")
    assert fact_question(synthesis, answered, None, "q", seed=0, chain_id="c", turn=2) == (
        "Does the picture show this change: draw that many red stars on the back wall, evenly spaced, each about as "
        "large as the smallest cube?", "yes")
    # nothing visible to ask about, and a conditional's own text (only one branch ran): still no fact
    assert fact_question(synthesis, "Keep everything unchanged. " * 8, None, "q", seed=0, chain_id="c", turn=2) is None
    conditional = InstructionPlan(style="conditional", candidate="red", expected_branch="else")
    assert fact_question(conditional, None, "If it is red, " + whole, "q", seed=0, chain_id="c", turn=2) is None


QUOTED = "Does the picture show this change: add a small ceramic mug beside the lamp?"
GOLD, MUG = "paint the lamp bright gold", "add a small ceramic mug beside the lamp"


@pytest.mark.parametrize("candidate", ["yes", "no"])
@pytest.mark.parametrize("template", [
    'If the answer to "{q}" is {c}, paint the lamp bright gold; otherwise, add a small ceramic mug beside the lamp.',
    'If the answer is {c} to the question "{q}", paint the lamp bright gold; otherwise, add a small ceramic mug '
    "beside the lamp.",
    "Ask yourself \u201c{q}\u201d and if the answer is {c}, paint the lamp bright gold; otherwise, add a small "
    "ceramic mug beside the lamp.",
    'Add a small ceramic mug beside the lamp unless the answer to "{q}" is {c}, in which case paint the lamp '
    "bright gold.",
])
def test_a_quoted_question_is_no_branch_clause_and_a_no_candidate_no_negation(template: str, candidate: str):
    """A later turn's instruction quotes its question, whose text is the previous edit: that text is not a
    branch, the condition around the quote stays one clause, and "if the answer is no" is not negated."""
    instruction = template.format(q=QUOTED, c=candidate)
    assert branch_mismatch(instruction, GOLD, MUG, candidate) is None
    branches = read_branches(instruction, candidate)
    assert "gold" in branches.then_text and "gold" not in branches.else_text
    assert "mug" in branches.else_text and "mug" not in branches.then_text
    assert candidate_in_condition(instruction, candidate)
    # the swap is still caught
    assert branch_mismatch(instruction, MUG, GOLD, candidate) is not None


def test_leak_check_reads_the_emptied_quotes_of_a_verbatim_question_as_the_question():
    """plan_leak takes the verbatim question out of the instruction; the quote marks left behind must not
    end the condition clause, or the allowed candidate in it reads as a leak."""
    inside = 'If the answer to "  " is not cylinder, paint it gold; otherwise, add a mug.'
    assert leaks_answer(inside, "cylinder", candidate_is_answer=True) is None
    assert leaks_answer('Paint it gold. "  " The answer is cylinder.', "cylinder", candidate_is_answer=True)


# -- a run: min_turns, accounting, the chain dataset ------------------------------------------------------
@pytest.fixture(scope="module")
def chained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("chains") / "run"
    config = load_pipeline("default", {
        # one question a scene: samples of one grouped scene are duplicate sources by design (audit)
        "limit": 24, "engine": {"kind": "inline", "shard_size": 12}, "source": {"group_by_image": False},
        "stages": {"chain": {"turns": 3, "min_turns": 2}},
    })
    run_synth(config, str(out), progress=False)
    return out


def _rows(out: Path, kind: str) -> list[dict]:
    return [r for p in sorted((out / kind).glob("shard-*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_min_turns_keeps_long_enough_prefixes_and_counts_every_record_once(chained_run: Path):
    data, rejects, attempts = (_rows(chained_run, k) for k in ("data", "rejects", "attempts"))
    manifest = [json.loads(line) for line in (chained_run / "manifest.jsonl").read_text().splitlines()]
    chains: dict[str, list[dict]] = {}
    for row in data:
        chains.setdefault(row["chain_id"], []).append(row)
    assert all(len(turns) >= 2 for turns in chains.values())  # min_turns 2
    assert len(chains) + len(rejects) == 24 == sum(e["records"] for e in manifest)
    assert sum(e["accepted"] for e in manifest) == len(chains)
    totals = chain_totals(manifest)["chains"]
    assert totals["kept"] == len(chains) and totals["lengths"].get("1") is None
    # a chain that broke at turn 2 after one verified turn leaves through its turn-2 row; turn 1 is kept aside
    dropped = [r for r in rejects if r["turn"] == 2]
    assert totals["dropped"] == len(dropped) > 0
    for row in dropped:
        assert row["reject_detail"].startswith("chain broke at turn 2 after 1 verified turn(s)")
        aside = [a for a in attempts if a["id"] == row["chain_id"] and a["reject_detail"].startswith("dropped")]
        assert len(aside) == 1 and aside[0]["edited_image"]["bytes"] == row["source_image"]["bytes"]
    text = "\n".join(format_chain_totals(totals))
    assert "chains (3 turns, min 2)" in text


def test_manifest_categories_count_records_by_first_turn_and_every_turn_apart(chained_run: Path):
    """`categories`: read / accepted / rejected per record under its first turn's category (read sums to the
    records, a dropped chain is not filed under its breaking turn's category); `turns` / `turns_accepted`
    count every turn's row under its own category."""
    data, rejects, attempts = (_rows(chained_run, k) for k in ("data", "rejects", "attempts"))
    manifest = [json.loads(line) for line in (chained_run / "manifest.jsonl").read_text().splitlines()]
    categories: dict[str, dict[str, int]] = {}
    for entry in manifest:
        for cat, counts in entry["categories"].items():
            for key, n in counts.items():
                categories.setdefault(cat, {}).setdefault(key, 0)
                categories[cat][key] += n
    assert sum(c.get("read", 0) for c in categories.values()) == 24
    first = {r["id"]: r for r in data + rejects + attempts if r["turn"] == 1}
    exits = [r for r in data if r["turn"] == 1] + rejects  # one row per record
    by_first = Counter(first[r["chain_id"]]["task_category"] for r in exits)
    assert {k: v["read"] for k, v in categories.items() if v.get("read")} == dict(by_first)
    # every turn once: kept turns, a dropped chain's breaking turn and its verified prefix, a kept chain's
    # breaking turn (judged failures before a retry are not turns)
    broke = [a for a in attempts if (a["reject_detail"] or "").startswith(("dropped", "chain broke"))]
    every_turn = {(r["chain_id"], r["turn"]) for r in data + rejects + broke}
    assert sum(c.get("turns", 0) for c in categories.values()) == len(every_turn)
    assert sum(c.get("turns", 0) for c in categories.values()) > 24


def test_non_edit_counts_and_live_progress_count_every_turn_and_each_record_once(monkeypatch, tmp_path: Path):
    """The shard's `non_edit` figures count every turn's judged row once; the live progress counts a chain's
    record once, when the chain ends, as the manifest does (a chain dropped as too short is a reject)."""
    from uniedit_synth.engine import worker as worker_module
    from uniedit_synth.engine.coordinator import Coordinator

    seen: list[dict] = []
    real_report = Coordinator.report

    async def spy(self, delta):
        seen.append(json.loads(json.dumps(delta, default=dict)))
        return await real_report(self, delta)

    monkeypatch.setattr(Coordinator, "report", spy)
    counted: list[int] = []
    real_counts = worker_module.non_edit_counts
    monkeypatch.setattr(worker_module, "non_edit_counts",
                        lambda samples, threshold: counted.append(len(samples)) or real_counts(samples, threshold))
    out = tmp_path / "run"
    config = load_pipeline("default", {
        "limit": 12, "engine": {"kind": "inline", "shard_size": 12}, "source": {"group_by_image": False},
        "stages": {"chain": {"turns": 3, "min_turns": 2}},
    })
    run_synth(config, str(out), progress=False)
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    entry = manifest[0]
    broke = [a for a in _rows(out, "attempts") if (a["reject_detail"] or "").startswith(("dropped", "chain broke"))]
    later = sum(1 for r in _rows(out, "data") + _rows(out, "rejects") + broke if r["turn"] > 1)
    assert counted == [12 + later] and later > 0
    assert sum(d.get("records", 0) for d in seen) == 12 == entry["records"]
    assert sum(d.get("accepted", 0) for d in seen) == entry["accepted"]
    rejected = sum(sum(d.get("rejected", {}).values()) for d in seen)
    assert rejected == entry["rejected"] and entry["chains"]["dropped"] > 0


def test_chain_dataset_yields_whole_chains(chained_run: Path):
    import torch

    from uniedit_synth.train.chains import EditChainDataset

    dataset = EditChainDataset(chained_run, image_size=32)
    assert len(dataset) == len({r["chain_id"] for r in _rows(chained_run, "data")})
    for index in range(len(dataset)):
        chain = dataset[index]
        ids = [t["id"] for t in chain["turns"]]
        assert ids[0] == chain["chain_id"] and ids[1:] == [f"{chain['chain_id']}~t{k}" for k in range(2, len(ids) + 1)]
        for before, after in zip(chain["turns"], chain["turns"][1:], strict=False):
            assert torch.equal(before["target"], after["source"])
    assert len(EditChainDataset(chained_run, image_size=32, min_turns=3)) < len(dataset) or all(
        len(dataset[i]["turns"]) == 3 for i in range(len(dataset)))


# -- bagel --------------------------------------------------------------------------------------------------
def test_bagel_chain_row_has_k_plus_one_images_and_k_instructions():
    turns = [Sample(id="c" if k == 1 else f"c~t{k}", source="s", shard=0, chain_id="c", turn=k,
                    source_image=bytes([k - 1]), edited_image=bytes([k]), edit_instruction=f"step {k}",
                    reasoning=f"because {k}") for k in (1, 2, 3)]
    row = chain_row(turns, with_reasoning=True)
    assert row["image_list"] == [b"\x00", b"\x01", b"\x02", b"\x03"]
    assert row["instruction_list"] == [["step 1"], ["step 2"], ["step 3"]]
    assert row["think_list"] == [["<think>because 1</think>"], ["<think>because 2</think>"], ["<think>because 3</think>"]]
    assert row["id"] == "c"


def test_bagel_writer_groups_a_chains_consecutive_turns(tmp_path: Path):
    from uniedit_synth.export.bagel import BagelWriter
    from uniedit_synth.export.options import ExportOptions

    options = ExportOptions(format="bagel", shard_rows=100, row_group_rows=8)
    writer = BagelWriter(tmp_path, tmp_path, options, {})
    rows = [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1), ("c", 3)]  # c's turn 2 was filtered out
    for chain, turn in rows:
        writer.add(Sample(id=chain if turn == 1 else f"{chain}~t{turn}", source="s", shard=0, chain_id=chain,
                          turn=turn, source_image=b"s", edited_image=b"e", edit_instruction="x"), "train", None)
    writer._flush_chain()
    files = writer.shards["train"].close()
    written = [r for f in files for r in pq.read_table(f).to_pylist()]
    assert [(r["id"], len(r["image_list"]), len(r["instruction_list"])) for r in written] == [
        ("a", 4, 3), ("b", 2, 1), ("c", 2, 1), ("c~t3", 2, 1)]


def test_chain_totals_sum_shards_and_are_empty_for_single_turn_runs():
    assert chain_totals([{"records": 3}]) == {}
    entries = [{"chains": {"turns": 3, "min_turns": 1, "lengths": {"3": 2, "1": 1}, "full": 2, "dropped": 0,
                           "breaks": {"2": {"low_score": 1}}, "failed_first_turn": 1}},
               {"chains": {"turns": 3, "min_turns": 1, "lengths": {"2": 1}, "full": 0, "dropped": 0,
                           "breaks": {"3": {"leaks_answer": 1}, "2": {"low_score": 2}}, "failed_first_turn": 0}}]
    totals = chain_totals(entries)["chains"]
    assert totals["lengths"] == {"1": 1, "2": 1, "3": 2} and totals["kept"] == 4 and totals["full"] == 2
    assert totals["breaks"] == {"2": {"low_score": 3}, "3": {"leaks_answer": 1}}
    assert np.sum(list(totals["lengths"].values())) == 4


# -- audit and report ----------------------------------------------------------------------------------------
def test_audit_knows_chain_lengths_and_breaks_and_not_a_chain_as_duplicates(chained_run: Path):
    from uniedit_synth.audit.checks import format_audit, run_audit

    result = run_audit(str(chained_run), use_cache=False)
    chains: dict[str, int] = {}
    for row in _rows(chained_run, "data"):
        chains[row["chain_id"]] = chains.get(row["chain_id"], 0) + 1
    expected = {}
    for n in chains.values():
        expected[str(n)] = expected.get(str(n), 0) + 1
    assert result["chains"]["lengths"] == dict(sorted(expected.items()))
    assert result["chains"]["breaks"]  # turn -> reason -> chains, from the manifest
    # a turn edits its parent's image: near copies, but not duplicate sources of each other
    grouped = [set(g) for g in result["duplicate_sources"]["groups"]]
    assert not any(len({i.split("~")[0] for i in g}) < len(g) for g in grouped)
    assert "chains " in format_audit(result)


def test_report_strip_follows_a_chain_in_order():
    from uniedit_synth.report.html import _ChainStrip

    strip = _ChainStrip()
    image = {"src": {"thumb": "s"}, "edit": {"thumb": "e1"}}
    assert strip.add({"id": "a", "chain_id": "a", "turn": 1}, image) == []
    assert strip.add({"id": "a~t2", "chain_id": "a", "turn": 2}, {"src": {"thumb": "e1"}, "edit": {"thumb": "e2"}}) == [
        {"thumb": "s"}, {"thumb": "e1"}, {"thumb": "e2"}]
    assert strip.add({"id": "b~t2", "chain_id": "b", "turn": 2}, image) == []  # its turn 1 is not in the gallery
