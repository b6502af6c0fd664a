"""Evaluate tuned Janus-Pro editors on an export's validation split: a thin wrapper of `uniedit eval`.

`uniedit eval --model <Janus-Pro dir>` does the same with default sampling; this script adds the sampling
flags (device, classifier-free guidance, temperature, seed). The edits are judged by the export's run's own judge
stage (`--preset pipeline`, the default for an export; `--pipeline` to choose another) or by a benchmark's
protocol (`--preset kris-bench`, …), through the engine's response cache: a rerun edits and judges nothing.

Usage::

    python examples/eval_edits.py --model checkpoints/janus-pro-uniedit/model \\
        --baseline deepseek-community/Janus-Pro-1B --data exports/uniedit-hf --out evals/janus-pro-uniedit
    # the same without sampling flags:
    uniedit eval --model checkpoints/janus-pro-uniedit/model --baseline <untuned dir> \\
        --bench export=exports/uniedit-hf@validation --out evals/janus-pro-uniedit

Writes eval.json (per sample, per category, per figure, the paired difference with a bootstrap 95 % interval)
and index.html with the models side by side (docs/guides/eval.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import finetune_janus_pro as finetune  # noqa: E402

from uniedit_synth.evaluate import EvalOptions, format_report, run_eval  # noqa: E402
from uniedit_synth.evaluate.janus import JanusEditor  # noqa: E402
from uniedit_synth.run.cache import ResponseCache  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model dir saved by finetune_janus_pro.py, or a hub id")
    parser.add_argument("--baseline", default=None, help="a second model, evaluated side by side (e.g. untuned)")
    parser.add_argument("--data", required=True, type=Path, help="an `uniedit export --format hf` dir")
    parser.add_argument("--split", default="validation", help="the export's split (validation or train)")
    parser.add_argument("--pipeline", default=None, help="pipeline whose judge scores (default: the run's)")
    parser.add_argument("--preset", default=None, help="judge protocol (default: pipeline, the run's judge stage)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N samples (by id)")
    parser.add_argument("--cfg-weight", type=float, default=5.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cuda when available, else cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    cache = ResponseCache(args.out / "cache")
    sampling = {"device": args.device, "cfg_weight": args.cfg_weight, "temperature": args.temperature,
                "seed": args.seed}
    editors = [JanusEditor("model", args.model, cache, **sampling)]
    if args.baseline:
        editors.append(JanusEditor("baseline", args.baseline, cache, **sampling))
    options = EvalOptions(bench=f"export={args.data}@{args.split}", out=args.out, pipeline=args.pipeline,
                          preset=args.preset, limit=args.limit)
    report = run_eval(options, editors=editors)
    print(format_report(report))
    print(f"wrote {args.out / 'eval.json'} and {args.out / 'index.html'}")
    return report


if __name__ == "__main__":
    finetune.run_cli(main, sys.argv[1:])
