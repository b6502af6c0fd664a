"""Source memory benchmark: peak RSS while reading a 10k vs a 100k-record local source end to end
(open_source + validate_record for every record). Flat memory means the ratio stays near 1.

Each size runs in its own subprocess so that its peak RSS (VmHWM) belongs to that size alone.

    python benchmarks/source_memory.py                       # JSONL + shared image files, 10k vs 100k
    python benchmarks/source_memory.py --form parquet        # parquet with embedded images
    python benchmarks/source_memory.py --shuffle --sizes 10000 100000 300000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def build_images(folder: Path, count: int) -> list[bytes]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    blobs = []
    for i in range(count):
        image = Image.effect_noise((48, 48), 30 + i % 50).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        (folder / f"{i:04d}.jpg").write_bytes(buffer.getvalue())
        blobs.append(buffer.getvalue())
    return blobs


def build_jsonl(path: Path, size: int, images: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(size):
            row = {
                "id": f"r{i:07d}",
                "image": f"images/{i % images:04d}.jpg",
                "question": f"How many objects are in picture {i}?",
                "answer": str(i % 7),
                "subject": f"s{i % 5}",
            }
            fh.write(json.dumps(row) + "\n")


def build_parquet(path: Path, size: int, blobs: list[bytes]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from uniedit_synth.core.records import IMAGE_STRUCT, with_hf_metadata

    schema = with_hf_metadata(
        pa.schema(
            [
                ("id", pa.string()),
                ("image", IMAGE_STRUCT),
                ("question", pa.string()),
                ("answer", pa.string()),
                ("subject", pa.string()),
            ]
        ),
        image_columns=("image",),
    )
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, size, 1000):
            rows = [
                {
                    "id": f"r{i:07d}",
                    "image": {"bytes": blobs[i % len(blobs)], "path": f"{i}.jpg"},
                    "question": f"How many objects are in picture {i}?",
                    "answer": str(i % 7),
                    "subject": f"s{i % 5}",
                }
                for i in range(start, min(size, start + 1000))
            ]
            writer.write_table(pa.Table.from_pylist(rows, schema=schema), row_group_size=1000)


def peak_rss_mb() -> float:
    """This process's peak resident set size. /proc's VmHWM is reset by exec; ru_maxrss is not (a child
    would inherit the parent's peak, e.g. from building the data), so it is only the fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(source: str, shuffle: bool, caps: bool) -> None:
    """Read the whole source through open_source + validate_record; print one JSON line of measurements."""
    from uniedit_synth.core.config import InputPolicy, SourceSpec
    from uniedit_synth.sources import open_source
    from uniedit_synth.sources.validate import InvalidInput, validate_record

    policy = InputPolicy()
    spec = SourceSpec(spec=source, shuffle=shuffle)
    if caps:
        spec = spec.model_copy(update={"subject_key": "subject", "subject_caps": {"s0": 1000}})
    rss_after_import = peak_rss_mb()
    started = time.perf_counter()
    opened = open_source(spec, seed=0, limit=None)
    root = opened.image_root
    count = invalid = 0
    for record in opened:
        try:
            validate_record(record, policy, root)
        except InvalidInput:
            invalid += 1
        count += 1
    print(
        json.dumps(
            {
                "records": count,
                "invalid": invalid,
                "seconds": round(time.perf_counter() - started, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "rss_after_import_mb": round(rss_after_import, 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--form", choices=("jsonl", "parquet"), default="jsonl", help="source form to build")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 100_000], help="record counts to compare"
    )
    parser.add_argument("--images", type=int, default=300, help="distinct image files reused by the records")
    parser.add_argument("--shuffle", action="store_true", help="read in shuffled order (positional shuffle)")
    parser.add_argument("--caps", action="store_true", help="apply a per-subject cap (subject s0: 1000)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where to build the data (default: a temp dir)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.shuffle, args.caps)
        return

    with tempfile.TemporaryDirectory(prefix="uniedit-srcmem-", dir=args.workdir) as tmp:
        work = Path(tmp)
        blobs = build_images(work / "images", args.images)
        results = []
        for size in args.sizes:
            path = work / f"source-{size}.{args.form}"
            (build_jsonl if args.form == "jsonl" else build_parquet)(
                path,
                size,
                args.images if args.form == "jsonl" else blobs,  # type: ignore[arg-type]
            )
            command = [sys.executable, __file__, "--child", str(path)]
            command += ["--shuffle"] * args.shuffle + ["--caps"] * args.caps
            env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
            results.append((size, json.loads(out.strip().splitlines()[-1])))

    print(f"form={args.form} shuffle={args.shuffle} caps={args.caps} images={args.images}")
    print(
        f"{'records':>10} {'read':>8} {'seconds':>8} {'rec/s':>8} {'peak RSS MB':>12} {'after import MB':>16}"
    )
    for size, r in results:
        rate = r["records"] / r["seconds"] if r["seconds"] else float("inf")
        print(
            f"{size:>10} {r['records']:>8} {r['seconds']:>8} {rate:>8.0f} {r['peak_rss_mb']:>12} "
            f"{r['rss_after_import_mb']:>16}"
        )
    (small_size, small), (big_size, big) = results[0], results[-1]
    print(
        f"peak RSS ratio {big_size}/{small_size} records: {big['peak_rss_mb'] / small['peak_rss_mb']:.2f}x "
        f"(growth over the import baseline: {big['peak_rss_mb'] - big['rss_after_import_mb']:.1f} MB vs "
        f"{small['peak_rss_mb'] - small['rss_after_import_mb']:.1f} MB)"
    )


if __name__ == "__main__":
    main()
