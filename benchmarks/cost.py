"""Cost per accepted sample, online vs `--batch`, on the paper pipeline against the fakes (and the wall time).

Runs `uniedit synth --pipeline uniedit` twice on the same offline-world records, side by side: once online, once
with `--batch` (GPT-4o calls through the fake OpenAI Files + Batches API, Nano-Pro edits through the fake
Gemini batchGenerateContent), both through the real SDK clients. Both runs price the fakes' reported usage with
the pipeline's price table; the batch run at each model's `batch_factor` (0.5). The provider delay is scripted:
every online call takes `--latency` seconds, every batch job at least `--turnaround` seconds.

    python benchmarks/cost.py                       # 200 records
    python benchmarks/cost.py --records 50 --turnaround 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pyarrow.parquet as pq  # noqa: E402

from tests.fakes import FakeGemini, FakeOpenAI  # noqa: E402

KEY = "sk-fake-cost-benchmark"
GPT4O, NANO = "gpt-4o-2024-11-20", "gemini-3-pro-image-preview"
STAGES = ("classify", "rewrite", "edit", "judge")


def synth_args(out: Path, records: int, openai_url: str, gemini_url: str, engine: str, shard_size: int,
               batch: bool, poll_s: float) -> list[str]:
    args = [sys.executable, "-m", "uniedit_synth.cli", "synth", "--pipeline", "uniedit", "--source", "scenes",
            "--out", str(out), "--limit", str(records), "--engine", engine, "--shard-size", str(shard_size),
            "--no-progress", "--set", "stages.classify.trust_source_category=false"]
    for backend, url in (("gpt4o", openai_url), ("nano-pro", gemini_url)):
        args += ["--set", f"backends.{backend}.base_url={url}", "--set", f"backends.{backend}.api_key_env=UE_BENCH_KEY"]
    for bucket in (f"openai/{GPT4O}", f"gemini/{NANO}"):
        args += ["--set", f"limits.rate_limits.{bucket}.rpm=null", "--set", f"limits.rate_limits.{bucket}.tpm=null"]
    args += ["--set", "limits.max_cost_usd=null"]
    if batch:
        args.append("--batch")
        for stage in STAGES:
            args += ["--set", f"stages.{stage}.batch.poll_s={poll_s}", "--set", f"stages.{stage}.batch.group_s=0.5"]
    return args


def run(mode: str, workdir: Path, args: argparse.Namespace) -> dict:
    with FakeOpenAI(api_key=KEY, latency=args.latency) as openai_fake, \
            FakeGemini(api_key=KEY, latency=args.latency) as gemini_fake:
        for fake in (openai_fake, gemini_fake):
            fake.batch_delay_s = args.turnaround
        out = workdir / mode
        env = {**os.environ, "UE_BENCH_KEY": KEY, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_AUTH_MODE": "disabled"}
        started = time.monotonic()
        proc = subprocess.run(
            synth_args(out, args.records, openai_fake.base_url, gemini_fake.base_url, args.engine,
                       args.shard_size, mode == "batch", args.poll_s),
            cwd=REPO, env=env, capture_output=True, text=True,
        )
        wall = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(f"{mode} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        stats = json.loads((out / "stats.json").read_text())
        rows = {}
        for kind in ("data", "rejects"):
            for shard in sorted((out / kind).glob("shard-*.parquet")):
                table = pq.read_table(shard, columns=["id", "accepted", "edit_instruction", "score", "edited_image"])
                for row in table.to_pylist():
                    image = (row["edited_image"] or {}).get("bytes") or b""
                    rows[row["id"]] = (row["accepted"], row["edit_instruction"], row["score"],
                                       hashlib.sha256(image).hexdigest())
        requests = openai_fake.requests + gemini_fake.requests
        online = Counter(r.task for r in requests if not r.batch and r.task != "batch-api")
        items = Counter(r.task for r in requests if r.batch)
        jobs = len(openai_fake.jobs) + len(gemini_fake.jobs)
    return {"mode": mode, "accepted": stats["accepted"], "read": stats["read"], "cost": stats["cost_usd"],
            "wall": wall, "rows": rows, "online_calls": sum(online.values()), "batch_items": sum(items.values()), "jobs": jobs,
            "by_task": dict(sorted((online + items).items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--engine", default="inline", choices=("inline", "ray"))
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per online call at the fakes")
    parser.add_argument("--turnaround", type=float, default=2.0, help="seconds a batch job takes at least")
    parser.add_argument("--poll-s", type=float, default=0.5, help="batch.poll_s of every stage")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="uniedit-cost-"))
    try:
        results = [run(mode, workdir, args) for mode in ("online", "batch")]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"paper pipeline (uniedit), {args.records} offline-world records, shards of {args.shard_size}, "
          f"engine {args.engine}; fakes: {args.latency:g} s per online call, batch jobs take >= "
          f"{args.turnaround:g} s, polled every {args.poll_s:g} s")
    print(f"{'mode':<7}{'accepted':>9}{'cost USD':>12}{'USD/accepted':>14}{'wall s':>9}"
          f"{'online calls':>14}{'batch items':>13}{'jobs':>6}")
    for r in results:
        per = r["cost"] / r["accepted"] if r["accepted"] else float("nan")
        print(f"{r['mode']:<7}{r['accepted']:>9}{r['cost']:>12.6f}{per:>14.6f}{r['wall']:>9.1f}"
              f"{r['online_calls']:>14}{r['batch_items']:>13}{r['jobs']:>6}")
    for r in results:
        print(f"  {r['mode']} requests billed by task: {r['by_task']}")
    online, batch = results
    ratio = (batch["cost"] / batch["accepted"]) / (online["cost"] / online["accepted"])
    print(f"batch ÷ online, cost per accepted sample: {ratio:.4f} (target <= 0.55); "
          f"same rows (id, accepted, instruction, score, edited image): {batch['rows'] == online['rows']}")
    print(f"|batch cost - 0.5 x online cost| = {abs(batch['cost'] - 0.5 * online['cost']):.1e} USD "
          f"(the same requests billed: {batch['by_task'] == online['by_task']})")
    print(f"batch ÷ online, wall time: {batch['wall'] / online['wall']:.2f} (provider-bound: {batch['jobs']} jobs "
          f"of >= {args.turnaround:g} s; a shard waits for one job per stage, shards in flight share jobs)")


if __name__ == "__main__":
    main()
