"""CPU milliseconds per record at real image sizes, by stage and by kind of work, before and after.

Each measurement is one `--engine inline` run (1 worker, shards of 50) in a child process of its own, so
a second checkout (`--baseline-path`, e.g. a worktree of the previous commit) can be measured in the same
call with the same fakes: the child's PYTHONPATH is that checkout. The figure is the child's process CPU
time (user + system, every thread: the event loop and the image threads), divided by the records read. The
fake servers (tests/fakes, started on 127.0.0.1 in their own process as benchmarks/peers.py does) are not
in it; their CPU is printed apart. CPU time, unlike wall time, hardly moves with other load on a shared
machine. Inline is representative of a Ray worker's per-record work (the same stages and image path; Ray
adds the transfer of records and results, about 1 ms a record: benchmarks/overhead.py).

Pipelines: `offline` (default.yaml: builtin backends, latency 0), `openai` (openai.yaml: gpt-4o text and
gpt-image-1 edits against the fake OpenAI server) and `uniedit` (uniedit.yaml: gpt-4o text, Gemini edits with
keep_geometry, against the fake OpenAI and Gemini servers); limits and budgets off, latency 0.

Where the CPU goes: a sampler ticks every 2 ms of the child's CPU (SIGPROF, all threads) and charges the
tick to a stage (the stage module on the stack: classify, rewrite, edit, judge; validate = the source image
rendered/decoded and checked; write = the shard's Arrow table and parquet; cache = the response cache) and to
a kind of work (the innermost frame that names one: decode, resize, encode, base64/JSON, hashing, cache I/O,
Arrow, fingerprint, pixels (numpy gates and consistency), render (the offline world's scenes and edits),
HTTP/SDK, pydantic). `--profile` adds a cProfile run of each pipeline at the largest size (every thread,
the event loop) and prints its top functions by own time.

    python benchmarks/cpu_per_record.py                                # 256/512/1024 px, all three pipelines
    git worktree add /tmp/base main                                    # the checkout to compare with
    python benchmarks/cpu_per_record.py --baseline-path /tmp/base --profile
    python benchmarks/cpu_per_record.py --sizes 1024 --pipelines openai --records 40
    python benchmarks/cpu_per_record.py --baseline-path /tmp/base --repeat 3   # a loaded machine: median of 3

CPU time still moves with heavy load on a shared machine (cache and core contention: 10-20 % at a load
average of 20 on 2 cores); `--repeat` runs before and after in turns and shows the median run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import FAKE_KEY, REPO, CpuSampler, fake_servers  # noqa: E402

PIPELINES = ("offline", "openai", "uniedit")
#: one measurement's limit (a 1024-px offline run of 60 records takes ~1 min of CPU)
CHILD_TIMEOUT_S = 900

#: (path fragment, function name or "", stage): a tick goes to the first rule any frame of its stack matches
STAGE_RULES: list[tuple[str, str, str]] = [
    ("uniedit_synth/stages/judge.py", "", "judge"),
    ("uniedit_synth/stages/edit.py", "", "edit"),
    ("uniedit_synth/stages/rewrite.py", "", "rewrite"),
    ("uniedit_synth/stages/classify.py", "", "classify"),
    ("uniedit_synth/sources/validate.py", "", "validate"),
    ("uniedit_synth/sources/", "", "validate"),
    ("uniedit_synth/engine/worker.py", "_validate", "validate"),
    ("uniedit_synth/engine/worker.py", "_hydrate", "validate"),
    ("uniedit_synth/run/cache.py", "", "cache"),
    ("uniedit_synth/run/store.py", "", "write"),
    ("uniedit_synth/core/records.py", "", "write"),
    ("uniedit_synth/engine/worker.py", "", "engine"),
    ("uniedit_synth/engine/", "", "engine"),
]

#: (path fragment, function names (empty: any), kind) checked from the innermost frame outwards
KIND_RULES: list[tuple[str, frozenset[str], str]] = [
    ("hashlib", frozenset(), "hashing"),
    ("uniedit_synth/backends/base.py", frozenset({"request_key", "<listcomp>"}), "hashing"),
    ("uniedit_synth/method/fingerprint.py", frozenset(), "fingerprint"),
    ("imagehash", frozenset(), "fingerprint"),
    ("PIL/Image.py", frozenset({"resize", "reduce", "thumbnail", "_new", "resize_to"}), "resize"),
    ("PIL/Image.py", frozenset({"save"}), "encode"),
    ("PIL/PngImagePlugin.py", frozenset({"_save", "putchunk", "write", "_write_multiple_frames"}), "encode"),
    ("PIL/ImageFile.py", frozenset({"_save", "_encode_tile"}), "encode"),
    ("zlib", frozenset(), "encode"),
    ("PIL/ImageFile.py", frozenset({"load", "load_prepare", "load_end"}), "decode"),
    ("PIL/Image.py", frozenset({"open", "load", "convert", "copy", "tobytes", "frombytes", "__array_interface__"}),
     "decode"),
    ("PIL/PngImagePlugin.py", frozenset(), "decode"),
    ("PIL/ImageDraw.py", frozenset(), "render"),
    ("PIL/ImageFont.py", frozenset(), "render"),
    ("uniedit_synth/offline/render.py", frozenset({"encode_png"}), "encode"),  # OpenCV's encoder (C, no frame)
    ("uniedit_synth/offline/render.py", frozenset(), "render"),
    ("base64.py", frozenset(), "base64/JSON"),
    ("json/", frozenset(), "base64/JSON"),
    ("uniedit_synth/run/cache.py", frozenset(), "cache I/O"),
    ("sqlite3", frozenset(), "cache I/O"),
    ("pyarrow", frozenset(), "Arrow"),
    ("uniedit_synth/run/store.py", frozenset(), "Arrow"),
    ("uniedit_synth/core/records.py", frozenset({"to_arrow", "samples_table", "to_row", "rows_table"}), "Arrow"),
    ("uniedit_synth/method/pixel_gates.py", frozenset(), "pixels"),
    ("uniedit_synth/method/consistency.py", frozenset(), "pixels"),
    ("uniedit_synth/offline/regions.py", frozenset(), "pixels"),
    ("numpy", frozenset(), "pixels"),
    ("scipy", frozenset(), "pixels"),
    ("cv2", frozenset(), "pixels"),
    ("uniedit_synth/offline/", frozenset(), "render"),
    ("PIL/", frozenset(), "decode"),
    ("httpx", frozenset(), "HTTP/SDK"),
    ("httpcore", frozenset(), "HTTP/SDK"),
    ("openai/", frozenset(), "HTTP/SDK"),
    ("google/genai", frozenset(), "HTTP/SDK"),
    ("anyio", frozenset(), "HTTP/SDK"),
    ("h11", frozenset(), "HTTP/SDK"),
    ("pydantic", frozenset(), "pydantic"),
]
KINDS = ["decode", "resize", "encode", "base64/JSON", "hashing", "cache I/O", "Arrow", "fingerprint", "pixels",
         "render", "HTTP/SDK", "pydantic", "other"]
STAGES = ["validate", "classify", "rewrite", "edit", "judge", "cache", "write", "engine", "other"]


# -- child: one inline run under the sampler ----------------------------------------------------------------
def classify(frame: Any) -> tuple[str, str]:
    stack = []  # innermost first
    while frame is not None:
        stack.append((frame.f_code.co_filename.replace(os.sep, "/"), frame.f_code.co_name))
        frame = frame.f_back
    kind = "other"
    for path, name in stack:
        found = next((k for frag, names, k in KIND_RULES if frag in path and (not names or name in names)), None)
        if found:
            kind = found
            break
    stage = "other"
    for frag, fn, label in STAGE_RULES:
        if any(frag in path and (not fn or fn == name) for path, name in stack):
            stage = label
            break
    return stage, kind


def pipeline_config(name: str, size: int, records: int, openai_url: str, gemini_url: str) -> Any:
    import yaml

    from uniedit_synth.core.bundled import pipelines_dir
    from uniedit_synth.core.config import parse_pipeline

    file = {"offline": "default.yaml", "openai": "openai.yaml", "uniedit": "uniedit.yaml"}[name]
    raw = yaml.safe_load((pipelines_dir() / file).read_text())
    overrides: dict[str, Any] = {
        "limit": records,
        "source": {"options": {"image_size": size}},
        "engine": {"kind": "inline", "workers": 1, "shard_size": 50},
        "limits": {"max_cost_usd": None, "rate_limits": {}},
    }
    if name == "offline":
        for backend in raw["backends"].values():
            backend.setdefault("options", {})["latency_s"] = 0
    else:
        for backend in raw["backends"].values():
            backend["base_url"] = gemini_url if backend["type"] == "gemini" else openai_url
    raw.setdefault("limits", {})["rate_limits"] = {}
    return parse_pipeline(raw, overrides=overrides)


def child(args: argparse.Namespace) -> None:
    """Child mode: one run; prints one JSON line {records, cpu_s, wall_s, counts, profile}."""
    import faulthandler
    import logging

    # a run that stops making progress prints every thread's stack and exits, instead of holding the benchmark
    faulthandler.dump_traceback_later(CHILD_TIMEOUT_S, exit=True)
    logging.basicConfig(level=logging.ERROR)
    sys.path.insert(0, args.checkout)  # before this repo: the checkout measured is the one imported
    import uniedit_synth

    assert Path(uniedit_synth.__file__).resolve().is_relative_to(Path(args.checkout).resolve()), uniedit_synth
    from uniedit_synth.engine.driver import run_synth as engine_run

    # a short warm-up run first (its own run directory): imports, pydantic schemas and the SDK clients' set-up
    # are start-up, not per-record CPU
    warm = pipeline_config(args.pipeline, args.size, 2, args.openai_url, args.gemini_url)
    engine_run(warm, args.out + "-warm-up", progress=False)
    config = pipeline_config(args.pipeline, args.size, args.records, args.openai_url, args.gemini_url)
    profile_lines: list[str] = []
    cpu0, t0 = time.process_time(), time.monotonic()
    if args.profile:
        import cProfile
        import io
        import pstats

        # every thread profiled (the image work runs in asyncio.to_thread's pool, not on the event loop)
        profiles: list[cProfile.Profile] = []
        original_run = threading.Thread.run

        def profiled_run(self: threading.Thread) -> None:
            profiler = cProfile.Profile(time.thread_time)
            profiles.append(profiler)
            profiler.enable()
            try:
                original_run(self)
            finally:
                profiler.disable()

        threading.Thread.run = profiled_run  # type: ignore[method-assign]
        main_profiler = cProfile.Profile(time.thread_time)
        main_profiler.enable()
        summary = engine_run(config, args.out, progress=False)
        main_profiler.disable()
        threading.Thread.run = original_run  # type: ignore[method-assign]
        stream = io.StringIO()
        stats = pstats.Stats(main_profiler, stream=stream)
        for profiler in profiles:
            try:
                stats.add(profiler)
            except TypeError:  # a thread still running (nothing collected yet)
                pass
        stats.sort_stats("tottime").print_stats(args.profile_top)
        profile_lines = [line for line in stream.getvalue().splitlines() if line.strip()]
        counts: Counter[tuple[str, str]] = Counter()
    else:
        with CpuSampler(classify, idle=("other", "other")) as sampler:
            summary = engine_run(config, args.out, progress=False)
        counts = sampler.counts
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    print(json.dumps({
        "records": summary.read, "accepted": summary.accepted, "cpu_s": cpu, "wall_s": wall,
        "counts": [[s, k, n] for (s, k), n in counts.items()], "profile": profile_lines,
    }))


# -- parent ---------------------------------------------------------------------------------------------------
def measure(checkout: Path, pipeline: str, size: int, records: int, work: Path, urls: tuple[str, str],
            profile: bool = False, top: int = 25) -> dict[str, Any]:
    out = work / f"{checkout.name}-{pipeline}-{size}-{'p' if profile else 's'}-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "OPENAI_BASE_URL", "GOOGLE_API_KEY")}
    env.update(PYTHONPATH=f"{checkout}{os.pathsep}{REPO}", OPENAI_API_KEY=FAKE_KEY, GEMINI_API_KEY=FAKE_KEY,
               RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--pipeline", pipeline,
               "--size", str(size), "--checkout", str(checkout), "--records", str(records), "--out", str(out),
               "--openai-url", urls[0], "--gemini-url", urls[1], "--profile-top", str(top)]
    if profile:
        command.append("--profile")
    # the child runs from the checkout measured, so its bundled pipelines and prompts are that checkout's
    proc = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"{pipeline} at {size} px in {checkout} failed:\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median CPU per record (the lower middle of an even count), its spread noted on it."""
    ordered = sorted(results, key=ms)
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["spread"] = (ms(ordered[0]), ms(ordered[-1])) if len(ordered) > 1 else None
    return chosen


def breakdown(result: dict[str, Any], axis: int) -> dict[str, float]:
    """ms per record by stage (axis 0) or kind (axis 1): the ticks shared out in proportion to the CPU."""
    ticks = sum(n for *_, n in result["counts"]) or 1
    scale = 1000 * result["cpu_s"] / result["records"] / ticks
    out: Counter[str] = Counter()
    for row in result["counts"]:
        out[row[axis]] += row[2] * scale
    return dict(out)


def ms(result: dict[str, Any]) -> float:
    return 1000 * result["cpu_s"] / max(1, result["records"])


def report(rows: list[tuple[str, int, dict[str, Any], dict[str, Any] | None]], has_base: bool) -> list[str]:
    lines = []
    spread = any(after.get("spread") for _, _, after, _ in rows)
    head = f"{'pipeline':<8} {'px':>5} {'records':>7} {'ms/record':>9}"
    if has_base:
        head += f" {'before':>9} {'after÷before':>12}"
    if spread:
        head += f" {'after min-max':>14}" + (f" {'before min-max':>15}" if has_base else "")
    lines.append(head)
    for pipeline, size, after, before in rows:
        line = f"{pipeline:<8} {size:>5} {after['records']:>7} {ms(after):>9.1f}"
        if before is not None:
            line += f" {ms(before):>9.1f} {ms(after) / ms(before):>12.2f}"
        if spread:
            for result in (after, before) if has_base else (after,):
                low, high = result.get("spread") or (ms(result), ms(result))
                line += f" {f'{low:.1f}-{high:.1f}':>{14 if result is after else 15}}"
        lines.append(line)
    for axis, names, title in ((0, STAGES, "by stage"), (1, KINDS, "by kind of work")):
        lines.append("")
        lines.append(f"ms per record {title} (after" + (" / before" if has_base else "") + ")")
        lines.append(f"{'pipeline':<8} {'px':>5} " + " ".join(f"{n[:11]:>11}" for n in names))
        for pipeline, size, after, before in rows:
            a = breakdown(after, axis)
            b = breakdown(before, axis) if before is not None else None
            cells = []
            for name in names:
                cell = f"{a.get(name, 0):.1f}" + (f"/{b.get(name, 0):.1f}" if b is not None else "")
                cells.append(f"{cell:>11}")
            lines.append(f"{pipeline:<8} {size:>5} " + " ".join(cells))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024], help="scene image sides (px)")
    parser.add_argument("--pipelines", nargs="+", choices=PIPELINES, default=list(PIPELINES))
    parser.add_argument("--records", type=int, default=60, help="records per run")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each (before and after in turns); the median is shown, min-max beside it")
    parser.add_argument("--baseline-path", type=Path, default=None,
                        help="another checkout (e.g. a worktree of the previous commit) measured the same way")
    parser.add_argument("--profile", action="store_true",
                        help="also a cProfile run of each pipeline at the largest size (this checkout)")
    parser.add_argument("--profile-top", type=int, default=25, help="functions printed per profile")
    parser.add_argument("--workdir", type=Path, default=None, help="where runs go (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    # child mode (internal)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", default="offline", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--checkout", default=str(REPO), help=argparse.SUPPRESS)
    parser.add_argument("--openai-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--gemini-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    load = os.getloadavg()
    rows = []
    profiles: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="uniedit-cpu-", dir=args.workdir) as tmp:
        work = Path(tmp)
        with fake_servers(work, 0.0) as fakes:
            urls = (fakes.openai_url, fakes.gemini_url)
            for pipeline in args.pipelines:
                for size in args.sizes:
                    befores, afters = [], []
                    # before and after in turns: a burst of load on a shared machine then touches both
                    for turn in range(args.repeat):
                        if args.baseline_path is not None:
                            print(f"{pipeline} {size} px: before ({turn + 1}/{args.repeat}) ...", file=sys.stderr,
                                  flush=True)
                            befores.append(measure(args.baseline_path.resolve(), pipeline, size, args.records,
                                                   work, urls))
                        print(f"{pipeline} {size} px: after ({turn + 1}/{args.repeat}) ...", file=sys.stderr,
                              flush=True)
                        afters.append(measure(REPO, pipeline, size, args.records, work, urls))
                    rows.append((pipeline, size, median_run(afters), median_run(befores) if befores else None))
                if args.profile:
                    print(f"{pipeline} {max(args.sizes)} px: cProfile ...", file=sys.stderr, flush=True)
                    profiles.append((pipeline, measure(REPO, pipeline, max(args.sizes), args.records, work, urls,
                                                       profile=True, top=args.profile_top)))
            served = fakes.stop()
    lines = [f"CPU ms per record, --engine inline (1 worker, the child process's CPU, every thread), "
             f"{args.records} records a run" + (f", median of {args.repeat} runs" if args.repeat > 1 else "") +
             f", fake servers latency 0 ({os.cpu_count()} cores, load average "
             f"{load[0]:.1f} before, {os.getloadavg()[0]:.1f} after; the fakes' own CPU "
             f"{served.get('cpu_s', 0):.1f} s in all, not counted)"]
    if args.baseline_path is not None:
        lines.append(f"before = {args.baseline_path}, after = {REPO}")
    lines += report(rows, args.baseline_path is not None)
    for pipeline, result in profiles:
        lines.append("")
        lines.append(f"cProfile, {pipeline} at {max(args.sizes)} px, every thread, top "
                     f"{args.profile_top} by own time ({ms(result):.1f} ms/record under the profiler):")
        keep = [line for line in result["profile"] if "ncalls" in line or "{" in line or ".py:" in line]
        lines += keep[: args.profile_top + 1]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps([{"pipeline": p, "size": s, "after": a, "before": b}
                                         for p, s, a, b in rows], indent=1))


if __name__ == "__main__":
    main()
