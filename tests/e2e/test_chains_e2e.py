"""Multi-turn chains end to end (`uniedit synth --turns N`): the offline world with answers checked against the
program, a rerun that does no work, the bagel export's chain rows, the Gemini/OpenAI fakes (the second edit
request carries the first edit's image), batch mode, and kills anywhere with `--turns 3`."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import run_cli
from uniedit_synth.offline.questions import answer_query, format_answer
from uniedit_synth.offline.world import Scene

pytestmark = pytest.mark.e2e


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def shard_rows(out: Path, kind: str) -> list[dict[str, Any]]:
    found = []
    for path in sorted((out / kind).glob("shard-*.parquet")):
        found += pq.read_table(path).to_pylist()
    return found


def chains_of(found: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    chains: dict[str, list[dict[str, Any]]] = {}
    for row in found:
        chains.setdefault(row["chain_id"], []).append(row)
    return {k: sorted(v, key=lambda r: r["turn"]) for k, v in chains.items()}


def test_offline_three_turn_chains_answers_resume_and_bagel(tmp_path: Path):
    out = tmp_path / "run"
    args = ["synth", "--turns", "3", "--limit", "120", "--out", str(out), "--engine", "inline", "--no-progress"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    data, rejects = shard_rows(out, "data"), shard_rows(out, "rejects")
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    # every record read is accounted for exactly once: kept chains + rejected records == read
    chains = chains_of(data)
    assert len(chains) + len(rejects) == 120 == sum(e["records"] for e in manifest)
    assert sum(e["accepted"] for e in manifest) == len(chains)
    full = [c for c in chains.values() if len(c) == 3]
    assert len(full) >= 20
    assert sum(e["chains"]["full"] for e in manifest) == len(full)
    for chain in chains.values():
        assert [r["turn"] for r in chain] == list(range(1, len(chain) + 1))
        assert chain[0]["parent_id"] is None and chain[0]["id"] == chain[0]["chain_id"]
        for before, after in zip(chain, chain[1:], strict=False):
            assert after["parent_id"] == before["id"]
            # byte for byte, hence pixel for pixel: turn k edits turn k-1's accepted image
            assert after["source_image"]["bytes"] == before["edited_image"]["bytes"]
            assert np.array_equal(pixels(after["source_image"]["bytes"]), pixels(before["edited_image"]["bytes"]))
            assert after["original_question"] != before["original_question"]
        for row in chain:
            meta = json.loads(row["record_meta"])
            truth = format_answer(answer_query(Scene.model_validate(meta["scene"]), meta["question_spec"]["query"]))
            assert row["original_answer"] == truth
            assert f"the answer is {truth}" in row["reasoning"]
            # the scene a later turn asks about is the one its source image shows
            assert np.array_equal(pixels(row["source_image"]["bytes"]), _render(meta["scene"])) or row["turn"] == 1
    # a chain that broke records the turn and reason in attempts/ and in the manifest
    breaks = Counter()
    for entry in manifest:
        for turn, reasons in entry["chains"]["breaks"].items():
            breaks[turn] += sum(reasons.values())
    broken = [r for r in shard_rows(out, "attempts") + rejects if (r["reject_detail"] or "").startswith("chain broke")]
    assert sum(breaks.values()) == len(broken) == len({r["chain_id"] for r in broken}) > 0
    assert all(r["turn"] > 1 and r["reject_reason"] for r in broken)

    # a rerun does no work
    log = tmp_path / "calls.log"
    again = run_cli(*args, env={"UNIEDIT_CALL_LOG": str(log)})
    assert again.returncode == 0, again.stderr
    assert not log.exists() or log.read_text() == ""
    assert "0 run" in again.stdout

    # bagel: one row per chain, k+1 images, k instructions
    export = tmp_path / "bagel"
    done = run_cli("export", str(out), "--format", "bagel", "--out", str(export))
    assert done.returncode == 0, done.stderr
    bagel = [row for path in sorted((export / "train").glob("*.parquet")) for row in pq.read_table(path).to_pylist()]
    assert len(bagel) == len(chains)
    for row in bagel:
        chain = chains[row["id"]]
        assert len(row["image_list"]) == len(chain) + 1 and len(row["instruction_list"]) == len(chain)
        assert row["image_list"][0] == chain[0]["source_image"]["bytes"]
        assert row["image_list"][1:] == [r["edited_image"]["bytes"] for r in chain]
        assert row["instruction_list"] == [[r["edit_instruction"]] for r in chain]

    stats = run_cli("stats", str(out))
    assert stats.returncode == 0 and "chains" in stats.stdout


def _render(scene: dict) -> np.ndarray:
    from uniedit_synth.offline.render import render_image

    return np.asarray(render_image(Scene.model_validate(scene)))


# -- against the Gemini / OpenAI fakes ------------------------------------------------------------------------
def quoting_rewrite(request: Any) -> Any:
    """A rewriter that quotes the record's question inside the condition, as real models word it
    ('If the answer to "Does the picture show this change: …?" is no, …'): the fake's plan-following reply
    with its condition reworded; None (a normal reply) for every other request."""
    import re

    from tests.e2e.test_backends_e2e import text_of
    from tests.fakes.base import plan_following_rewrite

    if request.task != "rewrite":
        return None
    text = text_of(request)
    reply, question = plan_following_rewrite([text]), re.findall(r"^Question: (.+)$", text, re.MULTILINE)
    if reply is None or not question:
        return None
    quoted = '"' + re.sub(r"</?vqa_question>", "", question[-1]).strip() + '"'
    body = reply["instruction"].removeprefix("Answer the question about the original image. ")
    body = body.replace("the statement of that question holds", f"the statement of the question {quoted} holds")
    reply["instruction"] = re.sub(r"^If the answer is ", f"If the answer to {quoted} is ", body)
    return {"content": reply}


def _fakes_run(tmp_path: Path, *extra: str, records: int = 4, turns: int = 2, script: Any = None):
    from tests.e2e.test_backends_e2e import GEMINI_KEY, OPENAI_KEY, scripted_usage, synth
    from tests.fakes import FakeGemini, FakeOpenAI

    with FakeOpenAI(api_key=OPENAI_KEY) as openai_fake, FakeGemini(api_key=GEMINI_KEY) as gemini_fake:
        scripted_usage(openai_fake, gemini_fake)
        if script is not None:
            openai_fake.script(script)
        proc = synth("uniedit", tmp_path / "run", openai_fake, gemini_fake, "--turns", str(turns), "--shard-size",
                     "2", *extra, records=records)
        return proc, openai_fake, gemini_fake


def edit_images(fake: Any) -> list[tuple[bytes, str]]:
    """(image, batch job id or "") of every Gemini edit request the fake answered, online or as a batch item."""
    from tests.fakes.base import b64decode_any

    out = []
    for request in fake.requests:
        if request.task != "edit" or not isinstance(request.body, dict):
            continue
        for content in request.body.get("contents", []):
            for part in content.get("parts", []):
                inline = part.get("inlineData") or part.get("inline_data")
                if inline:
                    out.append((b64decode_any(inline["data"]), request.batch))
    return out


def _check_two_turns(out: Path, gemini_fake: Any, records: int) -> dict[str, list[dict[str, Any]]]:
    data = shard_rows(out, "data")
    chains = chains_of(data)
    assert len(chains) + len(shard_rows(out, "rejects")) == records
    two = [c for c in chains.values() if len(c) == 2]
    assert two, "no chain reached its second turn"
    sent = [image for image, _job in edit_images(gemini_fake)]
    for first, second in two:
        # the second edit request carries the first edit's image, byte for byte
        assert second["source_image"]["bytes"] == first["edited_image"]["bytes"]
        assert first["edited_image"]["bytes"] in sent
        assert second["parent_id"] == first["id"] and second["chain_id"] == first["id"]
        # the question is about what the first turn established; the plan holds its answer
        assert second["original_question"].startswith("Does the picture show this change:")
        assert second["original_answer"] in ("yes", "no")
        assert second["original_question"] != first["original_question"]
    return chains


def test_uniedit_pipeline_two_turns_against_the_fakes(tmp_path: Path):
    proc, _openai, gemini_fake = _fakes_run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    _check_two_turns(tmp_path / "run", gemini_fake, 4)


def test_chains_continue_when_the_rewriter_quotes_the_question_and_after_synthesis_turns(tmp_path: Path):
    """Issue 26 follow-up: a later turn's instruction that quotes its question (the previous edit's text) is
    not read as swapped branches, a yes/no candidate "no" does not negate its own condition, and a synthesis
    turn (its intended effect a whole instruction) still gives the next turn a fact to ask about."""
    proc, _openai, gemini_fake = _fakes_run(tmp_path, records=8, turns=3, script=quoting_rewrite)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "run"
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sum(e["accepted"] + e["rejected"] for e in manifest) == 8 == sum(e["records"] for e in manifest)
    breaks = Counter()
    for entry in manifest:
        for reasons in entry["chains"]["breaks"].values():
            breaks.update(reasons)
    assert breaks["rewrite_failed"] == 0, breaks
    chains = chains_of(shard_rows(out, "data"))
    assert sum(len(c) == 3 for c in chains.values()) == len(chains) == 8
    quoted = [r for c in chains.values() for r in c[1:] if '"Does the picture show this change:' in r["edit_instruction"]]
    assert quoted and len({r["original_answer"] for r in quoted}) == 2  # both facts asked: "yes" and "no"
    synthesis = [c for c in chains.values() if c[0]["instruction_plan"]["style"] == "synthesis"]
    assert synthesis and all(c[1]["original_answer"] == "yes" for c in synthesis)


def test_batch_mode_with_chains_waits_for_the_previous_turns_job(tmp_path: Path):
    from tests.e2e.test_batch_e2e import BATCH, online_calls

    proc, openai_fake, gemini_fake = _fakes_run(tmp_path, *BATCH)
    assert proc.returncode == 0, proc.stderr
    chains = _check_two_turns(tmp_path / "run", gemini_fake, 4)
    assert online_calls(openai_fake) == {} and online_calls(gemini_fake) == {}
    # a turn-2 edit went out in another job than every turn-1 edit: it waited for its previous turn's job
    sent = edit_images(gemini_fake)
    assert all(job for _image, job in sent)
    firsts = {c[0]["source_image"]["bytes"] for c in chains.values()}
    seconds = {c[1]["source_image"]["bytes"] for c in chains.values() if len(c) == 2}
    first_jobs = {job for image, job in sent if image in firsts}
    second_jobs = {job for image, job in sent if image in seconds}
    assert first_jobs and second_jobs and not first_jobs & second_jobs


# -- kills anywhere ------------------------------------------------------------------------------------------
@pytest.mark.serial
def test_chaos_with_three_turn_chains_loses_nothing_and_pays_nothing_twice(tmp_path: Path):
    from benchmarks.chaos import rows, run_chaos

    tally = run_chaos(tmp_path, kills=6, seed=11, records=60, extra_args=("--turns", "3"))  # 3 shards
    print(json.dumps(tally, indent=2))
    assert tally["kills"] == 6
    assert tally["unreadable_shards"] == []
    assert tally["same_output"] is True  # identical rows, every turn of every chain
    assert tally["calls_repeated"] == 0
    assert tally["calls_missing"] == 0
    assert tally["calls_lost_in_flight"] <= tally["kills"]
    found = rows(tmp_path / "chaos")
    assert any(row["turn"] == 3 for row in found.values())  # the chains did run to their third turn
