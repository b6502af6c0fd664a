"""Past 148k: what the driver reads and holds, what a run leaves on disk, and what a rerun of a finished run costs.

Two parts, each measurement in a fresh process (its own /proc/self/io and getrusage, the driver only: the Ray
workers, raylet and coordinator are other processes):

  driver-io  a parquet source with embedded images under `--engine ray`: the driver's `rchar` (every byte its
             read() calls returned: files, and Ray's sockets too, so an over-estimate) on the run and on a rerun
             of the finished run, minus the same run on a 4-row copy of the source (start-up: imports, Ray
             start, one shard). Acceptance: < 20 % of the source's bytes on the run, < 5 % on the rerun.
  sizes      the offline world with zero-latency builtin backends (`--engine ray`, 2 workers, one node or
             --nodes N on loopback) at each --sizes N: driver peak RSS, driver CPU per record and per second,
             files and bytes on disk per 1,000 records (disk ÷ the images' own bytes plus the parquet overhead),
             and the rerun time of the finished run (no Ray is started: manifest and source identity say it is done);
             the driver's CPU by thread (its own: MainThread and asyncio's worker threads; Ray's: `native`).
             --image-size 64 (64-px scenes, ~5x the records/s of the default 256 px) is what makes 50k
             records feasible on 2 shared cores: bytes per record then follow the smaller images.

    python benchmarks/scale.py                               # driver-io 240 rows; sizes 1000,3000
    python benchmarks/scale.py --skip driver-io --sizes 10000,50000 --image-size 64   # real 10k and 50k runs
    python benchmarks/scale.py --skip driver-io --sizes 1000 --nodes 3   # 3 Ray nodes on 127.0.0.1
    python benchmarks/scale.py --skip driver-io --skip sizes --rerun-at 10000,50000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FAST = {"backends": {"text": {"options": {"latency_s": 0}}, "editor": {"options": {"latency_s": 0}}}}


def proc_io() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/io").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = int(value)
    return out


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads: Python threads by their name (the driver's own work is MainThread
    and the threads it hands work to; Ray's are ray_print_logs, ray_listen_error_messages), the others (Ray's
    C++ core worker: gRPC, its event loops) as `native`. Where the driver's CPU goes."""
    import threading

    tick = os.sysconf("SC_CLK_TCK")
    python = {t.native_id: t.name.split(" ")[0] for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = python.get(int(task.name), "native")
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[f"{task.name}:{name}"] = (int(fields[11]) + int(fields[12])) / tick
    return out


class ThreadSampler:
    """The last CPU figure seen of every thread, sampled every 5 s: Ray's threads end with ray.shutdown()
    inside synth(), before the run's last reading."""

    def __init__(self) -> None:
        import threading

        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="thread_sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(5.0):
            self.seen.update(thread_cpu())

    def __enter__(self) -> ThreadSampler:
        self.before = thread_cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.seen.update(thread_cpu())


def by_name(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for key, cpu in after.items():
        name = key.split(":", 1)[1]
        totals[name] = totals.get(name, 0.0) + cpu - before.get(key, 0.0)
    return {k: round(v, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1]) if v > 0}


def child(source: str, out: str, engine: str, limit: int | None, workers: int, shard_size: int,
          image_size: int = 0) -> None:
    """One synth in this process; prints what the driver read, held and spent."""
    import pyarrow  # noqa: F401 - imported before the measurement: start-up, not the run
    import ray  # noqa: F401

    from uniedit_synth import synth

    overrides = {**FAST, "engine": {"kind": engine, "workers": workers, "shard_size": shard_size}}
    if image_size:  # the scenes' side in pixels (default 256): smaller scenes make the 50k run feasible here
        overrides["source"] = {"options": {"image_size": image_size}}
    before = proc_io()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    with ThreadSampler() as sampler:  # its own CPU (a /proc read a second) is in cpu_s too: ~0.1 ms/s
        summary = synth("default", source=source, out=out, limit=limit, overrides=overrides)
    wall = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    threads = by_name(sampler.before, sampler.seen)  # up to 5 s of an ended thread is missed
    after = proc_io()
    print(json.dumps({
        "rchar": after["rchar"] - before["rchar"], "read_bytes": after["read_bytes"] - before["read_bytes"],
        "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "peak_rss_mb": cpu1.ru_maxrss / 1024, "wall_s": wall, "records": summary.read,
        "shards_done": summary.shards_done, "shards_skipped": summary.shards_skipped, "threads_cpu_s": threads,
    }))


def measure(source: str, out: Path, engine: str = "ray", limit: int | None = None, workers: int = 2,
            shard_size: int = 50, image_size: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--child", source, str(out), engine, str(limit or 0), str(workers),
           str(shard_size), str(image_size)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"child failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_source(path: Path, rows: int, side: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from uniedit_synth.core.records import IMAGE_STRUCT

    rng = np.random.default_rng(0)
    images = []
    for i in range(rows):
        pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)  # noise: PNG cannot shrink it
        pixels[side // 4: side // 2, side // 4: side // 2] = (200, 40, 40) if i % 2 else (40, 40, 200)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    table = pa.table({
        "id": [f"q{i}" for i in range(rows)],
        "question": [f"What colour is the square in picture {i}?" for i in range(rows)],
        "answer": ["red" if i % 2 else "blue" for i in range(rows)],
        "image": pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)], IMAGE_STRUCT),
    })
    pq.write_table(table, path, row_group_size=50)


def load_average() -> str:
    """The machine's 1/5/15-minute load: wall figures on shared cores depend on it (CPU time and RSS less so)."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def disk(out: Path) -> tuple[int, int]:
    files = size = 0
    for root, _, names in os.walk(out):
        for name in names:
            files += 1
            size += (Path(root) / name).stat().st_size
    return files, size


def bytes_breakdown(out: Path) -> dict[str, int]:
    """Where the bytes of a run directory are: the shard parquet files (and the image cells inside them: source
    and edited images, their own bytes), the cache packs, the rest (run.json, manifest, stats, ...)."""
    import pyarrow.parquet as pq

    parts = {"parquet": 0, "images": 0, "packs": 0, "other": 0}
    for root, _, names in os.walk(out):
        for name in names:
            path = Path(root) / name
            size = path.stat().st_size
            if name.endswith(".parquet") and path.parent.name in ("data", "rejects", "attempts"):
                parts["parquet"] += size
                table = pq.read_table(path, columns=["source_image", "edited_image"])
                for column in ("source_image", "edited_image"):
                    parts["images"] += sum(len((v or {}).get("bytes") or b"") for v in table.column(column).to_pylist())
            elif name.endswith(".pack"):
                parts["packs"] += size
            else:
                parts["other"] += size
    return parts


def driver_io(work: Path, rows: int, side: int) -> None:
    source = work / "embedded.parquet"
    write_source(source, rows, side)
    tiny = work / "tiny.parquet"
    write_source(tiny, 4, side)
    size = source.stat().st_size
    startup = measure(str(tiny), work / "run-tiny")
    run = measure(str(source), work / "run-io")
    rerun = measure(str(source), work / "run-io")
    rerun_startup = measure(str(tiny), work / "run-tiny")
    print(f"\ndriver-io: {rows} rows, images {side}x{side}, source {size / 1e6:.1f} MB, --engine ray --workers 2")
    print("                      rchar MB  minus start-up MB  share of source  shards run/skipped  wall s")
    for name, r, base in (("run", run, startup), ("rerun (finished)", rerun, rerun_startup)):
        net = r["rchar"] - base["rchar"]
        print(f"  {name:<18} {r['rchar'] / 1e6:>9.1f} {net / 1e6:>18.1f} {net / size:>15.1%} "
              f"{r['shards_done']:>10}/{r['shards_skipped']:<8} {r['wall_s']:>7.1f}")
    print(f"  start-up (4-row source, same schema): {startup['rchar'] / 1e6:.1f} MB on a run, "
          f"{rerun_startup['rchar'] / 1e6:.1f} MB on its rerun")


def sizes(work: Path, counts: list[int], workers: int, shard_size: int, nodes: int, image_size: int = 0) -> None:
    where = "one node (2 cores)" if nodes == 1 else f"{nodes} Ray nodes on 127.0.0.1 (2 cores in all)"
    scenes = f"source.options.image_size={image_size}" if image_size else "256 px scenes (the default)"
    print(f"\nsizes: offline world, zero-latency builtins, {scenes}, --engine ray --workers {workers} --shard-size "
          f"{shard_size}, {where}; load average before: {load_average()}")
    print(" records  wall s  rec/s  driver RSS MB  driver CPU ms/rec  ms/s  files/1k rec  MB/1k rec  "
          "disk÷(images+parquet)  rerun s")
    rows = []
    for n in counts:
        out = work / f"run-{n}"
        run = measure("scenes", out, limit=n, workers=workers, shard_size=shard_size, image_size=image_size)
        files, size = disk(out)
        parts = bytes_breakdown(out)
        overhead = parts["parquet"] - parts["images"]  # the parquet files' own bytes beyond their image cells
        rerun = measure("scenes", out, limit=n, workers=workers, shard_size=shard_size, image_size=image_size)
        rows.append((n, run, files, size, rerun))
        print(f"{n:>8} {run['wall_s']:>7.1f} {n / run['wall_s']:>6.1f} {run['peak_rss_mb']:>13.0f} "
              f"{1000 * run['cpu_s'] / n:>18.3f} {1000 * run['cpu_s'] / run['wall_s']:>5.1f} "
              f"{1000 * files / n:>13.1f} {size / n / 1000:>10.2f} {size / (parts['images'] + max(0, overhead)):>22.3f} "
              f"{rerun['wall_s']:>8.2f}", flush=True)
        print(f"         bytes: images {parts['images'] / 1e6:.1f} MB (their own bytes, in the shards' parquet), "
              f"parquet overhead {overhead / 1e6:.2f} MB, cache packs {parts['packs'] / 1e6:.2f} MB, "
              f"other {parts['other'] / 1e6:.2f} MB; load average after: {load_average()}", flush=True)
        threads = ", ".join(f"{k} {1000 * v / run['wall_s']:.1f}" for k, v in run["threads_cpu_s"].items())
        print(f"         driver CPU by thread, ms per second of run: {threads}", flush=True)
    if len(rows) >= 2:
        (n0, r0, *_), (n1, r1, *_) = rows[0], rows[-1]
        slope = (r1["cpu_s"] - r0["cpu_s"]) / (n1 - n0)
        rate = (r1["cpu_s"] - r0["cpu_s"]) / max(1e-9, r1["wall_s"] - r0["wall_s"])
        print(f"driver peak RSS {n1} / {n0}: {r1['peak_rss_mb'] / r0['peak_rss_mb']:.2f}; driver CPU per extra "
              f"record (slope {n0} -> {n1}, start-up out): {1000 * slope:.3f} ms, "
              f"per extra second of run: {1000 * rate:.1f} ms")


def synthetic_finished_run(base: Path, target: int, shard_size: int) -> Path:
    """A finished run of `target` records made from the whole shards of the finished run `base`: their files
    hard-linked under new shard numbers, one manifest line each, source.json saying the source ended there (the
    offline world's identity is its config). What a rerun of a finished `target`-record run reads, without
    running `target` records on 2 shared cores."""
    out = base.parent / f"synthetic-{target}"
    out.mkdir()
    entries = [json.loads(line) for line in (base / "manifest.jsonl").read_text().splitlines()]
    whole = [e for e in entries if e["records"] == shard_size]
    shards = target // shard_size
    for name in ("run.json", "stats.json"):
        (out / name).write_bytes((base / name).read_bytes())
    with open(out / "manifest.jsonl", "w") as manifest:
        for shard in range(shards):
            entry = json.loads(json.dumps(whole[shard % len(whole)]))
            old = f"shard-{entry['shard']:05d}"
            for record in entry["files"].values():
                new_path = record["path"].replace(old, f"shard-{shard:05d}")
                (out / new_path).parent.mkdir(parents=True, exist_ok=True)
                os.link(base / record["path"], out / new_path)
                record["path"] = new_path
            pack = base / "cache" / "packs" / f"{old}.pack"
            (out / "cache" / "packs").mkdir(parents=True, exist_ok=True)
            os.link(pack, out / "cache" / "packs" / f"shard-{shard:05d}.pack")
            entry["shard"] = shard
            manifest.write(json.dumps(entry) + "\n")
    plan = json.loads((base / "source.json").read_text())
    plan.update(limit=target, shards=shards, records=shards * shard_size)
    (out / "source.json").write_text(json.dumps(plan))
    return out


def rerun_at(work: Path, targets: list[int], workers: int, shard_size: int) -> None:
    base_n = 2 * shard_size
    base = work / f"run-{base_n}"
    if not base.exists():
        measure("scenes", base, limit=base_n, workers=workers, shard_size=shard_size)
    print(f"\nrerun of a finished run (synthetic: the {base_n}-record run's shards hard-linked under new numbers)")
    print(" records  shards  files  rerun s  driver RSS MB  shards run/skipped")
    for target in targets:
        out = synthetic_finished_run(base, target, shard_size)
        files, _ = disk(out)
        rerun = measure("scenes", out, limit=target, workers=workers, shard_size=shard_size)
        print(f"{target:>8} {target // shard_size:>7} {files:>6} {rerun['wall_s']:>8.2f} {rerun['peak_rss_mb']:>14.0f} "
              f"{rerun['shards_done']:>10}/{rerun['shards_skipped']}", flush=True)


@contextlib.contextmanager
def loopback_cluster(work: Path, nodes: int):
    """`nodes` Ray nodes on 127.0.0.1 (a head and nodes joining it, each its own raylet), their temp dirs under
    `work`; RAY_ADDRESS points the runs at it. Stopped by killing exactly its own processes (found by their temp
    dir), never `ray stop` (that stops every Ray on the machine)."""
    if nodes <= 1:
        yield
        return
    import shutil
    import socket
    import time as _time

    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    temp = work / "ray"
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", "150000000",
              "--disable-usage-stats"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    try:
        subprocess.run([ray_cli, "start", "--head", "--port", str(port), "--include-dashboard=false",
                        "--temp-dir", str(temp), *common], check=True, capture_output=True, env=env, timeout=300)
        for _ in range(nodes - 1):
            subprocess.run([ray_cli, "start", "--address", f"127.0.0.1:{port}", *common], check=True,
                           capture_output=True, env=env, timeout=300)
        os.environ["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        os.environ["UNIEDIT_WORKERS_READ_SOURCE"] = "1"  # every node is this machine: the workers read the rows
        yield
    finally:
        os.environ.pop("RAY_ADDRESS", None)
        mine = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout.splitlines()
        pids = [int(line.split()[0]) for line in mine if str(temp) in line and "ps -eo" not in line]
        for signal_ in (15, 9):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal_)
            _time.sleep(2)
        shutil.rmtree(temp, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        source, out, engine, limit, workers, shard_size, image_size = sys.argv[2:9]
        child(source, out, engine, int(limit) or None, int(workers), int(shard_size), int(image_size))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=240, help="rows of the embedded-image parquet source")
    parser.add_argument("--image-side", type=int, default=400, help="its images are side x side noise PNGs")
    parser.add_argument("--sizes", default="1000,3000", help="record counts of the offline-world runs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=250, help="of the sizes runs (files per record follow it)")
    parser.add_argument("--nodes", type=int, default=1, help="Ray nodes on 127.0.0.1 for the sizes runs (1: none)")
    parser.add_argument("--image-size", type=int, default=0, help="the scenes' side in pixels for the sizes runs "
                        "(0: the source's default, 256); 64 makes 10k-50k runs feasible on 2 shared cores")
    parser.add_argument("--rerun-at", default="", help="record counts of synthetic finished runs whose rerun is "
                        "timed (e.g. 10000,50000)")
    parser.add_argument("--skip", choices=("driver-io", "sizes"), action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="uniedit-scale-") as tmp:
        work = Path(tmp)
        if "driver-io" not in args.skip:
            driver_io(work, args.rows, args.image_side)
        if "sizes" not in args.skip:
            with loopback_cluster(work, args.nodes):
                sizes(work, [int(x) for x in args.sizes.split(",") if x], args.workers, args.shard_size, args.nodes,
                      args.image_size)
        if args.rerun_at:
            rerun_at(work, [int(x) for x in args.rerun_at.split(",") if x], args.workers, args.shard_size)


if __name__ == "__main__":
    main()
