"""Judge cascade vs a single expensive judge, on the offline world with the fake OpenAI server.

Truth: the offline world's own judge (the edit checked pixel by pixel against the program's expected render),
from a first run with the builtin judge; every edit is identified by the sha256 of its edited image (the
builtin editor is deterministic, so the later runs edit the same records into the same images).
Then the same records are judged through the real `openai` client by the fake server, whose two models are
scripted to agree with the truth at set rates (seeded per model and edit, so every run sees the same judges):

* gpt-4o ("expensive"): right with probability --expensive-acc, and sure of it (instruction_following 5 / 1);
* gpt-4o-mini ("cheap"): sure on a share --cheap-sure of the edits, right there with probability
  --cheap-sure-acc; unsure on the rest (instruction_following 4 or 3, next to the threshold of 4, leaning to the
  truth with probability --cheap-unsure-acc).

Three runs side by side: the single expensive judge, the cascade [cheap, expensive] (band [-1, 0] = scores 3
and 4 of instruction following, audit share 5 %), and the cheap judge alone. Cost is what the judge calls cost
at list prices (everything else is builtin and free): per accepted sample; precision / recall of acceptance
against the truth, over the edits that reached the judge.

    python benchmarks/judge_cascade.py                     # 300 records, 40 % wrong edits (~2 min on 2 cores)
    python benchmarks/judge_cascade.py --records 100
"""

from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes import FakeOpenAI  # noqa: E402
from uniedit_synth.api import synth  # noqa: E402

KEY_ENV = "UE_BENCH_OPENAI_KEY"
CHEAP, EXPENSIVE = "gpt-4o-mini", "gpt-4o"
PRICES = {
    EXPENSIVE: {"input_per_mtok": 2.50, "output_per_mtok": 10.00},
    CHEAP: {"input_per_mtok": 0.15, "output_per_mtok": 0.60},
}


def all_rows(out: Path) -> list[dict[str, Any]]:
    return [r for kind in ("data", "rejects") for p in sorted(glob.glob(f"{out}/{kind}/*.parquet"))
            for r in pq.read_table(p).to_pylist()]  # fmt: skip


def edited_sha(row: dict[str, Any]) -> str | None:
    image = row.get("edited_image") or {}
    return hashlib.sha256(image["bytes"]).hexdigest() if image.get("bytes") else None


def second_image(body: dict[str, Any]) -> bytes | None:
    images = [
        part["image_url"]["url"].split(",", 1)[1]
        for message in body.get("messages", [])
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]
    return base64.b64decode(images[1]) if len(images) >= 2 else None


class ScriptedJudges:
    """The fake server's judge replies: each model agrees with the truth at its set rate (seeded per edit)."""

    def __init__(self, truth: dict[str, bool], args: argparse.Namespace):
        self.truth, self.args = truth, args
        self.misses = 0

    def _draw(self, *parts: str) -> float:
        return random.Random(hashlib.sha256("/".join(parts).encode()).hexdigest()).random()

    def __call__(self, request: Any) -> Any:
        if request.task != "judge":
            return None
        body = request.body if isinstance(request.body, dict) else {}
        image = second_image(body)
        sha = hashlib.sha256(image).hexdigest() if image else ""
        if sha not in self.truth:
            self.misses += 1
        good = self.truth.get(sha, False)
        a = self.args
        if body.get("model") == EXPENSIVE:
            right = self._draw("expensive", sha) < a.expensive_acc
            score = 5 if good == right else 1
        elif self._draw("cheap-sure", sha) < a.cheap_sure:
            right = self._draw("cheap", sha) < a.cheap_sure_acc
            score = 5 if good == right else 1
        else:
            lean = self._draw("cheap-unsure", sha) < a.cheap_unsure_acc
            score = 4 if good == lean else 3
        return {"content": {"observed_changes": "scripted", "branch_observed": "expected",
                            "changes_outside_target": False, "instruction_following": score,
                            "visual_quality": 5, "coherence": 5, "analysis": "scripted"}}  # fmt: skip


def run(
    out: Path, records: int, fake: FakeOpenAI, judge: dict[str, Any], editor: dict[str, Any]
) -> tuple[list[dict], dict, float]:
    point = {"type": "openai", "base_url": fake.base_url, "api_key_env": KEY_ENV, "timeout_s": 30}
    overrides = {
        "engine": {"kind": "inline", "shard_size": 50},
        "backends": {"big": {**point, "model": EXPENSIVE}, "small": {**point, "model": CHEAP}, "editor": editor},
        "stages": {"edit": {"max_attempts": 1}, "judge": {"concurrency": 16, **judge}},
        "prices": PRICES,
        "retry": {"initial_s": 0.05, "max_s": 0.2, "jitter_s": 0},
    }
    started = time.monotonic()
    synth("default", out=str(out), limit=records, overrides=overrides)
    elapsed = time.monotonic() - started
    return all_rows(out), json.loads((out / "stats.json").read_text()), elapsed


def figures(rows: list[dict], stats: dict, truth: dict[str, bool], fake: FakeOpenAI, before: int) -> dict:
    judged = [r for r in rows if r.get("scores", {}).get("instruction_following") is not None]
    accepted = [r for r in judged if r["accepted"]]
    good = [r for r in judged if truth.get(edited_sha(r) or "", False)]
    true_accepted = [r for r in accepted if truth.get(edited_sha(r) or "", False)]
    requests = [r for r in fake.requests[before:] if r.task == "judge" and r.status == 200]
    return {
        "judged": len(judged),
        "accepted": len(accepted),
        "cheap calls": sum(r.body.get("model") == CHEAP for r in requests),
        "expensive calls": sum(r.body.get("model") == EXPENSIVE for r in requests),
        "judge cost $": stats["cost_usd"],
        "cost / accepted $": stats["cost_usd"] / len(accepted) if accepted else float("nan"),
        "precision": len(true_accepted) / len(accepted) if accepted else float("nan"),
        "recall": len(true_accepted) / len(good) if good else float("nan"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--expensive-acc", type=float, default=0.98)
    parser.add_argument("--cheap-sure", type=float, default=0.8)
    parser.add_argument("--cheap-sure-acc", type=float, default=0.97)
    parser.add_argument("--cheap-unsure-acc", type=float, default=0.7)
    parser.add_argument("--audit-share", type=float, default=0.05)
    parser.add_argument("--error-rate", type=float, default=0.4, help="the builtin editor's share of wrong edits")
    args = parser.parse_args(argv)
    editor = {"options": {"error_rate": args.error_rate}}
    os.environ[KEY_ENV] = "sk-bench-local"
    with tempfile.TemporaryDirectory(prefix="uniedit-cascade-") as tmp:
        root = Path(tmp)
        synth("default", out=str(root / "truth"), limit=args.records,
              overrides={"engine": {"kind": "inline", "shard_size": 50}, "stages": {"edit": {"max_attempts": 1}},
                         "backends": {"editor": editor}})
        truth = {edited_sha(r): bool(r["accepted"]) for r in all_rows(root / "truth") if edited_sha(r)}
        judges = ScriptedJudges(truth, args)
        results: dict[str, dict] = {}
        with FakeOpenAI() as fake:
            fake.script(judges)
            plans = {
                "single expensive": {"backend": "big"},
                "cascade": {"backend": "small", "cascade": ["small", "big"], "audit_share": args.audit_share},
                "cheap only": {"backend": "small"},
            }
            stats_by_name = {}
            for name, judge in plans.items():
                before = len(fake.requests)
                rows, stats, elapsed = run(root / name.replace(" ", "-"), args.records, fake, judge, editor)
                results[name] = figures(rows, stats, truth, fake, before)
                stats_by_name[name] = stats
    print(f"records {args.records}, editor error rate {args.error_rate:.0%}; truth: {sum(truth.values())} of {len(truth)} edits right "
          f"(offline world judge); edits unknown to the truth table: {judges.misses}")
    print(f"judges: expensive right {args.expensive_acc:.0%}; cheap sure on {args.cheap_sure:.0%} "
          f"(right {args.cheap_sure_acc:.0%}), unsure leaning right {args.cheap_unsure_acc:.0%}; "
          f"band [-1, 0], audit {args.audit_share:.0%}")
    names = list(results)
    print(f"{'':<20}" + "".join(f"{n:>18}" for n in names))
    for key in results[names[0]]:
        cells = []
        for n in names:
            v = results[n][key]
            cells.append(f"{v:>18.4f}" if isinstance(v, float) else f"{v:>18}")
        print(f"{key:<20}" + "".join(cells))
    single, cascade = results["single expensive"], results["cascade"]
    saved = 1 - cascade["expensive calls"] / single["expensive calls"]
    loss = 100 * (single["precision"] - cascade["precision"])
    print(f"cascade vs single expensive: {saved:.1%} fewer expensive calls, precision "
          f"{'-' if loss >= 0 else '+'}{abs(loss):.2f} points, cost per accepted x"
          f"{cascade['cost / accepted $'] / single['cost / accepted $']:.2f}")
    cascade_stats = stats_by_name["cascade"].get("judge_cascade", {})
    print(f"cascade stats.json: audit agreement {cascade_stats.get('audit_agreement')} on "
          f"{cascade_stats.get('audited')} audited, band agreement {cascade_stats.get('band_agreement')}, "
          f"confusion {json.dumps(cascade_stats.get('confusion', {}), sort_keys=True)}")


if __name__ == "__main__":
    main()
