"""Run memory: peak RSS of `uniedit synth` at a small vs a 10× larger record count with the same config, for the
driver and for each shard worker on its own (and the coordinator, and Ray's own processes summed), sampled
every 0.25 s with psutil. Streaming means every ratio stays near 1: nothing may grow with the number of records.

The whole tree's sum is printed too, but it is no verdict: about 1.2 GB of it is Ray's fixed processes, which
would hide a worker leaking 300 MB. The verdict is the driver's ratio and the largest worker's ratio.

The pipeline is the offline default (builtin backends, latency 0), `--engine ray`, 2 workers. Each size runs in
its own subprocess and output dir.

    python benchmarks/memory.py                          # 2,000 vs 20,000 records
    python benchmarks/memory.py --sizes 1000 10000 --image-size 256
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import run_synth  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 20_000], help="record counts to compare")
    parser.add_argument("--image-size", type=int, default=128, help="side of the scene images (px)")
    parser.add_argument("--engine", choices=("ray", "inline"), default="ray")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        help="extra `uniedit synth --set key=value` (repeatable)")
    parser.add_argument("--workdir", type=Path, default=None, help="where runs go (default: a temp dir)")
    args = parser.parse_args()
    extra = [x for s in args.settings for x in ("--set", s)]
    results = []
    with tempfile.TemporaryDirectory(prefix="uniedit-memory-", dir=args.workdir) as tmp:
        for size in args.sizes:
            print(f"{size} records ...", file=sys.stderr, flush=True)
            result = run_synth([
                "--out", str(Path(tmp) / f"run-{size}"), "--limit", str(size), "--engine", args.engine,
                "--set", f"source.options.image_size={args.image_size}",
                "--set", "backends.text.options.latency_s=0", "--set", "backends.editor.options.latency_s=0",
                *extra,
            ])
            results.append((size, result))

    print(f"engine={args.engine} image_size={args.image_size}: peak RSS (MB) of each process; workers are the Ray "
          "shard-worker actors, in order of their peaks")
    header = f"{'records':>8} {'wall s':>7} {'rec/s':>6} {'driver':>7} {'workers':>16} {'coordinator':>11} " \
             f"{'ray system (sum)':>16} {'whole tree':>10}"
    print(header)
    peaks = []
    for size, r in results:
        by_role: dict[str, list[float]] = {}
        for (role, _pid), mb in r.process_peaks_mb.items():
            by_role.setdefault(role, []).append(mb)
        driver = max(by_role.get("driver", [0.0]))
        workers = sorted(by_role.get("_ShardWorkerActor", []), reverse=True)
        coordinator = max(by_role.get("Coordinator", [0.0]))
        system = r.role_peaks_mb.get("ray system", 0.0)
        peaks.append((size, driver, workers))
        print(f"{size:>8} {r.wall_s:>7.1f} {size / r.wall_s:>6.0f} {driver:>7.0f} "
              f"{' / '.join(f'{w:.0f}' for w in workers) or '-':>16} {coordinator:>11.0f} {system:>16.0f} "
              f"{r.peak_rss_mb:>10.0f}")
    (small_n, small_driver, small_workers), (big_n, big_driver, big_workers) = peaks[0], peaks[-1]
    print(f"ratios {big_n} / {small_n} records (target <= 1.3 each): driver {big_driver / small_driver:.2f}, "
          f"largest worker {max(big_workers or [0]) / max(small_workers or [1]):.2f}; whole tree "
          f"{results[-1][1].peak_rss_mb / results[0][1].peak_rss_mb:.2f} (not a verdict: fixed Ray processes)")


if __name__ == "__main__":
    main()
