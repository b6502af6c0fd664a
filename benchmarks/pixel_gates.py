"""Calibration of the pixel gates (`no_op_edit`, `over_edited`): honest edits pass, defective ones are caught.

Edits come from the offline world: scene records of every category under drawn instruction plans (styles
conditional, synthesis, render, transform; 256x256), and generic-mode edits on images from outside the world
(random-noise pictures as in benchmarks/data_quality.py, and smooth "photo-like" 4:3 pictures), plus a third as
many math-board records (the smallest honest edits: "?" -> "1" on a board). For each:

- honest: the correct edit (`expected_edited_png`), exactly and as a generative editor returns it: re-encoded at
  the source's size (JPEG q95 and q85, down/up resampling 0.75x Lanczos and 0.5x bilinear, blur radius 0.6, a
  resample then JPEG), and at the editor's own resolution (upscaled to 1024 px, then plain, JPEG q85 or q75, blur
  1.0, or a 0.5x resample and JPEG q75, then back to the source's size as the edit stage does). Pure-noise
  pictures get the exact edit only: any JPEG, blur or resampling of white noise changes every pixel, which is
  what a global re-render does, and no real picture is white noise. JPEG q75 applied at the 256-px source's own
  size is shown apart (information rows): on the offline world's 1-px text strokes its blocks move values as much
  as writing one digit does; a generative editor's JPEG is at its own, 4x larger resolution.
- defective, editor flaws of the offline world (offline/flaws.py `apply_flaw`): `unchanged` (the source
  returned) and `collateral_change` (the right edit plus an unrelated change), each also through every noise
  variant above;
- defective, whole-image changes on top of the right edit, with no edit region known (as a pipeline with a real
  rewriter sees them): a tone shift (+10 levels), a colour cast (R +12, B -12), gamma 0.8, and a re-render
  (every pixel re-drawn: 1-px blur, +8 tone, JPEG q85); for information, 1- and 2-px translations.

Each pair goes through the gates as the edit stage runs them (`pixel_gates.measure` + `verdict` with the
defaults of `GateLimits`, the region of the edit program where one is known).

    python benchmarks/pixel_gates.py                 # 120 scene + 30 generic records (~3 min on 2 cores)
    python benchmarks/pixel_gates.py --records 60 --synth 0

Then `uniedit synth` (default pipeline, whose builtin editor errs on purpose) on --synth records: every record a
gate rejected is compared with the expected edit of its program (no honest edit may be among them).
"""

from __future__ import annotations

import argparse
import io
import itertools
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from uniedit_synth.method import pixel_gates  # noqa: E402
from uniedit_synth.method.plan import draw_plan  # noqa: E402
from uniedit_synth.offline.choose import scene_program  # noqa: E402
from uniedit_synth.offline.flaws import apply_flaw, expected_edited_png  # noqa: E402
from uniedit_synth.offline.generic import generic_program  # noqa: E402
from uniedit_synth.offline.questions import SCENE_CATEGORIES, generate_vqa  # noqa: E402
from uniedit_synth.offline.regions import edit_region  # noqa: E402
from uniedit_synth.offline.render import render_png  # noqa: E402

Variant = Callable[[Image.Image], Image.Image]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _resample(image: Image.Image, factor: float, method: Image.Resampling) -> Image.Image:
    width, height = image.size
    small = image.resize((max(1, round(width * factor)), max(1, round(height * factor))), method)
    return small.resize((width, height), method)


def _blur(radius: float) -> Variant:
    return lambda image: image.filter(ImageFilter.GaussianBlur(radius))


LANCZOS, BILINEAR, BICUBIC = Image.Resampling.LANCZOS, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC
#: the long side a generative editor works at (Gemini 1K, gpt-image-1 1024-1536, FLUX ~1024)
EDITOR_SIDE = 1024


def _at_editor(change: Variant) -> Variant:
    """`change` applied where a generative editor applies it: at its own resolution (the picture upscaled to
    EDITOR_SIDE, bicubic), then brought back to the source's size as the edit stage does (Lanczos)."""

    def variant(image: Image.Image) -> Image.Image:
        width, height = image.size
        scale = EDITOR_SIDE / max(width, height)
        large = image.resize((round(width * scale), round(height * scale)), BICUBIC)
        return change(large).resize((width, height), LANCZOS)

    return variant


#: how a generative editor returns an honest edit: re-encoded at the source's size, or at its own resolution
NOISE: dict[str, Variant] = {
    "exact": lambda image: image,
    "jpeg95": lambda image: _jpeg(image, 95),
    "jpeg85": lambda image: _jpeg(image, 85),
    "resample0.75": lambda image: _resample(image, 0.75, LANCZOS),
    "resample0.5": lambda image: _resample(image, 0.5, BILINEAR),
    "blur0.6": _blur(0.6),
    "resample0.75+jpeg95": lambda image: _jpeg(_resample(image, 0.75, LANCZOS), 95),
    "editor:1024": _at_editor(lambda image: image),
    "editor:jpeg85": _at_editor(lambda image: _jpeg(image, 85)),
    "editor:jpeg75": _at_editor(lambda image: _jpeg(image, 75)),
    "editor:blur1.0": _at_editor(_blur(1.0)),
    "editor:resample0.5+jpeg75": _at_editor(lambda image: _jpeg(_resample(image, 0.5, BILINEAR), 75)),
}
#: not in the honest set (information rows): JPEG q75 at the 256-px source's own resolution moves the offline
#: world's 1-px text strokes by as much as a one-digit edit does
HARSH: dict[str, Variant] = {"jpeg75 at 256 px": lambda image: _jpeg(image, 75)}
#: white noise has nothing a re-encoding keeps: only lossless round trips are honest there
NOISE_ON_NOISE = ("exact",)


def _add(image: Image.Image, offsets: tuple[int, int, int]) -> Image.Image:
    array = np.asarray(image, dtype=np.int16) + np.array(offsets, dtype=np.int16)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _gamma(image: Image.Image, gamma: float) -> Image.Image:
    array = np.asarray(image, dtype=np.float32) / 255.0
    return Image.fromarray((255.0 * array**gamma).round().astype(np.uint8))


def _speck(image: Image.Image) -> Image.Image:
    """A 4x4-pixel dark dot in a corner instead of the edit (a model that "edited" a speck)."""
    out = image.copy()
    out.paste((20, 20, 20), (3, 3, 7, 7))
    return out


def _floor_repaint(image: Image.Image) -> Image.Image:
    """The bottom 38 % of the picture (the floor) repainted a flat colour along with the edit."""
    out = image.copy()
    width, height = out.size
    out.paste((200, 160, 40), (0, round(height * 0.62), width, height))
    return out


def _translate(image: Image.Image, pixels: int) -> Image.Image:
    return Image.fromarray(np.roll(np.asarray(image), (pixels, pixels), axis=(0, 1)))


#: whole-image changes on top of the right edit (each is a defect: `over_edited`)
GLOBAL: dict[str, Variant] = {
    "tone+10": lambda image: _add(image, (10, 10, 10)),
    "colour_cast": lambda image: _add(image, (12, 0, -12)),
    "gamma0.8": lambda image: _gamma(image, 0.8),
    "re-render": lambda image: _jpeg(_add(_blur(1.0)(image), (8, 8, 8)), 85),
}


def photo_like(rng: np.random.Generator, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A smooth picture with soft shapes and fine grain: what a photograph's statistics roughly look like."""
    width, height = size
    field = rng.integers(40, 220, (4, 5, 3)).astype(np.uint8)
    image = Image.fromarray(field).resize((width, height), BICUBIC)
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 7))):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(12, 60))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse([x - r, y - r // 2, x + r, y + r // 2], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    grain = rng.normal(0, 5, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + grain, 0, 255).astype(np.uint8))


def records(count: int, seed: int) -> Iterator[tuple[str, str, bytes, dict[str, Any], dict[str, Any]]]:
    """(group, style, source png, program, meta): scene records, and every fifth a generic one (noise or
    photo-like, alternately)."""
    rng = random.Random(seed)
    for index in range(count):
        if index % 5 == 4:
            picture_rng = np.random.default_rng(index)
            if index % 10 == 4:
                noise = picture_rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
                group, picture = "generic/noise", Image.fromarray(noise)
            else:
                group, picture = "generic/photo", photo_like(picture_rng)
            answer = rng.choice(["7", "12", "red", "blue", "yes", "EXIT", "a red umbrella"])
            plan = draw_plan(seed, f"g{index}", "others", answer).model_dump()
            program = generic_program("What is it?", answer, "others", picture.size, rng, plan=plan)
            yield group, plan["style"], _png(picture), program, {}
            continue
        category = SCENE_CATEGORIES[index % len(SCENE_CATEGORIES)]
        scene, _, answer, spec = generate_vqa(rng, category, size=256)
        plan = draw_plan(seed, f"s{index}", category, answer).model_dump()
        try:
            program = scene_program(scene, spec, rng, avoid=answer, plan=plan, nested_rate=0.3)
        except ValueError:
            continue
        meta = {"world": "scenes", "scene": scene.model_dump(mode="json"), "question_spec": spec}
        yield "scenes", plan["style"], render_png(scene), program, meta


def board_records(count: int, seed: int) -> Iterator[tuple[str, str, bytes, dict[str, Any], dict[str, Any]]]:
    """Scene records of the math category only: the smallest honest edits of the world (the answer written in
    place of a "?" on a board, e.g. "?" -> "1", a few dozen pixels of 1-px strokes)."""
    rng = random.Random(f"boards/{seed}")
    for index in range(count):
        scene, _, answer, spec = generate_vqa(rng, "math", size=256)
        plan = draw_plan(seed, f"b{index}", "math", answer).model_dump()
        try:
            program = scene_program(scene, spec, rng, avoid=answer, plan=plan, nested_rate=0.3)
        except ValueError:
            continue
        meta = {"world": "scenes", "scene": scene.model_dump(mode="json"), "question_spec": spec}
        yield "scenes/boards", plan["style"], render_png(scene), program, meta


def _image(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def calibrate(count: int, seed: int) -> dict[str, Any]:
    limits = pixel_gates.GateLimits()
    honest: dict[str, Counter] = defaultdict(Counter)
    caught: dict[str, Counter] = defaultdict(Counter)
    judge_left: dict[str, Counter] = defaultdict(Counter)
    margins: dict[str, list[float]] = defaultdict(list)
    failures: list[str] = []

    def gate(source: bytes, edited: Image.Image, region: Any, style: str) -> tuple[Any, Any]:
        measures = pixel_gates.measure(source, edited, region, limits)
        return pixel_gates.verdict(measures, limits, style), measures

    def tally(cell: Counter, failed: Any) -> None:
        cell["n"] += 1
        if failed is None:
            cell["passed"] += 1
        else:
            cell[failed.reason] += 1
            cell[f"by:{failed.gate}"] += 1

    for group, style, source, program, meta in itertools.chain(
        records(count, seed), board_records(count // 3, seed)
    ):
        region = edit_region(np.asarray(_image(source)), program, meta)
        good = _image(expected_edited_png(source, program, meta))
        noises = NOISE_ON_NOISE if group == "generic/noise" else tuple(NOISE)
        for name in noises:
            failed, m = gate(source, NOISE[name](good), region, style)
            tally(honest[f"{group}:{style}"], failed)
            margins["honest_peak"].append(m.peak)
            margins[f"honest_px:{style}"].append(m.changed_px)
            margins[f"share:{style}"].append(m.changed_share)
            if m.outside is not None:
                margins["honest_outside"].append(m.outside)
            if failed:
                failures.append(f"honest {group}/{style}/{name}: {failed.detail} {m.as_dict()}")
        if group != "generic/noise":
            for name, harsh in HARSH.items():
                tally(
                    judge_left[f"honest edit, {name} (rejected)"], gate(source, harsh(good), region, style)[0]
                )
                tally(
                    judge_left[f"unchanged, {name} (caught)"],
                    gate(source, harsh(_image(source)), region, style)[0],
                )
        for flaw in ("unchanged", "collateral_change"):
            flawed, applied = apply_flaw(
                source, program, meta, flaw, random.Random(f"{seed}/{len(margins['honest_peak'])}")
            )
            if applied != flaw:
                continue
            for name in noises:
                edited = NOISE[name](_image(flawed))
                failed, m = gate(source, edited, region, style)
                tally(caught[flaw], failed)
                if flaw == "unchanged":
                    margins["unchanged_peak"].append(m.peak)
                elif m.outside is not None:
                    margins["collateral_outside"].append(m.outside)
                if failed is None:
                    failures.append(f"missed {flaw} {group}/{style}/{name}: {m.as_dict()}")
                if flaw == "collateral_change":  # as a pipeline without an edit program sees it
                    tally(
                        judge_left["collateral_change, region unknown"], gate(source, edited, None, style)[0]
                    )
        if group != "generic/noise":
            for name, change in GLOBAL.items():  # as a pipeline without an edit program sees them: no region
                failed, m = gate(source, change(good), None, style)
                tally(caught[f"whole image: {name}"], failed)
                if failed is None:
                    failures.append(f"missed whole-image {name} {group}/{style}: {m.as_dict()}")
            for name, bad in (
                ("speck instead of the edit", _speck(_image(source))),
                ("the edit plus the floor repainted (38 %)", _floor_repaint(good)),
            ):
                for noise in noises:  # as a pipeline without an edit program sees them: no region
                    failed, m = gate(source, NOISE[noise](bad), None, style)
                    if name.startswith("speck") and not limits.speck_limit(style):
                        # render: a written digit is as small as a speck; the check is off there
                        tally(judge_left[f"{name}, style {style} (check off)"], failed)
                        continue
                    tally(caught[name], failed)
                    if name.startswith("speck"):
                        margins["speck_px"].append(m.changed_px)
                    if failed is None:
                        failures.append(f"missed {name} {group}/{style}/{noise}: {m.as_dict()}")
            for pixels in (1, 2):
                shifted = gate(source, _translate(good, pixels), None, style)[0]
                tally(judge_left[f"whole image: translate{pixels}px, {group}"], shifted)
    return {
        "honest": honest,
        "caught": caught,
        "judge_left": judge_left,
        "margins": {
            k: (min(v) if k.startswith(("honest_peak", "honest_px", "collateral")) else max(v))
            for k, v in margins.items()
        },
        "failures": failures,
        "limits": limits,
    }


def synth_check(records: int, seed: int) -> dict[str, Any]:
    """`uniedit synth` (default pipeline: the builtin editor errs 15 % of the time) on `records` records; every
    record a gate rejected is compared with its program's expected edit: a rejected edit pixel-identical to a
    correct edit that changes the image would be an honest edit lost."""
    import json
    import subprocess
    import tempfile

    import pyarrow.parquet as pq

    from benchmarks.harness import REPO, repo_env

    with tempfile.TemporaryDirectory(prefix="uniedit-gates-") as tmp:
        out = Path(tmp) / "run"
        proc = subprocess.run(
            [sys.executable, "-m", "uniedit_synth.cli", "synth", "--out", str(out), "--limit", str(records),
             "--seed", str(seed), "--engine", "inline", "--no-progress"],
            cwd=REPO, env=repo_env(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"uniedit synth failed:\n{proc.stderr[-2000:]}")
        stats = json.loads((out / "stats.json").read_text())
        gated: Counter = Counter()
        honest_lost = genuine_no_op_programs = 0
        for path in sorted((out / "rejects").glob("shard-*.parquet")):
            for row in pq.read_table(path).to_pylist():
                if row["reject_reason"] not in ("no_op_edit", "over_edited"):
                    continue
                gated[row["reject_reason"]] += 1
                program, meta = (json.loads(row[c]) for c in ("edit_program", "record_meta"))  # JSON columns
                source = row["source_image"]["bytes"]
                expected = _image(expected_edited_png(source, program, meta))
                if np.array_equal(np.asarray(expected), np.asarray(_image(source))):
                    genuine_no_op_programs += 1  # the program itself changes nothing: a no-op by construction
                elif np.array_equal(np.asarray(expected), np.asarray(_image(row["edited_image"]["bytes"]))):
                    honest_lost += 1
    return {
        "stats": stats,
        "gated": gated,
        "honest_lost": honest_lost,
        "no_op_programs": genuine_no_op_programs,
    }


def _gates(cell: Counter) -> str:
    return ", ".join(f"{k[3:]} {v}" for k, v in sorted(cell.items()) if k.startswith("by:")) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=150, help="records (every fifth generic; default 150)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--synth", type=int, default=400, help="records of the synth check (0: skip; default 400)"
    )
    parser.add_argument("--show-failures", action="store_true")
    args = parser.parse_args()
    out = calibrate(args.records, args.seed)
    limits = out["limits"]
    print(f"gate defaults: no_op_delta {limits.no_op_delta:g}, max_changed_share {limits.max_changed_share}, "
          f"shift_delta {limits.shift_delta:g}, spread_share {limits.spread_share:g}, "
          f"outside_delta {limits.outside_delta:g}, min_changed_px {limits.min_changed_px}")  # fmt: skip
    print(f"noise variants per honest edit: {len(NOISE)} ({', '.join(NOISE)}); on white noise: "
          f"{', '.join(NOISE_ON_NOISE)}\n")  # fmt: skip
    print(
        f"{'honest edits (group:style)':44} {'pairs':>6} {'passed':>7} {'no_op_edit':>11} {'over_edited':>12}"
    )
    for key in sorted(out["honest"]):
        cell = out["honest"][key]
        print(
            f"{key:44} {cell['n']:>6} {cell['passed']:>7} {cell['no_op_edit']:>11} {cell['over_edited']:>12}"
        )
    print(
        f"\n{'defective edits':44} {'pairs':>6} {'caught':>7} {'no_op_edit':>11} {'over_edited':>12}  by gate"
    )
    for key in sorted(out["caught"]):
        cell = out["caught"][key]
        print(f"{key:44} {cell['n']:>6} {cell['n'] - cell['passed']:>7} {cell['no_op_edit']:>11} "
              f"{cell['over_edited']:>12}  {_gates(cell)}")  # fmt: skip
    print("\nnot required of the gates (for information; what they miss goes to the judge):")
    for key in sorted(out["judge_left"]):
        cell = out["judge_left"][key]
        print(f"{key:44} {cell['n']:>6} {cell['n'] - cell['passed']:>7} {cell['no_op_edit']:>11} "
              f"{cell['over_edited']:>12}  {_gates(cell)}")  # fmt: skip
    m = out["margins"]
    print(f"\nlocal change: honest edits >= {m['honest_peak']:.1f}, unchanged (any noise) <= "
          f"{m['unchanged_peak']:.1f}; no_op_delta {limits.no_op_delta:g}")  # fmt: skip
    print(f"outside a known edit region: honest edits <= {m['honest_outside']:.1f}, collateral changes >= "
          f"{m['collateral_outside']:.1f}; outside_delta {limits.outside_delta:g}")  # fmt: skip
    shares = ", ".join(f"{k[6:]} {v:.1%}" for k, v in sorted(m.items()) if k.startswith("share:"))
    print(f"changed area (UniWorld mask), largest honest edit per style: {shares}; max_changed_share "
          f"{limits.max_changed_share}")  # fmt: skip
    fewest = ", ".join(f"{k[10:]} {v}" for k, v in sorted(m.items()) if k.startswith("honest_px:"))
    print(f"changed pixels (local change >= no_op_delta, working px), fewest of an honest edit per style: "
          f"{fewest}; specks (styles where the check is on) <= {m.get('speck_px')}; min_changed_px "
          f"{limits.min_changed_px}")  # fmt: skip
    print(f"honest pairs rejected: {sum(c['n'] - c['passed'] for c in out['honest'].values())}; "
          f"defective pairs missed: {sum(c['passed'] for c in out['caught'].values())}")  # fmt: skip
    if args.synth:
        check = synth_check(args.synth, args.seed)
        st = check["stats"]
        print(f"\nuniedit synth, default pipeline (builtin editor errs 15 %): {args.synth} records -> "
              f"{st['accepted']} accepted; rejected by the gates: {dict(check['gated'])}")  # fmt: skip
        print(f"  of those, the correct edit (changing the image) rejected: {check['honest_lost']}; programs "
              f"whose correct edit changes nothing: {check['no_op_programs']}")  # fmt: skip
        print(f"  reject reasons: {st['reject_reasons']}")
    if args.show_failures:
        print("\n".join(out["failures"][:40]))


if __name__ == "__main__":
    main()
