"""Chaos run: SIGKILL `uniedit synth` at seeded random moments, restart it each time, and check nothing was lost.

Prints a tally: kills, shards redone (dispatched by a killed invocation and finished by a later one), calls
repeated (backend calls that had returned to the engine — their reply was in the response cache when the
kill landed — and were made again: must be 0), calls lost in flight (the backend had answered but the kill
landed before the engine stored the reply: the one unavoidable window, reported, not hidden), whether any
partial parquet file was ever visible as a shard, and whether the final output equals an uninterrupted run
with the same seed (same ids, same rows; only `latency_s`, wall-clock time, may differ).

    python benchmarks/chaos.py --kills 10 --records 300
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
VOLATILE = {"latency_s"}


def synth_args(records: int, engine: str, extra: list[str] | None = None) -> list[str]:
    return [
        "synth", "--engine", engine, "--limit", str(records), "--shard-size", "20", "--concurrency", "4",
        "--log-format", "json", "--set", "backends.editor.options.latency_s=0.04",
        "--set", "backends.text.options.latency_s=0.004", *(extra or []),
    ]


def start(out: Path, args: list[str], call_log: Path, stdout: Path) -> subprocess.Popen:
    env = {**os.environ, "UNIEDIT_CALL_LOG": str(call_log), "RAY_USAGE_STATS_ENABLED": "0"}
    with open(stdout, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "uniedit_synth.cli", *args, "--out", str(out)],
            cwd=REPO, env=env, stdout=fh, stderr=subprocess.DEVNULL, start_new_session=True,
        )


def rows(out: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for kind in ("data", "rejects"):
        for path in sorted((out / kind).glob("shard-*.parquet")):  # a chain's turns are rows of their own ids
            for row in pq.read_table(path).to_pylist():
                if row["id"] in found:
                    raise AssertionError(f"duplicate id {row['id']}")
                found[row["id"]] = {k: v for k, v in row.items() if k not in VOLATILE}
    return found


def accounting(out: Path) -> dict[str, Any]:
    """Every record left exactly once: stats.json's read == accepted + its rejects by reason == the rows on disk,
    and every `merged` reject (source.group_by_image) names a sample of its own shard that is not merged itself."""
    stats = json.loads((out / "stats.json").read_text())
    found = rows(out)
    merged = {i: r for i, r in found.items() if r["reject_reason"] == "merged"}
    orphans = []
    for record_id, row in merged.items():
        named = (row.get("reject_detail") or "").removeprefix("merged into sample ").split(" ", 1)[0]
        primary = found.get(named)
        if primary is None or primary["reject_reason"] == "merged" or primary["shard"] != row["shard"]:
            orphans.append(record_id)
    exact = stats["read"] == stats["accepted"] + sum(stats["reject_reasons"].values()) == len(found)
    return {"read": stats["read"], "accepted": stats["accepted"], "rejected": stats["rejected"],
            "merged": len(merged), "rows": len(found), "merged_orphans": orphans, "exact": exact and not orphans}


def unreadable_shards(out: Path) -> list[str]:
    bad = []
    for kind in ("data", "rejects", "attempts"):
        for path in (out / kind).glob("shard-*.parquet"):
            try:
                pq.read_table(path)
            except Exception:  # noqa: BLE001 - any failure means a partial file was visible
                bad.append(str(path))
    return bad


def events(stdout: Path) -> list[dict[str, Any]]:
    out = []
    for line in stdout.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # the line the kill cut off
    return out


def call_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def calls(log: Path) -> Counter[str]:
    return Counter(call_lines(log))


def cached_keys(out: Path) -> set[str]:
    return {path.stem for path in (out / "cache").glob("??/*.entry")}


def wait_for_work(proc: subprocess.Popen, stdout: Path, timeout_s: float = 300.0) -> bool:
    """Wait until the invocation has dispatched its first shard (True) or has exited (False).

    Start-up (imports, config, lock, Ray) takes from under a second to many on a loaded machine, so a kill
    timed from the start alone can land in start-up every time and test nothing of the work's durability."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if stdout.exists() and b'"dispatch"' in stdout.read_bytes():
            return True
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    raise RuntimeError(f"no shard dispatched within {timeout_s:g} s of a start")


def run_chaos(work: Path, *, kills: int = 10, seed: int = 0, records: int = 600, engine: str = "inline",
              max_delay_s: float | None = None, startup_kill_p: float = 0.2,
              extra_args: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """With probability `startup_kill_p` an invocation is killed during start-up (0.05–1 s after it starts:
    config, lock, run.json); otherwise at a moment drawn uniformly from [0, max_delay_s] after it dispatched
    its first shard (default: 10 % of the uninterrupted run's time), so most kills land mid-work however long
    start-up takes on a loaded machine, and ten of them still leave work for the final run. `extra_args` go to
    every invocation (e.g. `--turns 3`, `--set source.group_by_image=true`)."""
    args = synth_args(records, engine, list(extra_args))
    reference, chaotic = work / "reference", work / "chaos"
    ref_log, chaos_log = work / "reference.calls", work / "chaos.calls"

    t0 = time.monotonic()
    proc = start(reference, args, ref_log, work / "reference.out")
    if proc.wait() != 0:
        raise RuntimeError("the reference run failed")
    reference_s = time.monotonic() - t0

    max_delay_s = max_delay_s or max(0.5, 0.1 * reference_s)
    rng = random.Random(seed)
    tally: dict[str, Any] = {"kills": 0, "kills_in_startup": 0, "shards_redone": 0, "unreadable_shards": [],
                             "invocations": 0}
    in_flight_at_kill: set[int] = set()
    # per kill: how many calls had been logged, and which replies the engine had stored in its cache
    kill_points: list[tuple[int, set[str]]] = []
    while tally["kills"] < kills:
        stdout = work / f"chaos-{tally['invocations']}.out"  # one file per invocation: json events
        proc = start(chaotic, args, chaos_log, stdout)
        tally["invocations"] += 1
        in_startup = rng.random() < startup_kill_p
        try:
            if in_startup:
                proc.wait(timeout=rng.uniform(0.05, 1.0))
            elif wait_for_work(proc, stdout):
                proc.wait(timeout=rng.uniform(0.0, max_delay_s))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            tally["kills"] += 1
            tally["kills_in_startup"] += in_startup
            kill_points.append((len(call_lines(chaos_log)), cached_keys(chaotic)))
        else:
            proc.wait()
            if proc.returncode != 0:
                raise RuntimeError(f"invocation {tally['invocations']} failed with {proc.returncode}")
            break  # it finished before the next kill
        finished = [e for e in events(stdout) if e.get("event") in ("dispatch", "shard")]
        dispatched = {e["shard"] for e in finished if e["event"] == "dispatch"}
        done = {e["shard"] for e in finished if e["event"] == "shard"}
        in_flight_at_kill |= dispatched - done
        tally["unreadable_shards"] += unreadable_shards(chaotic)

    final_out = work / "chaos-final.out"
    proc = start(chaotic, args, chaos_log, final_out)
    if proc.wait() != 0:
        raise RuntimeError("the final (resumed) run failed")
    tally["invocations"] += 1
    tally["shards_redone"] = len(in_flight_at_kill)

    ref_calls, chaos_calls = calls(ref_log), calls(chaos_log)
    extra = chaos_calls - ref_calls
    lines = call_lines(chaos_log)
    repeated = 0
    for line in extra:
        first = lines.index(line)
        # the first kill after this call was made: had the engine stored its reply by then?
        stored = next((keys for logged, keys in kill_points if logged > first), set())
        repeated += extra[line] if line.split("\t")[-1] in stored else 0
    tally["calls_reference"] = sum(ref_calls.values())
    tally["calls_chaos"] = sum(chaos_calls.values())
    tally["calls_repeated"] = repeated
    tally["calls_lost_in_flight"] = sum(extra.values()) - repeated
    tally["calls_missing"] = sum((ref_calls - chaos_calls).values())
    tally["same_output"] = rows(chaotic) == rows(reference)
    tally["accounting"] = accounting(chaotic)
    tally["reference_s"] = round(reference_s, 2)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--records", type=int, default=600)
    parser.add_argument("--engine", choices=("inline", "ray"), default="inline")
    parser.add_argument("--turns", type=int, default=1, help="multi-turn chains (uniedit synth --turns)")
    parser.add_argument("--max-delay", type=float, default=None,
                        help="latest kill moment after an invocation's first dispatched shard, seconds "
                             "(default: 10%% of the uninterrupted run)")
    args = parser.parse_args()
    max_delay = args.max_delay
    with tempfile.TemporaryDirectory(prefix="uniedit-chaos-") as tmp:
        tally = run_chaos(Path(tmp), kills=args.kills, seed=args.seed, records=args.records, engine=args.engine,
                          max_delay_s=max_delay, extra_args=("--turns", str(args.turns)) if args.turns > 1 else ())
    print(json.dumps(tally, indent=2))
    ok = tally["calls_repeated"] == 0 and tally["same_output"] and not tally["unreadable_shards"] \
        and tally["accounting"]["exact"]
    print("chaos: " + ("PASS" if ok else "FAIL")
          + f" — {tally['kills']} kills, {tally['shards_redone']} shards redone, "
          f"{tally['calls_repeated']} calls repeated, output identical: {tally['same_output']}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
