"""Resume cost: how long it takes to finish a run that is 90 % done, compared with doing that last 10 % alone.

1. A full run of N records (offline builtin pipeline, `--engine ray`), shard size S.
2. The last 10 % of its shards are undone as if the run had been killed before them: their manifest lines,
   their data/rejects/attempts files, their call-index files and every response-cache entry their calls
   wrote (found through cache/index/shard-NNNNN.jsonl) are deleted, so their work is real work again.
3. resume:  the same command again, timed (wall clock of the CLI process, Ray start-up included): it reads the
   manifest, regenerates the source to check the 90 % finished shards' ids (digest), skips them and runs
   the rest.
4. alone:   a fresh output dir with `--limit` = the same number of records (the first 10 % of the source: same
   config, same kind of records, same Ray start-up), timed the same way.
5. no-op:   the same command on the finished dir (nothing to do): start-up plus checking the finished shards.
6. start-up: `--limit 0` on a fresh dir: process start, imports, preflight, Ray start and shutdown, no
   records. Both resume and alone pay it once; it is no part of the work either does.

    ratio = (resume - start-up) / (alone - start-up)   (target <= 1.5)

The plain resume / alone is printed too, but on a few hundred records the fixed start-up dominates both
and hides the real overhead (checking the finished shards is real resume work and stays in the ratio).

    python benchmarks/resume.py                       # 2,000 records, shards of 50
    python benchmarks/resume.py --records 5000 --engine inline
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import run_synth  # noqa: E402
from uniedit_synth.run import packs  # noqa: E402


def undo_shards(out: Path, shards: set[int]) -> int:
    """Delete these shards' manifest lines, files, call index and cache entries; returns cache entries removed."""
    manifest = out / "manifest.jsonl"
    kept = [line for line in manifest.read_text().splitlines() if json.loads(line)["shard"] not in shards]
    manifest.write_text("".join(line + "\n" for line in kept))
    removed = 0
    for shard in shards:
        name = f"shard-{shard:05d}"
        for kind in ("data", "rejects", "attempts"):
            (out / kind / f"{name}.parquet").unlink(missing_ok=True)
        index = out / "cache" / "index" / f"{name}.jsonl"
        if index.exists():  # a run left unpacked (object storage)
            for line in index.read_text().splitlines():
                key = json.loads(line)["key"]
                entry = out / "cache" / key[:2] / f"{key}.entry"
                if entry.exists():
                    entry.unlink()
                    removed += 1
            index.unlink()
        pack = out / "cache" / "packs" / f"{name}.pack"  # the shard's replies and call index (run/packs.py)
        found = packs.read_index(pack)
        if found is not None:
            removed += len(found.entries)
            pack.unlink()
    return removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000, help="N: records of the full run")
    parser.add_argument("--shard-size", type=int, default=50, help="S: records per shard")
    parser.add_argument("--done", type=float, default=0.9, help="share of shards left finished")
    parser.add_argument("--image-size", type=int, default=128, help="side of the scene images (px)")
    parser.add_argument("--engine", choices=("ray", "inline"), default="ray")
    parser.add_argument("--workdir", type=Path, default=None, help="where runs go (default: a temp dir)")
    args = parser.parse_args()
    common = ["--shard-size", str(args.shard_size), "--engine", args.engine,
              "--set", f"source.options.image_size={args.image_size}",
              "--set", "backends.text.options.latency_s=0", "--set", "backends.editor.options.latency_s=0"]
    shards = -(-args.records // args.shard_size)
    first_undone = int(round(shards * args.done))
    undone = set(range(first_undone, shards))
    rest = args.records - first_undone * args.shard_size

    with tempfile.TemporaryDirectory(prefix="uniedit-resume-", dir=args.workdir) as tmp:
        out, alone_out = Path(tmp) / "run", Path(tmp) / "alone"
        print(f"full run: {args.records} records ...", file=sys.stderr, flush=True)
        full = run_synth(["--out", str(out), "--limit", str(args.records), *common], sample=False)
        removed = undo_shards(out, undone)
        print(f"resume: {len(undone)} of {shards} shards undone ({removed} cache entries) ...", file=sys.stderr,
              flush=True)
        resume = run_synth(["--out", str(out), "--limit", str(args.records), *common], sample=False)
        print(f"alone: {rest} records ...", file=sys.stderr, flush=True)
        alone = run_synth(["--out", str(alone_out), "--limit", str(rest), *common], sample=False)
        print("no-op rerun ...", file=sys.stderr, flush=True)
        noop = run_synth(["--out", str(out), "--limit", str(args.records), *common], sample=False)
        print("start-up only (--limit 0) ...", file=sys.stderr, flush=True)
        startups = [run_synth(["--out", str(Path(tmp) / f"empty-{i}"), "--limit", "0", *common], sample=False)
                    for i in range(2)]
    startup = min(r.wall_s for r in startups)

    s = resume.summary
    assert s["shards_skipped"] == first_undone and s["shards_done"] == len(undone), s
    made = sum(s["calls"].values())
    print(f"resume benchmark: engine={args.engine}, {args.records} records in {shards} shards of {args.shard_size}; "
          f"the last {len(undone)} shards ({rest} records, {removed} cached replies) undone")
    print(f"{'run':<34} {'wall s':>7} {'- start-up':>10} {'shards run':>10} {'skipped':>8} {'calls made':>10}")
    for name, r in (("full run (all records)", full), (f"resume ({args.done:.0%} done)", resume),
                    (f"alone ({rest} records, fresh dir)", alone), ("no-op rerun (all done)", noop),
                    ("start-up (--limit 0, best of 2)", min(startups, key=lambda r: r.wall_s))):
        print(f"{name:<34} {r.wall_s:>7.1f} {r.wall_s - startup:>10.1f} {r.summary.get('shards_done', 0):>10} "
              f"{r.summary.get('shards_skipped', 0):>8} {sum(r.summary.get('calls', {}).values()):>10}")
    work_resume, work_alone = resume.wall_s - startup, alone.wall_s - startup
    print(f"resume / alone with the fixed start-up ({startup:.1f} s) subtracted = {work_resume:.1f} / "
          f"{work_alone:.1f} s = {work_resume / work_alone:.2f} (target <= 1.5); plain wall ratio "
          f"{resume.wall_s / alone.wall_s:.2f}")
    print(f"calls made: resume {made}, alone {sum(alone.summary['calls'].values())} (the same work: the undone "
          f"shards' cache entries were deleted); checking {first_undone} finished shards costs "
          f"{noop.wall_s - startup:.1f} s (the no-op rerun less start-up)")


if __name__ == "__main__":
    main()
