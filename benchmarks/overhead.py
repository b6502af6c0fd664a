"""Framework overhead per record: the engine's own CPU time with backends that take no time, and where it goes.

Two zero-latency setups, side by side in one run:
  builtin   the offline pipeline (builtin text + editor, latency_s 0): no network at all;
  fakes     real `openai` SDK backends against the fake OpenAI server (latency 0) in a separate process.

Each runs with `--engine inline` in this process under a CPU-time sampler (SIGPROF every 2 ms of CPU, all
threads): a tick is charged to the first bucket (in a fixed priority order) that a frame of its stack matches,
so the buckets do not overlap. The builtin
models' own work (scene rendering, editing, pixel judging) and the scene world's record generation stand in
for the remote model and the dataset; they are shown but are not framework time. A third run (builtin,
`--engine ray`, same records) measures the whole process tree's CPU (psutil): the difference to the inline
run's CPU is what Ray costs (actor transfer of records and results, the coordinator actor, Ray's processes).

    python benchmarks/overhead.py                      # 600 records each
    python benchmarks/overhead.py --records 2000 --image-size 256
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import FAKE_KEY, CpuSampler, fake_servers, run_synth  # noqa: E402

PKG = str(Path(__file__).resolve().parent.parent / "uniedit_synth") + os.sep

#: (path fragment under uniedit_synth/, bucket) in priority order: a sample goes to the first bucket any
#: frame of its stack matches (so scene rendering called by the source counts as source, not as a model)
BUCKETS: list[tuple[str, str]] = [
    ("sources/validate.py", "validate input (decode + check image)"),
    ("sources/", "source: read/generate records"),
    ("backends/builtin.py", "model: builtin models (render, edit, judge)"),
    ("engine/cache.py", "response cache read/write"),
    ("store.py", "parquet + manifest write"),
    ("records.py", "samples -> Arrow table"),
    ("images.py", "image encode/decode (images.py)"),
    ("backends/base.py", "request hashing (cache key)"),
    ("backends/openai_backend.py", "openai SDK + HTTP client"),
    ("backends/gemini_backend.py", "gemini SDK + HTTP client"),
    ("backends/replies.py", "openai SDK + HTTP client"),
    ("engine/calls.py", "stage logic (calls, stages, worker)"),
    ("uniedit_synth/core/ledger.py", "stage logic (calls, stages, worker)"),
    ("stages/", "stage logic (calls, stages, worker)"),
    ("engine/worker.py", "stage logic (calls, stages, worker)"),
    ("prompts.py", "stage logic (calls, stages, worker)"),
    ("engine/", "driver + coordinator"),
]
NOT_FRAMEWORK = {"model: builtin models (render, edit, judge)", "source: read/generate records"}
CLIENT_LIBRARIES = {"openai SDK + HTTP client", "gemini SDK + HTTP client"}
IMAGE_BUCKETS = {"image encode/decode (images.py)", "validate input (decode + check image)"}
IDLE = "other (asyncio, interpreter, threads)"


def classify(frame) -> str:
    """The bucket (BUCKETS) of the outermost repo module on the stack that names one."""
    repo: list[str] = []
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(PKG):
            repo.append(path[len(PKG):])
        frame = frame.f_back
    for fragment, bucket in BUCKETS:
        if any(rel.startswith(fragment) for rel in repo):
            return bucket
    return "other repo code" if repo else IDLE


def run_inline(config_overrides: dict, out: Path, records: int) -> tuple[float, float, Counter[str]]:
    """One inline run in this process under the sampler: (wall s, CPU s of this process, sample counts)."""
    import yaml

    from uniedit_synth.core.bundled import pipelines_dir
    from uniedit_synth.core.config import parse_pipeline
    from uniedit_synth.engine.driver import run_synth as engine_run

    raw = yaml.safe_load((pipelines_dir() / "default.yaml").read_text())
    raw["backends"] = config_overrides.pop("backends", raw["backends"])  # replaced, not merged
    config = parse_pipeline(raw, overrides={**config_overrides, "limit": records})
    cpu0, t0 = time.process_time(), time.monotonic()
    with CpuSampler(classify, idle=IDLE) as sampler:
        summary = engine_run(config, str(out), progress=False)
    assert summary.read == records, summary
    return time.monotonic() - t0, time.process_time() - cpu0, sampler.counts


def builtin_overrides(image_size: int, engine: str) -> dict:
    return {
        "source": {"options": {"image_size": image_size}},
        "engine": {"kind": engine, "workers": 2, "shard_size": 50},
        "backends": {"text": {"type": "builtin", "model": "builtin-text", "options": {"leak_rate": 0.05}},
                     "editor": {"type": "builtin", "model": "builtin-editor", "options": {"error_rate": 0.15}}},
    }


def fakes_overrides(url: str, image_size: int) -> dict:
    text = {"type": "openai", "model": "fake-text", "base_url": url, "options": {}}
    editor = {"type": "openai", "model": "fake-image", "base_url": url, "options": {}}
    return {
        "source": {"options": {"image_size": image_size}},
        "engine": {"kind": "inline", "workers": 1, "shard_size": 50},
        "backends": {"text": text, "editor": editor},
        "stages": {"classify": {"drop_categories": []}, "rewrite": {"leak_check": False},
                   "edit": {"max_attempts": 1},
                   "judge": {"thresholds": {"instruction_following": 1, "visual_quality": 1, "coherence": 1}}},
    }


def table(name: str, records: int, wall: float, cpu: float, counts: Counter[str]) -> list[str]:
    busy = sum(counts.values()) or 1
    lines = [f"{name}: {records} records, wall {wall:.1f} s, CPU {cpu:.1f} s = {1000 * cpu / records:.1f} ms/record"]
    framework = sum(n for b, n in counts.items() if b not in NOT_FRAMEWORK | CLIENT_LIBRARIES)
    client = sum(n for b, n in counts.items() if b in CLIENT_LIBRARIES)
    images = sum(n for b, n in counts.items() if b in IMAGE_BUCKETS)
    scale = 1000 * cpu / records / busy  # ms per record per sample (samples shared out in proportion to CPU)
    for bucket, n in counts.most_common():
        tag = "" if bucket not in NOT_FRAMEWORK else "   (not framework)"
        lines.append(f"    {bucket:<44} {n * scale:7.2f} ms/record {100 * n / busy:5.1f} %{tag}")
    lines.append(f"  engine framework (all but models, source{', SDK' if client else ''}): "
                 f"{framework * scale:.2f} ms/record; excluding image encode/decode: "
                 f"{(framework - images) * scale:.2f} ms/record"
                 + (f"; provider SDK + HTTP: {client * scale:.2f} ms/record" if client else ""))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=600, help="records per run")
    parser.add_argument("--image-size", type=int, default=128, help="side of the scene images (px)")
    parser.add_argument("--skip-ray", action="store_true", help="skip the Ray comparison run")
    parser.add_argument("--workdir", type=Path, default=None, help="where runs go (default: a temp dir)")
    args = parser.parse_args()
    os.environ["OPENAI_API_KEY"] = FAKE_KEY
    import logging

    logging.basicConfig(level=logging.ERROR)
    out_lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="uniedit-overhead-", dir=args.workdir) as tmp:
        work = Path(tmp)
        print("builtin, inline ...", file=sys.stderr, flush=True)
        wall, cpu, counts = run_inline(builtin_overrides(args.image_size, "inline"), work / "builtin", args.records)
        out_lines += table("builtin backends, --engine inline", args.records, wall, cpu, counts)

        print("fakes (latency 0), inline ...", file=sys.stderr, flush=True)
        with fake_servers(work, 0.0) as fakes:
            wall, cpu, counts = run_inline(fakes_overrides(fakes.openai_url, args.image_size), work / "fakes",
                                           args.records)
            served = fakes.stop()
        out_lines += table("openai SDK -> fake server (latency 0), --engine inline", args.records, wall, cpu, counts)
        out_lines.append(f"  the fake server's own CPU (separate process): "
                         f"{1000 * served['cpu_s'] / args.records:.1f} ms/record")

        if not args.skip_ray:
            # the same builtin run through the CLI, unsampled, per engine; each minus an empty run (--limit 0)
            # of that engine, so start-up (Ray's processes) is left out and what remains is per record
            cli = ["--set", f"source.options.image_size={args.image_size}",
                   "--set", "backends.text.options.latency_s=0", "--set", "backends.editor.options.latency_s=0"]
            per_record = {}
            for engine in ("inline", "ray"):
                print(f"builtin, --engine {engine} (CLI) ...", file=sys.stderr, flush=True)
                full = run_synth(["--out", str(work / f"cli-{engine}"), "--limit", str(args.records),
                                  "--engine", engine, *cli])
                empty = run_synth(["--out", str(work / f"cli-{engine}-empty"), "--limit", "0", "--engine", engine,
                                   *cli])
                per_record[engine] = 1000 * (full.cpu_s - empty.cpu_s) / args.records
                out_lines.append(f"builtin via the CLI, --engine {engine}: process-tree CPU {full.cpu_s:.1f} s - "
                                 f"{empty.cpu_s:.1f} s for an empty run = {per_record[engine]:.1f} ms/record "
                                 f"(wall {full.wall_s:.1f} s)")
            out_lines.append(f"  Ray (2 worker actors, coordinator actor, transfer of records and results): "
                             f"{per_record['ray'] - per_record['inline']:+.1f} ms/record over inline")
    asyncio.set_event_loop(None)
    print("\n".join(out_lines))


if __name__ == "__main__":
    main()
