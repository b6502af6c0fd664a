"""Throughput vs the concurrency bound: does the engine keep `concurrency` calls in flight per stage?

A pipeline of real `openai` text backends (classify, rewrite, judge) and an `openai` (or `gemini`) editor,
pointed at the fake servers of tests/fakes, which answer every call after a fixed latency L. With
concurrency C per stage per worker and W workers, a stage can have at most C·W calls in flight, so

    per-stage bound  B_s = C·W / (L · k_s)   records/s,  k_s = that stage's calls per record (measured)
    bound            B   = min over stages of B_s
    achieved         X   = records/s leaving the pipeline (judge replies / k_judge) in the steady window
    ratio            X / B   (1.0 = every stage kept C·W calls in flight all the time)
    util_s               = mean calls of stage s in flight during the window / (C·W)

The steady window runs from the first judge reply (the pipeline is full) to the last classify request (the
source is exhausted; after it the pipeline drains), all timed at the fake, so Ray start-up is excluded.

L is scaled with C by default (`L = C·W / --bound-rate`), so the bound is the same modest rate for every C
and the ratio measures the engine's concurrency, not the CPU: at a fixed L = 0.2 s the bound at C = 64 is
640 records/s = 2,560 HTTP calls/s, which two cores cannot serve through the SDK and a Python HTTP server
(the zero-latency rows print what they can: the CPU ceiling, as configured and with every call asking the
coordinator actor, as all calls did before the workers' local fast path). Pass `--latency 0.2` for a fixed L.

    python benchmarks/throughput.py                                    # C = 8, 64, 256; L scaled (~7 min)
    python benchmarks/throughput.py --concurrency 8 64                 # ~2 min
    python benchmarks/throughput.py --concurrency 64 --latency 0.2     # fixed L
    python benchmarks/throughput.py --editor gemini --workers 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import fake_servers, run_synth  # noqa: E402

STAGES = ("classify", "rewrite", "edit", "judge")


def pipeline_yaml(openai_url: str, gemini_url: str, editor: str, concurrency: int, workers: int,
                  shard_size: int, image_size: int) -> str:
    editor_backend = (
        f"  editor: {{type: gemini, model: fake-image, base_url: {gemini_url}, timeout_s: 600}}\n"
        if editor == "gemini"
        else f"  editor: {{type: openai, model: fake-image, base_url: {openai_url}, timeout_s: 600}}\n"
    )
    c = concurrency
    return (
        "name: throughput-bench\nseed: 0\n"
        f"source: {{spec: scenes, options: {{image_size: {image_size}}}}}\n"
        "backends:\n"
        f"  text: {{type: openai, model: fake-text, base_url: {openai_url}, timeout_s: 600}}\n"
        + editor_backend
        + "stages:\n"
        f"  classify: {{backend: text, trust_source_category: false, drop_categories: [], concurrency: {c}}}\n"
        f"  rewrite: {{backend: text, leak_check: false, concurrency: {c}}}\n"
        f"  edit: {{backend: editor, max_attempts: 1, concurrency: {c}}}\n"
        f"  judge: {{backend: text, concurrency: {c}, thresholds: {{instruction_following: 1, "
        "visual_quality: 1, coherence: 1}}\n"
        f"engine: {{kind: ray, workers: {workers}, shard_size: {shard_size}}}\n"
        "retry: {max_attempts: 3, initial_s: 0.2, max_s: 2, jitter_s: 0.1}\n"
    )


def analyse(requests: list[dict[str, Any]], records: int, concurrency: int, workers: int) -> dict[str, Any]:
    by_stage: dict[str, list[dict[str, Any]]] = {s: [] for s in STAGES}
    for r in requests:
        if r["task"] in by_stage and r["status"] == 200:
            by_stage[r["task"]].append(r)
    if not by_stage["judge"] or not by_stage["classify"]:
        raise RuntimeError(f"the fakes saw no judge/classify calls: {len(requests)} requests")
    latency = {s: sum(r["finished"] - r["started"] for r in rs) / len(rs) for s, rs in by_stage.items() if rs}
    k = {s: len(rs) / records for s, rs in by_stage.items()}
    first = min(r["started"] for r in requests)
    last = max(r["finished"] for r in requests)
    start = min(r["finished"] for r in by_stage["judge"])
    end = max(r["started"] for r in by_stage["classify"])
    window = end - start
    out: dict[str, Any] = {"k": k, "latency": latency, "window_s": window, "span_s": last - first}
    slots = concurrency * workers
    if window <= 0:
        out.update(achieved=records / (last - first), bound=None, ratio=None, util={})
        return out
    bound = min(slots / (latency[s] * k[s]) for s in STAGES if k[s])
    judged = sum(1 for r in by_stage["judge"] if start <= r["finished"] <= end)
    achieved = judged / window / k["judge"]
    util = {}
    for s, rs in by_stage.items():
        busy = sum(max(0.0, min(r["finished"], end) - max(r["started"], start)) for r in rs)
        util[s] = busy / window / slots
    out.update(achieved=achieved, bound=bound, ratio=achieved / bound, util=util,
               overall=records / (last - first))
    return out


def one_run(work: Path, concurrency: int, workers: int, latency: float, records: int, shard_size: int,
            editor: str, image_size: int, extra: list[str]) -> dict[str, Any]:
    out = work / f"run-c{concurrency}-l{latency:g}-{time.monotonic_ns()}"
    with fake_servers(work, latency) as fakes:
        pipe = work / f"pipeline-c{concurrency}.yaml"
        pipe.write_text(pipeline_yaml(fakes.openai_url, fakes.gemini_url, editor, concurrency, workers,
                                      shard_size, image_size))
        synth = run_synth(["--pipeline", str(pipe), "--out", str(out), "--limit", str(records), *extra])
        served = fakes.stop()
    stats = analyse(served["requests"], records, concurrency, workers)
    stats.update(records=records, wall_s=synth.wall_s, engine_cpu_s=synth.cpu_s, fake_cpu_s=served["cpu_s"],
                 summary=synth.summary, max_in_flight=served["max_in_flight"])
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 64, 256], help="C values (per stage)")
    parser.add_argument("--workers", type=int, default=2, help="W: Ray shard workers")
    parser.add_argument("--latency", type=float, default=None,
                        help="fixed L in seconds (default: scaled, L = C·W / --bound-rate)")
    parser.add_argument("--bound-rate", type=float, default=25.0,
                        help="records/s the bound is set to when L is scaled (keep it under the CPU ceiling)")
    parser.add_argument("--records", type=int, default=None,
                        help="records per run (default: --records-factor × 4 stages × C·W + 2 shards a worker)")
    parser.add_argument("--records-factor", type=float, default=2.0,
                        help="records in flight (4·C·W) times this makes the default --records")
    parser.add_argument("--min-records", type=int, default=600, help="lower limit of the default --records")
    parser.add_argument("--shard-size", type=int, default=50, help="records per shard")
    parser.add_argument("--editor", choices=("openai", "gemini"), default="openai", help="the editor's API")
    parser.add_argument("--image-size", type=int, default=128, help="side of the scene images (px)")
    parser.add_argument("--ceiling-records", type=int, default=600,
                        help="records of the zero-latency CPU-ceiling run (0 = skip it)")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        help="extra `uniedit synth --set key=value` (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--workdir", type=Path, default=None, help="where runs go (default: a temp dir)")
    args = parser.parse_args()
    extra = [x for s in args.settings for x in ("--set", s)]
    cores = os.cpu_count() or 1

    rows = []
    with tempfile.TemporaryDirectory(prefix="uniedit-throughput-", dir=args.workdir) as tmp:
        work = Path(tmp)
        for c in args.concurrency:
            slots = c * args.workers
            latency = args.latency if args.latency is not None else round(slots / args.bound_rate, 3)
            records = args.records or max(args.min_records,
                                          int(args.records_factor * 4 * slots) + 2 * args.shard_size * args.workers)
            records = int(math.ceil(records / args.shard_size) * args.shard_size)
            print(f"C={c} W={args.workers} L={latency}s records={records} ...", file=sys.stderr, flush=True)
            rows.append((c, latency, one_run(work, c, args.workers, latency, records, args.shard_size,
                                             args.editor, args.image_size, extra)))
        ceilings = []
        if args.ceiling_records:
            c = max(args.concurrency)
            # the same zero-latency run twice: as configured, and with a budget and rate limits so high they never
            # bind, which makes every call ask the coordinator actor (budget, slot, spend), as all calls once did
            never_binding = ["--set", "limits.max_cost_usd=1000000000", "--set",
                             "limits.rate_limits={openai/fake-text: {rpm: 1.0e12}, openai/fake-image: {rpm: 1.0e12},"
                             " gemini/fake-image: {rpm: 1.0e12}}"]
            for name, more in (("CPU ceiling", []), ("CPU ceiling, coordinator asked on every call", never_binding)):
                print(f"{name}: C={c} L=0 records={args.ceiling_records} ...", file=sys.stderr, flush=True)
                ceilings.append((name, one_run(work, c, args.workers, 0.0, args.ceiling_records, args.shard_size,
                                               args.editor, args.image_size, extra + more)))

    print(f"throughput vs the concurrency bound  (W={args.workers} workers, shard_size={args.shard_size}, "
          f"editor={args.editor}, {cores} cores; calls/record per stage measured at the fake)")
    print("bound B = min over stages of C·W/(L·k_s) records/s; X = records/s in the steady window; "
          "util = mean in flight / (C·W)")
    print(f"{'C':>5} {'L s':>6} {'records':>7} {'bound':>7} {'X rec/s':>8} {'ratio':>6} "
          f"{'util cls/rw/ed/jdg':>20} {'window s':>8} {'cpu %':>6} {'fake cpu %':>10}")
    for c, latency, r in rows:
        util = "/".join(f"{r['util'].get(s, 0):.2f}" for s in STAGES) if r["util"] else "-"
        span = r["span_s"] or 1
        cpu = 100 * r["engine_cpu_s"] / (r["wall_s"] * cores)
        fake_cpu = 100 * r["fake_cpu_s"] / (span * cores)
        bound = f"{r['bound']:.1f}" if r["bound"] else "-"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        print(f"{c:>5} {latency:>6g} {r['records']:>7} {bound:>7} {r['achieved']:>8.1f} {ratio:>6} "
              f"{util:>20} {r['window_s']:>8.1f} {cpu:>6.0f} {fake_cpu:>10.0f}")
    for name, ceiling in ceilings:
        calls = sum(ceiling["k"].values())
        rate = ceiling["records"] / ceiling["span_s"]
        print(f"{name} (L=0, C={max(args.concurrency)}): {rate:.1f} records/s = {rate * calls:.0f} calls/s "
              f"over {ceiling['records']} records; engine CPU {ceiling['engine_cpu_s']:.1f} s, "
              f"fake CPU {ceiling['fake_cpu_s']:.1f} s = "
              f"{1000 * (ceiling['engine_cpu_s'] + ceiling['fake_cpu_s']) / ceiling['records']:.1f} ms CPU/record")
    if args.json:
        args.json.write_text(json.dumps({"rows": [{"C": c, "L": latency, **r} for c, latency, r in rows],
                                         "ceilings": dict(ceilings)}, indent=2, default=str))


if __name__ == "__main__":
    main()
