"""Training loader speed: samples/s of the torch datasets (uniedit_synth.train.loader) with 0 and 2 DataLoader
workers, side by side with a raw decode of the same rows (pyarrow read + PIL decode of both images), with the
default uint8 pixels and with pixels="float" (float32 in [-1, 1] made in the workers).

The rows come from an offline builtin run made first (accepted samples in data/; 256 px scenes). One epoch over
every row per measurement, after one warm-up epoch (page cache, imports, and the start of the workers, which
are persistent). The datasets do more than the raw decode: they resize both images to --size (512 px by
default), turn them into [3,H,W] tensors (uint8: 1.5 MB a sample at 512 px handed from the workers to the main
process; float: 6 MB) and compute the edit mask and region weight; the map-style one is shuffled by the
DataLoader.

    python benchmarks/loader.py                       # ~500 rows of 256 px scenes, items at 512 px
    python benchmarks/loader.py --records 1000 --size 256 --batch-size 8
    python benchmarks/loader.py --profile             # cProfile of the item transform (CPU), then exit
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import run_synth  # noqa: E402


def raw_decode(files: list[Path]) -> int:
    import pyarrow.parquet as pq
    from PIL import Image

    rows = 0
    for path in files:
        table = pq.read_table(path, columns=["id", "edit_instruction", "source_image", "edited_image"])
        for column in ("source_image", "edited_image"):
            for struct in table.column(column).to_pylist():
                with Image.open(io.BytesIO(struct["bytes"])) as image:
                    image.convert("RGB").load()
        rows += table.num_rows
    return rows


def epoch(loader) -> int:
    rows = 0
    for batch in loader:
        rows += len(batch["id"])
    return rows


def timed(fn, repeats: int) -> tuple[float, int]:
    fn()  # warm-up
    best = float("inf")
    rows = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = fn()
        best = min(best, time.perf_counter() - t0)
    return best, rows


def profile_items(run: Path, size: int) -> None:
    """Where an item's CPU goes (cProfile with a CPU clock, so a loaded machine does not skew it)."""
    import cProfile
    import pstats
    import random

    from uniedit_synth.train.loader import EditPairDataset

    dataset = EditPairDataset(run, image_size=size)
    order = list(range(len(dataset)))
    random.Random(0).shuffle(order)
    for index in order[:20]:
        dataset[index]  # warm-up: imports, first reads
    profiler = cProfile.Profile(time.process_time)
    started = time.process_time()
    profiler.enable()
    for index in order[:200]:
        dataset[index]
    profiler.disable()
    items = min(200, len(order))
    print(f"{1000 * (time.process_time() - started) / items:.2f} ms CPU per item at {size} px (profiled)")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=600, help="records of the builtin run (~85%% accepted)")
    parser.add_argument("--image-size", type=int, default=256, help="side of the scene images in the run (px)")
    parser.add_argument("--size", type=int, default=512, help="item image size (the datasets resize to it)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers values")
    parser.add_argument("--pixels", nargs="+", default=["uint8", "float"], choices=["uint8", "float"],
                        help="item pixel types to measure (uint8 is the default of the datasets)")
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs per measurement (best is kept)")
    parser.add_argument("--run", type=Path, default=None, help="use this run dir instead of making one")
    parser.add_argument("--workdir", type=Path, default=None, help="where the run goes (default: a temp dir)")
    parser.add_argument("--profile", action="store_true",
                        help="profile 200 shuffled items of the map-style dataset in this process and exit")
    args = parser.parse_args()

    import torch
    from torch.utils.data import DataLoader

    from uniedit_synth.train.loader import EditPairDataset, EditPairIterableDataset, shard_files

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="uniedit-loader-", dir=args.workdir) as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "run"
            print(f"making a {args.records}-record run ...", file=sys.stderr, flush=True)
            run_synth(["--out", str(run), "--limit", str(args.records), "--engine", "inline",
                       "--set", f"source.options.image_size={args.image_size}"], sample=False)
        files = shard_files(run)
        if args.profile:
            profile_items(run, args.size)
            return
        results = []
        seconds, rows = timed(lambda: raw_decode(files), args.repeats)
        results.append(("raw: pyarrow read + PIL decode of both images", 0, rows, seconds))
        for pixels in args.pixels:
            for workers in args.workers:
                for name, make in (
                    ("EditPairDataset (map-style, shuffle)",
                     lambda w, p: DataLoader(EditPairDataset(run, image_size=args.size, pixels=p),
                                             batch_size=args.batch_size, shuffle=True, num_workers=w,
                                             persistent_workers=w > 0, generator=torch.Generator().manual_seed(0))),
                    ("EditPairIterableDataset (streaming)",
                     lambda w, p: DataLoader(EditPairIterableDataset(run, image_size=args.size, pixels=p),
                                             batch_size=args.batch_size, num_workers=w, persistent_workers=w > 0)),
                ):
                    loader = make(workers, pixels)
                    seconds, rows = timed(lambda loader=loader: epoch(loader), args.repeats)
                    results.append((f"{name}, {pixels}", workers, rows, seconds))
                    del loader  # persistent workers end here, not while the next one is measured

    raw_rate = results[0][2] / results[0][3]
    print(f"loader benchmark: {results[0][2]} rows ({args.image_size} px in the run), items at {args.size} px, "
          f"batch {args.batch_size}, {os.cpu_count()} cores, torch threads 1; best of {args.repeats} epochs")
    print(f"{'what':<55} {'workers':>7} {'rows':>6} {'seconds':>8} {'samples/s':>10} {'vs raw':>7}")
    for name, workers, rows, seconds in results:
        rate = rows / seconds
        print(f"{name:<55} {workers:>7} {rows:>6} {seconds:>8.2f} {rate:>10.0f} {rate / raw_rate:>7.2f}")


if __name__ == "__main__":
    main()
