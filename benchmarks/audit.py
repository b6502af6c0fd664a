"""`uniedit audit` at scale and the synth-time screen's cost, measured side by side.

1. Audit throughput and memory: synthetic runs of `--small` and `--large` accepted rows (unique noise images,
   `--image-px` square, with an edited copy; templated instructions), each audited by the CLI in a
   subprocess whose peak RSS is sampled (psutil). Cold = fingerprints computed (and cached); warm = a second
   audit reading the cached fingerprints (no image decoded). A small benchmark (`--bench-items` re-encoded
   copies of some run images) is passed with --against, and the audit must report exactly those rows.
2. Synth-time screen: `uniedit synth --engine inline` over `--records` offline-world records with zero-latency
   builtin models, without and with `source.dedup: image` + `source.decontaminate` (a 100-image folder),
   CPU time per record of each and the difference.

    python benchmarks/audit.py                         # 10k and 100k rows, 1000 synth records
    python benchmarks/audit.py --small 2000 --large 20000 --records 400
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import REPO, TreeSampler, repo_env  # noqa: E402
from uniedit_synth.core.records import SAMPLE_SCHEMA  # noqa: E402
from uniedit_synth.run.store import RunDir, write_shard_table  # noqa: E402

SHARD_ROWS = 1000
COLOURS = ["red", "green", "blue", "yellow", "purple", "cyan", "brown", "gray"]
SHAPES = ["cube", "sphere", "cylinder", "cone"]


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def photo_like(rng: np.random.Generator, px: int) -> np.ndarray:
    """A smooth random colour field with three flat rectangles: unique per seed, compressible, and (unlike
    pixel noise) still recognisable after a JPEG re-encode, like a photo."""
    field = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((px, px), Image.Resampling.BILINEAR)
    image = np.asarray(field).copy()
    for _ in range(3):
        x, y = rng.integers(0, px * 3 // 4, 2)
        w, h = rng.integers(px // 8, px // 3, 2)
        image[y : y + h, x : x + w] = rng.integers(0, 256, 3)
    return image


def make_run(root: Path, rows: int, px: int, seed: int = 0) -> None:
    """A run directory with `rows` accepted rows written as the engine writes them (no model involved)."""
    rng = np.random.default_rng(seed)
    words = random.Random(seed)
    run = RunDir(root)
    run.create_dirs()
    for shard in range(-(-rows // SHARD_ROWS)):
        batch = []
        for n in range(shard * SHARD_ROWS, min(rows, (shard + 1) * SHARD_ROWS)):
            source = photo_like(rng, px)
            edited = source.copy()
            edited[px // 4 : px // 2, px // 4 : px // 2] = (255, 0, 0)
            colour, shape = words.choice(COLOURS), words.choice(SHAPES)
            batch.append({
                "id": f"synthetic/{n:07d}", "source": "synthetic", "shard": shard, "task_category": "color",
                "original_question": f"What is the colour of the {words.choice(['small', 'large'])} {shape} number {n}?",
                "original_answer": colour, "process_answer": colour,
                "edit_instruction": f"Look at {shape} {n} and note its colour. If it is warm, paint the "
                                    f"{words.choice(SHAPES)} in that colour; otherwise remove it. Keep the rest.",
                "source_image": {"bytes": png(source), "path": f"{n}.png"},
                "edited_image": {"bytes": png(edited), "path": f"{n}.edited.png"},
                "scores": {"instruction_following": 5.0, "visual_quality": 4.0, "coherence": 5.0},
                "score": 4.7, "accepted": True,
            })
        files = {"data": write_shard_table(root, "data", shard, pa.Table.from_pylist(batch, schema=SAMPLE_SCHEMA))}
        run.append_manifest({"shard": shard, "records": len(batch), "accepted": len(batch), "files": files})
    run.write_run_json({"pipeline_hash": "benchmark", "config": {}})


def make_bench(run: Path, folder: Path, items: int) -> list[str]:
    """Re-encoded (JPEG q85, 90 %) copies of `items` source images spread over the run; their ids."""
    import pyarrow.parquet as pq

    from tests.audit_fixtures import reencode

    folder.mkdir(parents=True, exist_ok=True)
    files = sorted((run / "data").glob("shard-*.parquet"))
    ids = []
    for n in range(items):
        table = pq.read_table(files[(n * 7) % len(files)], columns=["id", "source_image"])
        row = table.slice((n * 131) % table.num_rows, 1).to_pylist()[0]
        (folder / f"{n}.jpg").write_bytes(reencode(row["source_image"]["bytes"]))
        ids.append(row["id"])
    return sorted(ids)


def audit(run: Path, bench: Path) -> tuple[dict, float, float, float]:
    """One `uniedit audit --json` subprocess: (result, wall s, peak RSS MB of its process tree, its CPU s)."""
    command = [sys.executable, "-m", "uniedit_synth.cli", "audit", str(run), "--json", "-q", "--against", str(bench)]
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO, env=repo_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    with TreeSampler(proc.pid, interval=0.1) as sampler:
        stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(stderr[-2000:])
    return json.loads(stdout), time.monotonic() - started, sampler.peak_rss / 2**20, sampler.cpu_s


def synth_cpu(out: Path, records: int, extra: list[str]) -> float:
    """CPU seconds (user + sys) of one inline `uniedit synth` subprocess."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [sys.executable, "-m", "uniedit_synth.cli", "synth", "--out", str(out), "--limit", str(records),
               "--engine", "inline", "--no-progress", "-q", "--set", "backends.text.options.latency_s=0",
               "--set", "backends.editor.options.latency_s=0", "--set", "source.options.image_size=128", *extra]
    subprocess.run(command, cwd=REPO, env=repo_env(), check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def screen_cost(records: int, bench: Path) -> tuple[float, float, float]:
    """In this process, CPU ms per offline-world record (256 px) of: validation alone, validation with the
    fingerprint taken from its decoded image (what the worker does), and the coordinator's decision."""
    from uniedit_synth.core.config import InputPolicy
    from uniedit_synth.method.fingerprint import fingerprint_image
    from uniedit_synth.method.screen import InputScreen, ScreenEntry
    from uniedit_synth.sources.benchmarks import load_benchmark
    from uniedit_synth.sources.scenes import ScenesSource
    from uniedit_synth.sources.validate import validate_record

    source = ScenesSource(count=records, seed=5)
    items = [source.record(n) for n in range(records)]
    policy = InputPolicy()
    best_plain = best_fp = float("inf")
    fingerprints: list[str] = []

    def keep(image: Image.Image) -> None:
        fingerprints.append(fingerprint_image(image).to_hex())

    for _ in range(3):  # best of three: the machine is shared
        t0 = time.process_time()
        for record in items:
            validate_record(record, policy)
        best_plain = min(best_plain, time.process_time() - t0)
        fingerprints.clear()
        t0 = time.process_time()
        for record in items:
            validate_record(record, policy, None, keep)
        best_fp = min(best_fp, time.process_time() - t0)
    screen = InputScreen("image", 4, [load_benchmark(str(bench))])
    entries = [ScreenEntry(r.id, fp, r.question) for r, fp in zip(items, fingerprints, strict=True)]
    t0 = time.process_time()
    verdicts = screen.decide(entries)
    decide = time.process_time() - t0
    assert not any(verdicts), "distinct scenes must all pass"
    return 1000 * best_plain / records, 1000 * best_fp / records, 1000 * decide / records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10_000, help="rows of the small run")
    parser.add_argument("--large", type=int, default=100_000, help="rows of the large run")
    parser.add_argument("--image-px", type=int, default=128, help="side of the synthetic images")
    parser.add_argument("--bench-items", type=int, default=20, help="benchmark copies planted among the run images")
    parser.add_argument("--records", type=int, default=1000, help="records of each synth run (screen cost)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    lines = []
    with tempfile.TemporaryDirectory(prefix="uniedit-audit-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        measured = {}
        for rows in (args.small, args.large):
            run = work / f"run-{rows}"
            t0 = time.monotonic()
            make_run(run, rows, args.image_px)
            planted = make_bench(run, work / f"bench-{rows}", args.bench_items)
            print(f"made a {rows}-row run in {time.monotonic() - t0:.0f} s; auditing ...", file=sys.stderr, flush=True)
            cold, cold_s, cold_rss, cold_cpu = audit(run, work / f"bench-{rows}")
            warm, warm_s, warm_rss, warm_cpu = audit(run, work / f"bench-{rows}")
            exact = cold["contaminated"]["ids"] == planted and warm["contaminated"]["ids"] == planted
            flagged = sum(cold[k]["count"] for k in ("no_op_edits", "answer_leaks", "duplicate_sources", "duplicate_pairs"))
            measured[rows] = (cold_rss, warm_rss)
            lines.append(f"{rows:>7} rows: cold {rows / cold_s:6.0f} rows/s wall, {rows / cold_cpu:6.0f} rows/CPU-s "
                         f"({cold_s:6.1f} s, peak RSS {cold_rss:4.0f} MB) | warm (cached fingerprints) {rows / warm_s:6.0f} "
                         f"rows/s wall, {rows / warm_cpu:6.0f} rows/CPU-s ({warm_s:5.1f} s, peak RSS {warm_rss:4.0f} MB) | "
                         f"contaminated = the {len(planted)} planted: {exact}; other flags: {flagged}")
        ratio_cold = measured[args.large][0] / measured[args.small][0]
        ratio_warm = measured[args.large][1] / measured[args.small][1]
        lines.append(f"peak RSS {args.large} / {args.small} rows: cold {ratio_cold:.2f}, warm {ratio_warm:.2f} (target <= 1.3)")

        print("synth-time screen ...", file=sys.stderr, flush=True)
        bench = work / "screen-bench"
        bench.mkdir()
        rng = np.random.default_rng(1)
        for n in range(100):
            (bench / f"{n}.png").write_bytes(png(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
        validate, with_fp, decide = screen_cost(args.records, bench)
        lines.append(f"synth-time screen, per offline-world record (256 px), CPU: validate {validate:.2f} ms, validate + "
                     f"fingerprint {with_fp:.2f} ms (+{with_fp - validate:.2f}), dedup + decontamination decision "
                     f"{decide:.3f} ms (100 benchmark images, index of up to {args.records} records): "
                     f"+{with_fp - validate + decide:.2f} ms/record in all (target < 1 ms)")
        plain, screened = [], []
        for n in range(2):  # alternated, best of two each: the machine is shared
            plain.append(synth_cpu(work / f"synth-plain-{n}", args.records, []))
            screened.append(synth_cpu(work / f"synth-screened-{n}", args.records,
                                      ["--set", "source.dedup=image", "--set", f"source.decontaminate=[{bench}]"]))
        lines.append(f"end to end (uniedit synth --engine inline, {args.records} records, zero-latency builtin models, "
                     f"CPU of the process incl. start-up, best of 2): {1000 * min(plain) / args.records:.2f} ms/record "
                     f"without, {1000 * min(screened) / args.records:.2f} with the screen: "
                     f"{(min(screened) - min(plain)) * 1000 / args.records:+.2f} ms/record")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
