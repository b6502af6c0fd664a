"""The offline world's scene PNG encodings side by side: CPU ms to encode and to decode, and the bytes.

Each encoding run.json `scene_png` can pin (offline/render.py PNG_ENCODINGS) writes the same scenes, each decoded
back (OpenCV, the pixel gates' decoder for plain PNGs) and checked against the drawing: every encoding is
lossless, only the bytes and the cost differ. CPU time (`time.process_time`), the best of `--rounds` rounds over
the same scenes, the encodings interleaved within each round, so a busy machine slows them alike.

    python benchmarks/scene_png.py                         # 256, 512 and 1024 px, 20 scenes each
    python benchmarks/scene_png.py --sizes 1024 --scenes 40 --rounds 7
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from uniedit_synth.offline.render import PNG_ENCODINGS, PNG_NEW, encode_png, render_image  # noqa: E402
from uniedit_synth.offline.world import Scene  # noqa: E402
from uniedit_synth.sources.scenes import ScenesSource  # noqa: E402


def cpu_ms(work, items: list) -> float:
    start = time.process_time()
    for item in items:
        work(item)
    return (time.process_time() - start) / len(items) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024], help="image sides, px")
    parser.add_argument("--scenes", type=int, default=20, help="scenes per size")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best of them is printed")
    args = parser.parse_args()
    import cv2

    def decode(png: bytes) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR_RGB)

    print(f"{'px':>5} {'encoding':<14} {'encode ms':>9} {'decode ms':>9} {'KB':>7}  encode ÷ {PNG_NEW}")
    for size in args.sizes:
        source = ScenesSource(count=args.scenes, seed=5, image_size=size, defer_render=True)
        images = [render_image(Scene.model_validate(source.record(i).meta["scene"])) for i in range(args.scenes)]
        pngs = {name: [encode_png(image, name) for image in images] for name in PNG_ENCODINGS}
        for name, encoded in pngs.items():
            for image, png in zip(images, encoded, strict=True):
                assert (decode(png) == np.asarray(image)).all(), f"{name} is not lossless"
        best: dict[str, list[float]] = {name: [float("inf")] * 2 for name in PNG_ENCODINGS}
        for _ in range(args.rounds):
            for name in PNG_ENCODINGS:
                best[name][0] = min(best[name][0], cpu_ms(lambda im, n=name: encode_png(im, n), images))
                best[name][1] = min(best[name][1], cpu_ms(decode, pngs[name]))
        for name in PNG_ENCODINGS:
            kilobytes = sum(map(len, pngs[name])) / len(images) / 1000
            ratio = best[name][0] / best[PNG_NEW][0]
            print(f"{size:>5} {name:<14} {best[name][0]:>9.2f} {best[name][1]:>9.2f} {kilobytes:>7.1f}  {ratio:.1f}x")


if __name__ == "__main__":
    main()
