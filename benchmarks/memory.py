"""Run memory: peak RSS of a whole `uniedit synth` (driver + Ray workers + coordinator + Ray's own processes,
summed over the process tree, sampled every 0.25 s with psutil) at a small vs a 10× larger record count with
the same config. Streaming means the ratio stays near 1: nothing may grow with the number of records.

The pipeline is the offline default (builtin backends, latency 0), `--engine ray`, 2 workers. Each size runs in
its own subprocess and output dir. The per-role peaks show where memory sits if the ratio is off.

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

    roles = sorted({role for _, r in results for role in r.role_peaks_mb}, key=lambda k: -results[-1][1].role_peaks_mb.get(k, 0))
    roles = [r for r in roles if max(res.role_peaks_mb.get(r, 0) for _, res in results) >= 20][:6]
    print(f"engine={args.engine} image_size={args.image_size} (peak RSS of the process tree, MB; per role: peak of its sum)")
    print(f"{'records':>8} {'wall s':>7} {'rec/s':>6} {'peak RSS':>9} " + " ".join(f"{r[:18]:>18}" for r in roles))
    for size, r in results:
        rate = size / r.wall_s
        print(f"{size:>8} {r.wall_s:>7.1f} {rate:>6.0f} {r.peak_rss_mb:>9.0f} "
              + " ".join(f"{r.role_peaks_mb.get(role, 0):>18.0f}" for role in roles))
    (small_n, small), (big_n, big) = results[0], results[-1]
    print(f"peak RSS ratio {big_n}/{small_n} records: {big.peak_rss_mb / small.peak_rss_mb:.2f}x (target <= 1.3)")


if __name__ == "__main__":
    main()
