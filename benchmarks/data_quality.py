"""Data quality of the offline world under the instruction plan: does every accepted edit need the answer?

Runs `uniedit synth` (default pipeline: the offline world with the builtin backends, which err and leak on
purpose) on N records, then checks every accepted row against the world's ground truth:

- no-op: the edited image is pixel-identical to the source;
- decided in advance: a condition whose truth is the same for every answer the question could have
  (`scenes.questions.possible_answers`), evaluated at each level of a nested condition;
- leaks: the answer in any v2 form (plural, spelling, number words, ordinals) outside the plan's
  candidate-in-condition;
- branch balance per category and the share of conditionals whose candidate is the answer;
- distinct openings (first five words) among the first 1,000 accepted rows, also with the embedded
  question masked;
- the plan's logic (issue 25): operators as shares of conditional rows, embedded questions per row, depth,
  category mix, and the share of rows holding the most common sentence skeleton (quoted question, numbers,
  colours, shapes, sizes, materials and sign words masked).

Then probes the builtin judge against an independent truth (pixel identity with the expected render):
per flaw kind (plus `wrong_path`: another leaf of a nested branch, and `wrong_parameter`: a count parameter
off by one), the share of flawed edits rejected, and precision / recall of acceptance. Probe records draw
plans with every logic form and two sibling questions on the same scene (as `group_by_image` merges them),
so joins, nesting in either branch and parameters are probed too.

    python benchmarks/data_quality.py                  # 2,000 records, 300 judge probes (~3 min on 2 cores)
    python benchmarks/data_quality.py --records 400 --probes 60
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import REPO, repo_env  # noqa: E402
from uniedit_synth.core.records import JSON_COLUMNS  # noqa: E402
from uniedit_synth.method.logic import FULL_LOGIC  # noqa: E402
from uniedit_synth.method.plan import draw_plan  # noqa: E402
from uniedit_synth.offline.checks import judge_probe, opening, quality_figures  # noqa: E402
from uniedit_synth.offline.generic import generic_program  # noqa: E402
from uniedit_synth.offline.logic_program import program_for_plan  # noqa: E402
from uniedit_synth.offline.questions import (  # noqa: E402
    SCENE_CATEGORIES,
    QueryError,
    generate_question,
    generate_vqa,
    plausible_answers,
)
from uniedit_synth.offline.render import render_png  # noqa: E402


def synth(out: Path, records: int, seed: int, extra: list[str]) -> float:
    import subprocess

    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "uniedit_synth.cli", "synth", "--out", str(out), "--limit", str(records),
         "--seed", str(seed), "--engine", "inline", "--no-progress", *extra],
        cwd=REPO, env=repo_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"uniedit synth failed:\n{proc.stderr[-2000:]}")
    return time.monotonic() - started


def read_rows(out: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted((out / "data").glob("shard-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            for column in JSON_COLUMNS:
                if row.get(column) is not None:
                    row[column] = json.loads(row[column])
            rows.append(row)
    return rows


def probe_records(count: int, seed: int) -> list[tuple[bytes, dict[str, Any], dict[str, Any]]]:
    """Scene records under drawn plans, plus generic-mode images (random noise photos) every fifth probe."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        if index % 5 == 4:
            noise = np.random.default_rng(index).integers(0, 256, (150, 200, 3), dtype=np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(noise).save(buffer, "PNG")
            answer = rng.choice(["7", "12", "red", "blue", "yes", "EXIT", "a red umbrella"])
            plan = draw_plan(seed, f"g{index}", "others", answer, logic_settings=FULL_LOGIC).model_dump()
            program = generic_program("What is it?", answer, "others", (200, 150), rng, plan=plan)
            out.append((buffer.getvalue(), program, {}))
            continue
        category = SCENE_CATEGORIES[index % len(SCENE_CATEGORIES)]
        scene, question, answer, spec = generate_vqa(rng, category, size=128)
        siblings = sibling_questions(scene, rng, question)
        space = [str(v) for v in plausible_answers(scene, spec["query"])]
        plan = draw_plan(
            seed, f"s{index}", category, answer, answer_space=space, question=question, siblings=siblings,
            logic_settings=FULL_LOGIC,
        ).model_dump()
        avoid = (answer, *(s["answer"] for s in siblings))
        try:
            program = program_for_plan(scene, spec, plan, siblings, rng, avoid)
        except ValueError:
            continue
        meta = {"world": "scenes", "scene": scene.model_dump(mode="json"), "question_spec": spec}
        out.append((render_png(scene), program, meta))
    return out


def sibling_questions(scene: Any, rng: random.Random, own: str) -> list[dict[str, Any]]:
    """Two more questions about the same scene (a count and a yes/no one), as `group_by_image` merges them."""
    out = []
    for category in ("count", "yes_no"):
        try:
            question, answer, spec = generate_question(scene, category, rng)
        except QueryError:
            continue
        if question == own:
            continue
        space = [str(v) for v in plausible_answers(scene, spec["query"])]
        meta = {"world": "scenes", "question_spec": spec, "answer_space": space}
        out.append({"id": f"sib{len(out)}", "question": question, "answer": answer, "category": category, "meta": meta})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=2000, help="records to synthesise (default 2000)")
    parser.add_argument("--probes", type=int, default=300, help="judge probe records (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--group-by-image", action="store_true",
        help="three questions per scene, merged into one record by `source.group_by_image`",
    )  # fmt: skip
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="uniedit-quality-") as tmp:
        out = Path(tmp) / "run"
        # CLEVR-like: three questions about each scene, grouped into one sample (sources/grouping.py)
        extra = ["--set", "source.group_by_image={scenes_questions_per_image: 3}"] if args.group_by_image else []
        elapsed = synth(out, args.records, args.seed, extra)
        rows = read_rows(out)
    stats = quality_figures(rows)
    first = rows[:1000]
    masked = {opening(re.sub(r'"[^"]*"', "<question>", r["edit_instruction"] or "")) for r in first}
    print(
        f"records {args.records} -> accepted rows {stats['rows']}  ({elapsed:.0f} s synth, default pipeline)"
    )
    print(f"no-op accepted rows            {stats['no_op']}")
    print(f"decided in advance             {stats['decided_in_advance']}")
    print(f"answer leaks (v2 forms)        {stats['leaks']}")
    print(f"styles                         {stats['styles']}")
    print(f"conditional rows               {stats['conditional']}  candidate_is_answer share "
          f"{stats['candidate_is_answer_share']}  nested share {stats['nested_share']}")  # fmt: skip
    print("branch balance (then/else)     " + ", ".join(
        f"{k} {v.get('then', 0)}/{v.get('else', 0)}" for k, v in stats["branch_balance"].items()))  # fmt: skip
    print(f"distinct openings (5 words)    {len({opening(r['edit_instruction'] or '') for r in first})} in the "
          f"first {len(first)} rows; {len(masked)} with the embedded question masked")  # fmt: skip
    print("operators (share of conditional) " + ", ".join(f"{k} {v:.3f}" for k, v in stats["operators"].items()))
    print(f"questions per row              {stats['questions_per_row']}  (>= 2: "
          f"{stats['two_or_more_questions_share']:.3f} of rows)")  # fmt: skip
    print(f"depth                          {stats['depth']}  (depth 2: {stats['depth2_share_of_conditional']:.3f} "
          "of conditional rows)")  # fmt: skip
    print("category mix                   " + ", ".join(f"{k} {v:.3f}" for k, v in stats["category_mix"].items()))
    print(f"top sentence skeleton          {stats['top_skeleton_share']:.3f} of rows: {stats['top_skeleton']!r}")

    probes = probe_records(args.probes, args.seed)
    figures = judge_probe(probes, seed=args.seed)
    print(f"\njudge probes: {len(probes)} records x (1 correct + 1 per flaw kind); truth = pixel identity")
    print(f"{'kind':18} {'n':>5} {'rejected':>9}")
    for kind, values in figures.items():
        if kind in ("overall", "correct"):
            continue
        print(f"{kind:18} {values['n']:>5} {values['rejected']:>9.3f}")
    correct = figures.get("correct", {})
    print(f"{'correct':18} {correct.get('n', 0):>5} accepted {correct.get('accepted', 0):.3f}")
    overall = figures["overall"]
    print(f"acceptance precision {overall['precision']:.4f}  recall {overall['recall']:.4f}")


if __name__ == "__main__":
    main()
