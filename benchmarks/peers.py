"""uniedit vs bespokelabs-curator on one rate limit: the share of the limit each actually uses.

Real runs are bounded by the provider's requests-per-minute limit, so the figure that matters is the share of
the configured limit that reaches the provider. Both tools run against the same fake OpenAI server
(tests/fakes, every reply after `--latency` s, default 0.25), with a limit of R calls/s on `gpt-4o`:

- uniedit runs the whole `openai` pipeline (`uniedit synth --pipeline openai`, 2 Ray workers; rewrite and
  judge on gpt-4o, edits on gpt-image-1 with no limit) on the offline world's scenes at `--image-size` px
  (default: the world's default, 256; both images go to every judge call, so the size is part of the
  figure), with `limits.rate_limits.openai/gpt-4o.rpm = 60·R` (no tpm, no --max-cost: a budget is checked per call, by design);
- curator 0.1.31 makes plain chat calls on gpt-4o with `max_requests_per_minute = 60·R`. It is installed by
  this script into a throwaway venv under /tmp (never a project dependency) and patched only where it needs
  the internet: tiktoken's BPE download (`get_token_encoding` → 4 characters a token) and its telemetry
  (`TELEMETRY_ENABLED=false`; litellm reads its bundled cost map).

Both are measured at the server: gpt-4o calls per second over the middle 80 % of their arrival times (so
start-up and the tail are left out), ÷ R = the share of the limit. A limiter that holds the limit cannot
exceed 1.00 by more than the measurement's noise (about ±0.01 here), so "1s peak/R" shows how far each tool
goes over it in its worst second (a provider counting per second would 429 a peak above 1). "ratio" is uniedit's
share ÷ curator's; "capped" divides the shares capped at 1.00, since calls above the limit are ones the provider
may refuse, not extra throughput (where both tools sit at the limit, "ratio" is that noise). uniedit's
coordinator RPCs (every call a worker or the driver made to the coordinator actor, counted by the actor) are
printed per model call (gpt-4o and gpt-image-1), with the leases taken and the leased slots that lapsed
unused. uniedit's CPU is the whole process tree's (driver, Ray workers, coordinator, Ray's own processes), Ray
start-up included. "fake cpu s" is the fake servers' own process CPU during each tool's run (uniedit/curator):
on this machine it shares the cores with the tool measured, which a real provider does not (uniedit's edits
and image-bearing judge calls cost the fake far more than curator's plain chat calls).

    python benchmarks/peers.py                         # R = 50, 100, 200, 400 (~6 min)
    python benchmarks/peers.py --rates 50 100 200 --repeats 3   # medians and ranges (~12 min)
    python benchmarks/peers.py --rates 200 --seconds 8
    python benchmarks/peers.py --rates 200 --image-size 64           # the figure before issue 31
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import FAKE_KEY, fake_servers, run_synth  # noqa: E402
from uniedit_synth.sources.scenes import ScenesSource  # noqa: E402

CURATOR = "bespokelabs-curator==0.1.31"
#: the offline world's default image side (sources/scenes.py ScenesSource): the figure is at ordinary images
DEFAULT_IMAGE_SIZE = int(inspect.signature(ScenesSource).parameters["image_size"].default)
VENV = Path(os.environ.get("UNIEDIT_PEERS_VENV", "/tmp/uniedit-peers-curator-venv"))

CURATOR_RUNNER = '''
"""Runs inside the throwaway curator venv: N plain chat calls on gpt-4o through bespokelabs-curator."""
import json, sys, time

base_url, rpm, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

from bespokelabs.curator.request_processor.online import openai_online_request_processor as oorp


class Estimate:
    """tiktoken's cl100k_base is a download: count 4 characters a token instead."""

    def encode(self, text, **_):
        return [0] * max(1, len(text) // 4)


oorp.OpenAIOnlineRequestProcessor.get_token_encoding = lambda self: Estimate()

from bespokelabs import curator

llm = curator.LLM(model_name="gpt-4o", backend="openai",
                  backend_params={"base_url": base_url, "max_requests_per_minute": rpm,
                                  "max_tokens_per_minute": 10**10, "max_retries": 3})
t0 = time.monotonic()
result = llm([f"Describe picture number {i} in one sentence." for i in range(calls)])
print(json.dumps({"wall_s": time.monotonic() - t0, "rows": len(result.dataset)}))
'''


def curator_python() -> Path:
    """The throwaway venv's python, with curator installed (once; reused by later runs)."""
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('bespokelabs-curator'))"]
    if python.exists() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "0.1.31":
        return python
    print(f"installing {CURATOR} into {VENV} (once) ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", CURATOR], check=True)
    return python


def python_speed(n: int = 10_000_000) -> float:
    """Seconds for a pure-Python loop of `n` additions: how fast this host's cores are, so runs on different
    hosts can be compared (uniedit's share is CPU-bound above ~100–200 calls/s on 2 cores, curator's is not)."""
    started, total = time.perf_counter(), 0
    for i in range(n):
        total += i
    return time.perf_counter() - started


def middle_rate(starts: list[float], share: float = 0.8) -> float:
    """Calls per second over the middle `share` of the calls' arrival times."""
    starts = sorted(starts)
    cut = int(len(starts) * (1 - share) / 2)
    middle = starts[cut:len(starts) - cut]
    if len(middle) < 2 or middle[-1] <= middle[0]:
        return float("nan")
    return (len(middle) - 1) / (middle[-1] - middle[0])


def worst_window(starts: list[float], seconds: float = 1.0) -> int:
    """The most calls that arrived within any `seconds`-long window (the burst a provider's limiter sees)."""
    starts = sorted(starts)
    most, left = 0, 0
    for right, at in enumerate(starts):
        while at - starts[left] >= seconds:
            left += 1
        most = max(most, right - left + 1)
    return most


def gpt4o_starts(served: dict[str, Any]) -> list[float]:
    return [r["started"] for r in served["requests"] if r["model"] == "gpt-4o" and r["status"] == 200]


def run_uniedit(work: Path, rate: float, seconds: float, latency: float, workers: int,
                image_size: int = DEFAULT_IMAGE_SIZE) -> dict[str, Any]:
    calls = int(rate * seconds)
    records = max(100, calls // 2)  # rewrite + judge on gpt-4o per record
    # enough calls in flight per stage and worker for the limit, with room for calls waiting for a slot
    concurrency = max(32, int(rate * latency * 1.5 / workers) + 8)
    out = work / f"uniedit-{rate:g}"
    with fake_servers(work, latency) as fakes:
        url = fakes.openai_url
        result = run_synth([
            "--pipeline", "openai", "--out", str(out), "--limit", str(records), "--workers", str(workers),
            "--concurrency", str(concurrency),
            "--set", f"backends.gpt4o.base_url={url}", "--set", f"backends.gpt-image.base_url={url}",
            "--set", f"source.options.image_size={image_size}", "--set", "limits.max_cost_usd=null",
            "--set", f"limits.rate_limits.openai/gpt-4o.rpm={rate * 60:g}",
            "--set", "limits.rate_limits.openai/gpt-4o.tpm=null",
            "--set", "limits.rate_limits.openai/gpt-image-1.rpm=null",
        ], sample=True)
        served = fakes.stop()
    stats = json.loads((out / "stats.json").read_text())
    model_calls = sum(1 for r in served["requests"] if r["status"])
    rpcs = sum(stats.get("coordinator_rpcs", {}).values())
    starts = gpt4o_starts(served)
    return {"rate": middle_rate(starts), "burst": worst_window(starts), "gpt4o_calls": len(starts),
            "model_calls": model_calls, "rpcs": rpcs,
            "rpc_detail": stats.get("coordinator_rpcs", {}), "wall_s": result.wall_s, "cpu_s": result.cpu_s,
            "fake_cpu_s": served["cpu_s"], "leases": stats["rate_limits"]["openai/gpt-4o"].get("leases"),
            "granted": stats["rate_limits"]["openai/gpt-4o"].get("granted"),
            "records": records, "concurrency": concurrency}


def run_curator(work: Path, python: Path, rate: float, seconds: float, latency: float) -> dict[str, Any]:
    calls = int(rate * seconds)
    runner = work / "curator_runner.py"
    runner.write_text(CURATOR_RUNNER)
    home = work / f"curator-home-{rate:g}"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TELEMETRY_ENABLED": "false",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "CURATOR_CACHE_DIR": str(home / "cache"), "OPENAI_API_KEY": FAKE_KEY}
    with fake_servers(work, latency) as fakes:
        started = time.monotonic()
        proc = subprocess.run([str(python), str(runner), fakes.openai_url, str(int(rate * 60)), str(calls)],
                              capture_output=True, text=True, env=env, cwd=home, timeout=1800)
        wall = time.monotonic() - started
        served = fakes.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"curator failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    starts = gpt4o_starts(served)
    return {"rate": middle_rate(starts), "burst": worst_window(starts), "gpt4o_calls": len(starts), "wall_s": wall,
            "fake_cpu_s": served["cpu_s"]}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (the lower middle one of an even count)."""
    return sorted(runs, key=lambda run: run["rate"])[(len(runs) - 1) // 2]


def spread(runs: list[dict[str, Any]], rate: float) -> str:
    shares = [run["rate"] / rate for run in runs]
    return f"{min(shares):.2f}-{max(shares):.2f}" if len(shares) > 1 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[50, 100, 200, 400],
                        help="limits on gpt-4o, calls/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="gpt-4o traffic per run at the limit (s)")
    parser.add_argument("--latency", type=float, default=0.25, help="the fake's reply latency (s)")
    parser.add_argument("--workers", type=int, default=2, help="uniedit's Ray workers")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE,
                        help="side of uniedit's scene images in px (default: the offline world's default)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per tool and limit, alternating (the median share is printed, with the range)")
    parser.add_argument("--skip-curator", action="store_true", help="measure uniedit only")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--workdir", type=Path, default=None, help="where runs go (default: a temp dir)")
    args = parser.parse_args()
    python = None if args.skip_curator else curator_python()
    speed = python_speed()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="uniedit-peers-", dir=args.workdir) as tmp:
        for rate in args.rates:
            ours, theirs = [], []
            for repeat in range(args.repeats):
                work = Path(tmp) / f"repeat-{repeat}"
                work.mkdir(exist_ok=True)
                print(f"R={rate:g}/s: uniedit ...", file=sys.stderr, flush=True)
                ours.append(run_uniedit(work, rate, args.seconds, args.latency, args.workers, args.image_size))
                if python is not None:
                    print(f"R={rate:g}/s: curator ...", file=sys.stderr, flush=True)
                    theirs.append(run_curator(work, python, rate, args.seconds, args.latency))
            rows.append((rate, ours, theirs))
    load_after = os.getloadavg()

    runs = f"median of {args.repeats} runs each" if args.repeats > 1 else "one run each"
    print(f"share of a gpt-4o limit reaching the fake OpenAI server (latency {args.latency:g} s; middle 80 % of "
          f"calls; {runs}; uniedit: openai pipeline, {args.workers} Ray workers, {args.image_size}-px images; "
          f"{os.cpu_count()} cores, load "
          f"average {load_before[0]:.1f} before, {load_after[0]:.1f} after; a Python loop of 10M additions "
          f"{speed:.2f} s)")
    print(f"{'limit/s':>7} {'uniedit/s':>9} {'share':>6} {'curator/s':>9} {'share':>6} {'ratio':>6} {'capped':>6} "
          f"{'1s peak/R':>9} {'RPCs/call':>9} {'1 RPC per':>9} {'calls':>6} {'RPCs':>5} {'leases':>6} "
          f"{'lapsed':>6} {'uniedit cpu s':>13} {'fake cpu s':>11}")
    nan = float("nan")
    for rate, all_ours, all_theirs in rows:
        ours = median_run(all_ours)
        theirs = median_run(all_theirs) if all_theirs else None
        share = ours["rate"] / rate
        their_share = theirs["rate"] / rate if theirs else nan
        peaks = f"{max(r['burst'] for r in all_ours) / rate:.2f}/" + (
            f"{max(r['burst'] for r in all_theirs) / rate:.2f}" if all_theirs else "-")
        per_call = ours["rpcs"] / ours["model_calls"] if ours["model_calls"] else nan
        fake_cpu = f"{ours['fake_cpu_s']:.1f}/" + (f"{theirs['fake_cpu_s']:.1f}" if theirs else "-")
        print(f"{rate:>7g} {ours['rate']:>9.1f} {share:>6.2f} "
              f"{(theirs['rate'] if theirs else nan):>9.1f} {their_share:>6.2f} "
              f"{share / their_share:>6.2f} {min(share, 1) / min(their_share, 1):>6.2f} {peaks:>9} "
              f"{per_call:>9.3f} {1 / per_call:>9.1f} "
              f"{ours['model_calls']:>6} {ours['rpcs']:>5} {ours['leases']:>6} "
              f"{ours['granted'] - ours['gpt4o_calls']:>6} {ours['cpu_s']:>13.1f} {fake_cpu:>11}")
    if args.repeats > 1:
        for rate, all_ours, all_theirs in rows:
            print(f"  R={rate:g}: share range uniedit {spread(all_ours, rate)}"
                  + (f", curator {spread(all_theirs, rate)}" if all_theirs else ""))
    print("  1s peak/R: the most gpt-4o calls that arrived within any 1 s, ÷ R (uniedit/curator; max over runs)")
    print("  fake cpu s: CPU seconds of the fake servers' process during each tool's run (uniedit/curator): "
          "the same 2 cores, a cost a real provider does not put on the client")
    for rate, all_ours, _ in rows:
        ours = median_run(all_ours)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(ours["rpc_detail"].items(), key=lambda kv: -kv[1]))
        print(f"  R={rate:g}: coordinator RPCs by method: {detail}")
    if args.json:
        args.json.write_text(json.dumps([{"limit": r, "uniedit": o, "curator": t} for r, o, t in rows], indent=2))


if __name__ == "__main__":
    main()
