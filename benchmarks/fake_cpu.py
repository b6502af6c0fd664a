"""CPU per request of the fake provider servers (tests/fakes), by kind of request, and whether two checkouts'
fakes give the same replies.

The fakes run on the same cores as the tool they serve (benchmarks/peers.py: a 2-core machine), so their CPU
per request is part of every throughput figure measured against them, a cost a real provider does not put
on the client. This script records the requests the `openai` and `uniedit` pipelines really send (one small
inline run each against in-process fakes, at `--size` px), then replays them, byte for byte over HTTP, to a
fake server process started from each checkout, `--rounds` times per request and one kind of request at a
time, and prints that process's CPU (user + system, /proc via psutil) per request. The replies are compared
across checkouts with their volatile fields (ids, timestamps, the Date header) left out, and each edited
image as its size and pixels (its PNG bytes may differ: how the fake encodes them is its own choice).

    python benchmarks/fake_cpu.py                                   # this checkout
    git worktree add /tmp/base main
    python benchmarks/fake_cpu.py --baseline-path /tmp/base         # main beside this code
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.harness import FAKE_KEY, REPO  # noqa: E402

SERVE = """
import json, signal, sys, threading
sys.path.insert(0, {checkout!r})
import tests.fakes.base as base
from tests.fakes import FakeGemini, FakeOpenAI
assert base.__file__.startswith({checkout!r}), base.__file__
servers = [FakeOpenAI().start(), FakeGemini().start()]
print(json.dumps([s.port for s in servers]), flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
done.wait()
"""


def kind_of(path: str) -> str:
    if path.endswith("/images/edits"):
        return "openai edit (multipart)"
    if path.endswith("/chat/completions"):
        return "openai chat (JSON)"
    return "gemini edit (JSON)" if "-image" in path else "gemini text (JSON)"


def capture(size: int, records: int) -> list[tuple[str, str, list[tuple[str, str]], bytes]]:
    """The raw requests (method, path, headers, body) of one inline `openai` and one `uniedit` run."""
    from benchmarks.cpu_per_record import pipeline_config
    from tests.fakes import FakeGemini, FakeOpenAI, base
    from uniedit_synth.engine.driver import run_synth

    os.environ.setdefault("OPENAI_API_KEY", FAKE_KEY)
    os.environ.setdefault("GEMINI_API_KEY", FAKE_KEY)
    seen: list[tuple[str, str, list[tuple[str, str]], bytes]] = []
    read_body = base._Handler._read_body

    def recording(handler: Any) -> bytes:
        raw = read_body(handler)
        seen.append((handler.command, handler.path, list(handler.headers.items()), raw))
        return raw

    base._Handler._read_body = recording
    try:
        with FakeOpenAI() as openai, FakeGemini() as gemini, tempfile.TemporaryDirectory() as tmp:
            for pipeline in ("openai", "uniedit"):
                config = pipeline_config(pipeline, size, records, openai.base_url, gemini.base_url)
                run_synth(config, str(Path(tmp) / pipeline), progress=False)
    finally:
        base._Handler._read_body = read_body
    return seen


def normalised(status: int, body: bytes, images: list[bytes] | None = None) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return f"{status}:{hashlib.sha256(body).hexdigest()}"
    if isinstance(data, dict):
        for key in ("id", "created", "responseId"):
            data.pop(key, None)
    data = pixels_of_images(data, images)
    return f"{status}:{hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()}"


def pixels_of_images(data: Any, images: list[bytes] | None = None) -> Any:
    """`data` with every base64 PNG in it replaced by a digest of its size and RGB pixels: the fakes' edited
    images must keep their pixels, not their PNG bytes (the encoder's settings may change); the PNGs are
    appended to `images`."""
    if isinstance(data, dict):
        return {key: pixels_of_images(value, images) for key, value in data.items()}
    if isinstance(data, list):
        return [pixels_of_images(value, images) for value in data]
    if isinstance(data, str) and data.startswith("iVBORw0KGgo"):  # base64 of the PNG signature
        png = base64.b64decode(data)
        if images is not None:
            images.append(png)
        with Image.open(io.BytesIO(png)) as image:
            rgb = image.convert("RGB")
        return f"png {rgb.size} {hashlib.sha256(rgb.tobytes()).hexdigest()}"
    return data


def decode_ms(image_sets: list[list[bytes]]) -> list[float]:
    """CPU ms per image of uniedit's decode of a plain PNG (method/pixel_gates.py: cv2.imdecode to RGB), for each
    set of images, the sets in turn, best of 7 passes: what the fake's choice of PNG encoding costs the client."""
    import cv2
    import numpy as np

    arrays = [[np.frombuffer(png, np.uint8) for png in images] for images in image_sets]
    best = [float("inf")] * len(arrays)
    for _ in range(7):
        for i, batch in enumerate(arrays):
            start = time.process_time()
            for array in batch:
                cv2.imdecode(array, cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
            best[i] = min(best[i], time.process_time() - start)
    return [1000 * b / max(1, len(batch)) for b, batch in zip(best, arrays, strict=True)]


def replay(checkout: Path, requests: list, rounds: int) -> tuple[dict[str, float], str, list[bytes]]:
    """CPU ms per request by kind of the fake process of `checkout`, a digest of all its replies, and the
    edited images it replied (PNG, each once)."""
    proc = subprocess.Popen([sys.executable, "-c", SERVE.format(checkout=str(checkout))], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        openai_port, gemini_port = json.loads(proc.stdout.readline())
        server = psutil.Process(proc.pid)
        connections: dict[int, http.client.HTTPConnection] = {}
        replies: list[str] = []
        images: list[bytes] = []

        def send(method: str, path: str, headers: list[tuple[str, str]], raw: bytes) -> None:
            port = openai_port if path.startswith("/v1/") else gemini_port
            conn = connections.setdefault(port, http.client.HTTPConnection("127.0.0.1", port))
            sent = {k: v for k, v in headers if k.lower() not in ("content-length", "transfer-encoding", "host")}
            conn.request(method, path, body=raw, headers=sent)
            reply = conn.getresponse()
            replies.append(normalised(reply.status, reply.read(), images))

        # warm-up: first connections, and one request of each kind (the imports its handling needs)
        for request in {kind_of(request[1]): request for request in reversed(requests)}.values():
            send(*request)
        replies.clear()
        by_kind: dict[str, list[tuple]] = {}
        for request in requests:
            by_kind.setdefault(kind_of(request[1]), []).append(request)
        cpu_ms: dict[str, float] = {}
        for kind, batch in sorted(by_kind.items()):
            times = server.cpu_times()
            before = times.user + times.system
            for request in batch:
                for _ in range(rounds):
                    send(*request)
            times = server.cpu_times()
            cpu_ms[kind] = 1000 * (times.user + times.system - before) / (len(batch) * rounds)
        return cpu_ms, hashlib.sha256("".join(replies).encode()).hexdigest()[:16], list(dict.fromkeys(images))
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="scene image side (px)")
    parser.add_argument("--records", type=int, default=12, help="records per captured pipeline run")
    parser.add_argument("--rounds", type=int, default=10, help="times each captured request is replayed")
    parser.add_argument("--baseline-path", type=Path, default=None, help="another checkout, replayed the same way")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    load = os.getloadavg()
    requests = capture(args.size, args.records)
    counts: dict[str, int] = {}
    for request in requests:
        counts[kind_of(request[1])] = counts.get(kind_of(request[1]), 0) + 1
    checkouts = ([("before", args.baseline_path.resolve())] if args.baseline_path else []) + [("after", REPO)]
    results = {name: replay(path, requests, args.rounds) for name, path in checkouts}
    print(f"fake servers' CPU ms per request (their process, user + system), {len(requests)} requests of an "
          f"`openai` and a `uniedit` run at {args.size} px, each replayed {args.rounds}× (load average "
          f"{load[0]:.1f} before, {os.getloadavg()[0]:.1f} after; {time.strftime('%H:%M UTC', time.gmtime())})")
    head = f"{'request':<26} {'n':>3}" + "".join(f" {name:>8}" for name, _ in checkouts)
    print(head + (f" {'after÷before':>12}" if len(checkouts) == 2 else ""))
    for kind in sorted(counts):
        cells = [results[name][0][kind] for name, _ in checkouts]
        line = f"{kind:<26} {counts[kind]:>3}" + "".join(f" {c:>8.2f}" for c in cells)
        print(line + (f" {cells[1] / cells[0]:>12.2f}" if len(cells) == 2 and cells[0] else ""))
    if len(checkouts) == 2:
        same = results["before"][1] == results["after"][1]
        print(f"same replies before and after: {'yes' if same else 'NO'} ({results['after'][1]})")
    decodes = decode_ms([results[name][2] for name, _ in checkouts])
    sizes = [sum(map(len, results[name][2])) / max(1, len(results[name][2])) for name, _ in checkouts]
    print(f"{'client decode of an edit':<26} {len(results['after'][2]):>3}" + "".join(f" {d:>8.2f}" for d in decodes)
          + (f" {decodes[1] / decodes[0]:>12.2f}" if len(decodes) == 2 and decodes[0] else "")
          + "  (cv2.imdecode CPU ms per edited PNG; mean bytes " + " / ".join(f"{b:.0f}" for b in sizes) + ")")
    for name, path in checkouts:
        print(f"  {name} = {path}")


if __name__ == "__main__":
    main()
