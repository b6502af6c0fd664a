"""Images/s of one diffusers replica at batch 1, 2, 4, 8: the figure `serve.max_batch` defaults are chosen from.

The model is the tiny random InstructPix2Pix pipeline of the tests (tests/fakes/tiny_diffusers.py, built in
code, nothing downloaded), run by the backend's own replica runner (uniedit_synth/backends/diffusers_backend.py
DiffusersRunner.run_batch: one pipeline call per batch, one generator per request), so what is timed is what a
replica does per batch. Every batch size edits the same `--images` requests (different prompts and seeds) after
one warm-up batch; each figure is the best of `--repeats` passes (the least disturbed by other processes on a
shared machine). Printed side by side with the speed-up over batch 1.

    python benchmarks/diffusers_batching.py                       # CPU, 16 images, size 32, 4 steps
    python benchmarks/diffusers_batching.py --device cuda         # on a GPU (the same tiny model)
    python benchmarks/diffusers_batching.py --model /path/to/pipeline --size 512 --steps 20 --dtype float16
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from uniedit_synth.backends.diffusers_backend import DiffusersRunner  # noqa: E402
from uniedit_synth.core.config import BackendSpec  # noqa: E402


def payloads(n: int, size: int, steps: int) -> list[dict]:
    out = []
    for i in range(n):
        img = Image.new("RGB", (size * 5 // 4, size), (40 * (i % 6), 120, 200 - 10 * (i % 8)))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        params = {"steps": steps, "guidance_scale": 3.0, "image_guidance_scale": None, "true_cfg_scale": None,
                  "negative_prompt": None, "width": size, "height": size}
        out.append({"prompt": f"paint object {i} red", "image": buf.getvalue(), "seed": 1000 + i,
                    "params": params})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a diffusers pipeline directory (default: build the tiny one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (a replica's num_cpus)")
    args = parser.parse_args()

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tests.fakes.tiny_diffusers import build_tiny_pix2pix

            model = str(build_tiny_pix2pix(Path(tmp) / "tiny", sample_size=args.size))
        spec = BackendSpec(type="diffusers", model=model,
                           options={"dtype": args.dtype, "cpu_threads": args.threads})
        runner = DiffusersRunner(spec.model_dump_json(), args.device)
        requests = payloads(args.images, args.size, args.steps)
        runner.run_batch(requests[:2])  # warm-up
        rows = []
        for batch in args.batches:
            best = float("inf")
            for _ in range(args.repeats):
                started = time.perf_counter()
                for i in range(0, len(requests), batch):
                    runner.run_batch(requests[i:i + batch])
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - started)
            rows.append((batch, len(requests) / best))

    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"cpu ({args.threads} thread)"
    print(f"diffusers replica throughput: {runner.pipeline_class}, {args.size}x{args.size}, {args.steps} steps, "
          f"{args.dtype}, {device}, {args.images} images, best of {args.repeats}")
    print(f"{'batch':>5} {'images/s':>10} {'vs batch 1':>11}")
    base = rows[0][1]
    for batch, rate in rows:
        print(f"{batch:>5} {rate:>10.2f} {rate / base:>10.2f}x")


if __name__ == "__main__":
    main()
