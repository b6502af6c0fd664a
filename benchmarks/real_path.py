"""What keeps a bad pair out when the models are real: both model pipelines against servers that fail as GPT-4o,
gpt-image-1 and Gemini do, with a judge that accepts everything.

The source is offline-world scenes framed at 320x240 (4:3; written as a JSONL source with PNG files, plus
records whose question names the answer's word). Every record is dealt one failure kind from
`tests/fakes/real_models.py` (deterministically, by a hash of its id), the `openai` and `uniedit` pipelines run
as `uniedit synth` subprocesses through the real openai / google-genai SDKs against `RealisticOpenAI` /
`RealisticGemini` on 127.0.0.1, and the rows are read back: per kind, how many were played, which gate
caught them (reject_reason: reject_detail), how many were accepted; the good records kept; accepted edits
whose aspect ratio is not the source's (more than 3 % off).

Exit status 1 when a defective pair is accepted, a good record rejected, or an accepted edit has the wrong
aspect, in any pipeline — so this is a check. Kinds marked judge-only (a wrong object, with a judge that lies
about it) are shown but not part of the check: no code can tell them from a good pair.

    PYTHONPATH=. python benchmarks/real_path.py                    # both pipelines, 72 records
    PYTHONPATH=. python benchmarks/real_path.py --pipelines openai --records 40
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.harness import repo_env  # noqa: E402
from tests.fakes.real_models import KINDS, Case, Playbook, RealisticGemini, RealisticOpenAI  # noqa: E402

WIDTH, HEIGHT = 320, 240  # the source's 4:3 frame (scenes render square at HEIGHT, then widen)
PAD = (WIDTH - HEIGHT) // 2
ASPECT_TOLERANCE = 0.03
LABEL = "realpath"
KEY = "sk-fake-real-path"
MODELS = {"openai": ("openai/gpt-4o", "openai/gpt-image-1"),
          "uniedit": ("openai/gpt-4o-2024-11-20", "gemini/gemini-3-pro-image-preview")}  # fmt: skip

#: how many records each kind is dealt, per 62 scene records (scaled by --records); the answer-naming records are
#: built apart (their questions are written here)
DEAL: dict[str, int] = {
    "good": 8, "good_drift": 3, "square_output": 3, "no_image_then_ok": 2, "truncated_json": 2,
    "swapped_branches": 3, "noop_branch": 3, "same_edit_reworded": 3, "candidate_ignored": 2,
    "answer_form_outside": 3, "answer_leaked": 3, "rewriter_refusal": 2,
    "unchanged": 3, "reencoded": 3, "global_rerender": 3, "reframed": 3, "oversized_edit": 3, "tiny_region": 3,
    "editor_refusal": 2,
    "judge_contradicts": 3, "wrong_object": 2,
}  # fmt: skip
NAMING = 5  # records whose question names the answer's word


def _stable(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


# -- the source ------------------------------------------------------------------------------------------------
def widen(png: bytes) -> bytes:
    """A square scene as 320x240: the scene at 240 px with its wall and floor continued left and right (the
    background varies only by row, so the edge columns extend it seamlessly)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as opened:
        square = opened.convert("RGB")
    wide = Image.new("RGB", (WIDTH, HEIGHT))
    wide.paste(square.crop((0, 0, 1, HEIGHT)).resize((PAD, HEIGHT)), (0, 0))
    wide.paste(square.crop((HEIGHT - 1, 0, HEIGHT, HEIGHT)).resize((PAD, HEIGHT)), (PAD + HEIGHT, 0))
    wide.paste(square, (PAD, 0))
    out = io.BytesIO()
    wide.save(out, format="PNG")
    return out.getvalue()


def object_box(obj: Any) -> tuple[float, float, float, float]:
    from uniedit_synth.offline.render import object_anchor, object_width

    x, y, _ = object_anchor(obj, HEIGHT)
    w = object_width(obj, HEIGHT)
    x0, y0, x1, y1 = x - 0.55 * w + PAD, y - 1.15 * w, x + 0.6 * w + PAD, y + 0.05 * w
    return (x0 / WIDTH, y0 / HEIGHT, x1 / WIDTH, y1 / HEIGHT)


def describe(selector: dict[str, Any]) -> str:
    """How an instruction names the target: its attributes from the question (never the answer)."""
    if "relation" in selector:
        return "the object the question asks about"
    words = [selector[k] for k in ("size", "color", "material") if k in selector]
    return "the " + " ".join([*words, selector.get("shape", "object")])


def scene_cases(count: int) -> list[tuple[dict[str, Any], Case, bytes]]:
    """Scene records with unique questions: (row, case without kind, image)."""
    from uniedit_synth.offline.questions import select
    from uniedit_synth.offline.world import Scene
    from uniedit_synth.sources.scenes import ScenesSource

    source = ScenesSource(count=100000, image_size=HEIGHT, categories=["color", "shape", "count"], seed=7)
    out: list[tuple[dict[str, Any], Case, bytes]] = []
    seen: set[str] = set()
    index = 0
    while len(out) < count:
        record = source.record(index)
        index += 1
        if record.question in seen:
            continue
        seen.add(record.question)
        scene = Scene.model_validate(record.meta["scene"])
        query = record.meta["question_spec"]["query"]
        selector = query.get("ref") or query.get("filter") or {}
        targets = select(scene, selector) or scene.objects
        others = [o for o in scene.objects if o not in targets] or scene.objects
        key = f"s{len(out):03d}"
        row = {"id": key, "question": record.question, "answer": record.answer, "category": record.category}
        case = Case(record.question, record.answer, record.category, "good", object_box(targets[0]),
                    object_box(others[0]), describe(selector))
        out.append((row, case, record.image or b""))
    return out


def naming_cases(count: int) -> list[tuple[dict[str, Any], Case, bytes]]:
    """Records whose question names the answer's word through another object ("the small cube next to the
    red cylinder", answer red): good records the leak check must keep."""
    import random

    from uniedit_synth.offline.render import render_png
    from uniedit_synth.offline.world import generate_scene

    out: list[tuple[dict[str, Any], Case, bytes]] = []
    rng = random.Random("real-path/naming")
    while len(out) < count:
        scene = generate_scene(rng, size=HEIGHT)
        colour = len(out) % 2 == 0
        found = None
        for a in scene.objects:
            for b in scene.objects:
                if a is b:
                    continue
                if colour and a.color == b.color and a.shape != b.shape and sum(
                    o.size == a.size and o.shape == a.shape for o in scene.objects
                ) == 1:
                    question = f"What is the color of the {a.size} {a.shape} next to the {b.color} {b.shape}?"
                    found = (a, b, question, a.color, "color", f"the {a.size} {a.shape}")
                elif not colour and a.shape == b.shape and a.color != b.color and sum(
                    o.color == a.color for o in scene.objects
                ) == 1:
                    question = f"What is the shape of the {a.color} object near the {b.size} {b.shape}?"
                    found = (a, b, question, a.shape, "shape", f"the {a.color} object")
                if found:
                    break
            if found:
                break
        if not found:
            continue
        a, b, question, answer, category, ref = found
        key = f"n{len(out):03d}"
        row = {"id": key, "question": question, "answer": answer, "category": category}
        case = Case(question, answer, category, "question_names_answer", object_box(a), object_box(b), ref)
        out.append((row, case, render_png(scene)))
    return out


def predicted_conditional(record_id: str, row: dict[str, Any]) -> bool:
    """Whether the pipeline's plan for this record will be a conditional (the plan is a pure function)."""
    try:
        from uniedit_synth.method.logic import FULL_LOGIC
        from uniedit_synth.method.plan import draw_plan

        plan = draw_plan(0, record_id, row["category"], row["answer"], question=row["question"],
                         logic_settings=FULL_LOGIC)  # fmt: skip
        return plan.style == "conditional"
    except Exception:  # noqa: BLE001 - a changed plan API: the fake server stands in kinds per plan anyway
        return _stable(record_id) % 2 == 0


def deal(rows: list[dict[str, Any]], cases: list[Case]) -> None:
    """Give each scene record a kind: conditional-only kinds to records whose plan is a conditional."""
    total = sum(DEAL.values())
    scale = len(cases) / total
    slots = [k for k, n in DEAL.items() for _ in range(max(1, round(n * scale)))]
    conditional = [k for k in slots if KINDS[k].conditional]
    anywhere = [k for k in slots if not KINDS[k].conditional]
    order = sorted(range(len(cases)), key=lambda i: _stable(rows[i]["id"]))
    for i in order:
        is_conditional = predicted_conditional(f"{LABEL}/{rows[i]['id']}", rows[i])
        pool = conditional if is_conditional and conditional else anywhere or conditional
        cases[i].kind = pool.pop(0) if pool else "good"


def build_source(folder: Path, records: int) -> list[Case]:
    """Write `<folder>/realpath.jsonl` and its images; the cases the fake servers play."""
    naming = naming_cases(min(NAMING, max(1, records // 12)))
    scenes = scene_cases(records - len(naming))
    deal([r for r, _, _ in scenes], [c for _, c, _ in scenes])
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    cases = []
    for row, case, image in scenes + naming:
        path = folder / "images" / f"{row['id']}.png"
        path.write_bytes(widen(image))
        lines.append(json.dumps({**row, "image": f"images/{row['id']}.png"}))
        cases.append(case)
    (folder / f"{LABEL}.jsonl").write_text("\n".join(lines) + "\n")
    return cases


# -- running a pipeline -------------------------------------------------------------------------------------
def pipeline_args(pipeline: str, openai_url: str, gemini_url: str) -> list[str]:
    """Point a model pipeline's backends at the fakes and lift its production rate limits."""
    sets = {
        "openai": {"gpt4o": openai_url, "gpt-image": openai_url},
        "uniedit": {"gpt4o": openai_url, "nano-pro": gemini_url},
    }[pipeline]
    args: list[str] = []
    for backend, url in sets.items():
        args += ["--set", f"backends.{backend}.base_url={url}", "--set", f"backends.{backend}.api_key_env=UE_RP_KEY"]
    for bucket in MODELS[pipeline]:
        args += ["--set", f"limits.rate_limits.{bucket}.rpm=null", "--set", f"limits.rate_limits.{bucket}.tpm=null"]
    return args + ["--set", "retry.initial_s=0.05", "--set", "retry.max_s=0.2", "--set", "retry.jitter_s=0"]


def run_pipeline(pipeline: str, source: Path, out: Path, cases: list[Case]) -> tuple[list[dict], dict, float]:
    """`uniedit synth` against fresh realistic fakes; every output row and what the fakes played."""
    playbook = Playbook(cases)
    with RealisticOpenAI(playbook, api_key=KEY) as gpt, RealisticGemini(playbook, api_key=KEY) as gemini:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "uniedit_synth.cli", "synth", "--pipeline", pipeline, "--source", str(source),
             "--out", str(out), "--engine", "inline", "--no-progress",
             *pipeline_args(pipeline, gpt.base_url, gemini.base_url)],
            capture_output=True, text=True, env=repo_env({"UE_RP_KEY": KEY}), timeout=1800, cwd=REPO,
        )  # fmt: skip
        elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"real_path: `uniedit synth --pipeline {pipeline}` failed (exit {proc.returncode})")
    return read_rows(out), dict(playbook.played), elapsed


def read_rows(out: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows = []
    for kind in ("data", "rejects"):
        for path in sorted((out / kind).glob("shard-*.parquet")):
            columns = ["id", "original_question", "accepted", "reject_reason", "reject_detail", "edited_image",
                       "source_image"]  # fmt: skip
            table = pq.read_table(path)
            rows += table.select([c for c in columns if c in table.column_names]).to_pylist()
    return rows


def image_size(struct: Any) -> tuple[int, int] | None:
    data = struct.get("bytes") if isinstance(struct, dict) else struct
    if not data:
        return None
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size


# -- the table ----------------------------------------------------------------------------------------------
_STAGE_PREFIX = re.compile(r"^(rewrite|edit|judge|classify): ")
_PROVIDER_PREFIX = re.compile(r"^(openai|gemini|openai-compatible) [\w.\-]+: ")
_DIGITS = re.compile(r"\d+(\.\d+)?")


def gate_of(row: dict[str, Any]) -> str:
    """`reject_reason (the gist of reject_detail)`: the stage and provider prefixes off, numbers as #, the
    first clause, at most eight words (so rows caught by one rule count together)."""
    reason = row.get("reject_reason") or "?"
    detail = _PROVIDER_PREFIX.sub("", _STAGE_PREFIX.sub("", (row.get("reject_detail") or "").strip()))
    detail = re.split(r"[:;(]| '", detail)[0].strip()
    detail = " ".join(_DIGITS.sub("#", detail).split()[:8])
    return f"{reason}" + (f" ({detail})" if detail else "")


def summarise(pipeline: str, rows: list[dict], played: dict[str, str], cases: list[Case]) -> dict[str, Any]:
    """Per kind: played, accepted, gates; the good kept; aspect mismatches; the failures of the check."""
    by_question = {c.question: c for c in cases}
    table: dict[str, dict[str, Any]] = defaultdict(lambda: {"played": 0, "accepted": 0, "gates": Counter()})
    aspect_bad = 0
    accepted = 0
    failures: list[str] = []
    for row in rows:
        case = by_question.get(row.get("original_question") or "")
        if case is None:
            continue
        kind = played.get(case.question, case.kind)
        cell = table[kind]
        cell["played"] += 1
        if row["accepted"]:
            cell["accepted"] += 1
            accepted += 1
            size = image_size(row.get("edited_image"))
            if size and abs((size[0] / size[1]) / (WIDTH / HEIGHT) - 1) > ASPECT_TOLERANCE:
                aspect_bad += 1
                failures.append(f"{pipeline}: {row['id']} accepted at {size[0]}x{size[1]} (source {WIDTH}x{HEIGHT})")
            if not KINDS[kind].good and not KINDS[kind].judge_only:
                failures.append(f"{pipeline}: defective pair accepted: {row['id']} ({kind})")
        else:
            cell["gates"][gate_of(row)] += 1
            if KINDS[kind].good:
                failures.append(f"{pipeline}: good record rejected: {row['id']} ({kind}: {gate_of(row)})")
    good_played = sum(c["played"] for k, c in table.items() if KINDS[k].good)
    good_kept = sum(c["accepted"] for k, c in table.items() if KINDS[k].good)
    return {"pipeline": pipeline, "table": dict(table), "rows": len(rows), "accepted": accepted,
            "aspect_mismatch": aspect_bad, "good_played": good_played, "good_kept": good_kept,
            "failures": failures}  # fmt: skip


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"**`{summary['pipeline']}` pipeline** — {summary['rows']} records, {summary['accepted']} accepted; "
        f"good records kept {summary['good_kept']}/{summary['good_played']}; accepted edits not at the source's "
        f"aspect ratio: {summary['aspect_mismatch']}/{summary['accepted']}",
        "",
        "| kind | what the models did | played | caught by (reject_reason (detail): n) | accepted |",
        "|---|---|---|---|---|",
    ]
    for name, kind in KINDS.items():
        cell = summary["table"].get(name)
        if cell is None:
            continue
        gates = "; ".join(f"{g}: {n}" for g, n in cell["gates"].most_common()) or "—"
        if kind.good:
            mark = " ✓" if cell["accepted"] == cell["played"] else " ✗ (good rejected)"
        elif kind.judge_only:
            mark = " (judge-only)"
        else:
            mark = " ✓" if cell["accepted"] == 0 else " ✗"
        tag = "good: " if kind.good else ""
        lines.append(f"| `{name}` | {tag}{kind.what} | {cell['played']} | {gates} | {cell['accepted']}{mark} |")
    return "\n".join(lines)


def combined(summaries: list[dict[str, Any]]) -> str:
    """One table over the pipelines: played and accepted per pipeline, the gates that caught each kind."""
    names = [s["pipeline"] for s in summaries]
    lines = [
        "| kind | role | played | caught by | accepted (" + " / ".join(names) + ") |",
        "|---|---|---|---|---|",
    ]
    for name, kind in KINDS.items():
        cells = [s["table"].get(name) for s in summaries]
        if not any(cells):
            continue
        played = " / ".join(str(c["played"] if c else 0) for c in cells)
        gates: Counter[str] = Counter()
        for cell in cells:
            gates.update(cell["gates"] if cell else {})
        caught = "; ".join(f"{g} ×{n}" for g, n in gates.most_common()) or "—"
        accepted = " / ".join(str(c["accepted"] if c else 0) for c in cells)
        role = "good" if kind.good else ("judge-only" if kind.judge_only else "defective")
        lines.append(f"| `{name}`: {kind.what} | {role} | {played} | {caught} | {accepted} |")
    kept = " / ".join(f"{s['good_kept']}/{s['good_played']}" for s in summaries)
    aspect = " / ".join(f"{s['aspect_mismatch']}/{s['accepted']}" for s in summaries)
    lines.append(f"| good records kept | | | | {kept} |")
    lines.append(f"| accepted edits not at the source's aspect (±3 %) | | | | {aspect} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=72, help="records per pipeline (default 72)")
    parser.add_argument("--pipelines", nargs="+", default=["openai", "uniedit"], choices=sorted(MODELS))
    parser.add_argument("--keep", type=Path, default=None, help="keep the source and runs under this folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the summaries as JSON here")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="real-path-")) if args.keep is None else args.keep
    workdir.mkdir(parents=True, exist_ok=True)
    cases = build_source(workdir / "source", args.records)
    summaries = []
    for pipeline in args.pipelines:
        out = workdir / f"run-{pipeline}"
        rows, played, elapsed = run_pipeline(pipeline, workdir / "source" / f"{LABEL}.jsonl", out, cases)
        summary = summarise(pipeline, rows, played, cases)
        summary["seconds"] = round(elapsed, 1)
        summaries.append(summary)
        print(markdown(summary))
        print(f"\n({pipeline}: {elapsed:.0f} s)\n", flush=True)
    failures = [f for s in summaries for f in s["failures"]]
    if len(summaries) > 1:
        print(combined(summaries) + "\n")
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=1, default=lambda o: dict(o)))
    print(f"{len(failures)} failure(s) of the check" + (":" if failures else ""))
    for failure in failures[:40]:
        print(f"  {failure}")
    if len(failures) > 40:
        print(f"  … and {len(failures) - 40} more")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
