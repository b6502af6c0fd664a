"""Evaluate tuned Janus-Pro editors: edit every validation source, score the edits with the pipeline's judge.

For each validation sample (an ``hf`` export's ``validation`` split, or the rows of a run whose ids the export's
stable id hash puts in validation at ``--val-fraction``) the model edits the source image with the sample's
instruction (examples/edit_with_janus_pro.py: the fine-tune's conditioning, classifier-free guidance), and the
pipeline's own judge stage (uniedit_synth.stages.judge: the same prompt, backend, thresholds, response cache,
retries) scores the edit against the source: instruction following, visual quality, coherence. Any judge backend
the pipeline can use works (builtin offline, OpenAI / Gemini, an OpenAI-compatible local VLM). The builtin judge
checks the edit program the builtin rewriter wrote (rows carry it), so on offline-world data its figures are
exact.

Writes to ``--out``:

* ``eval.json`` — per model: mean of each score and of their aggregate, the share of edits passing every judge
  threshold, and the same per task category; plus the judge's backend/model/thresholds and the sample ids.
* ``index.html`` (+ ``report.css``, ``images/``) — a gallery in the report's look: per sample the source, the
  dataset's reference edit and each model's edit with its scores, models side by side (``--baseline``).

Usage::

    python examples/eval_edits.py --model checkpoints/janus-pro-uniedit/model --baseline deepseek-community/Janus-Pro-1B \\
        --data exports/uniedit-hf --split val --out evals/janus-pro-uniedit
    python examples/eval_edits.py --model /tmp/janus-tiny/model --data runs/demo --val-fraction 0.2 --out /tmp/eval

``--pipeline`` picks the judge (default: the run's own config from its run.json, else the default offline
pipeline). The figures are what the judge says; nothing is adjusted.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edit_with_janus_pro as editor  # noqa: E402
import finetune_janus_pro as finetune  # noqa: E402

from uniedit_synth.core.config import PipelineConfig, load_pipeline  # noqa: E402
from uniedit_synth.run.cache import ResponseCache  # noqa: E402
from uniedit_synth.engine.calls import ModelCaller  # noqa: E402
from uniedit_synth.engine.coordinator import Coordinator  # noqa: E402
from uniedit_synth.export.selection import split_of  # noqa: E402
from uniedit_synth.method.masks import to_rgb  # noqa: E402
from uniedit_synth.core.records import VQARecord  # noqa: E402
from uniedit_synth.report.assets import REPORT_CSS  # noqa: E402
from uniedit_synth.stages.base import Rejected, StageContext, WorkItem  # noqa: E402
from uniedit_synth.stages.judge import JudgeStage  # noqa: E402

SCORES = ("instruction_following", "visual_quality", "coherence")
COLUMNS = (
    "id",
    "task_category",
    "edit_instruction",
    "original_question",
    "original_answer",
    "process_answer",
    "source_image",
    "edited_image",
    "edit_program",
    "record_meta",
)


@dataclass
class Row:
    id: str
    category: str
    instruction: str
    question: str
    answer: str
    process_answer: str
    source: bytes
    reference: bytes | None
    edit_program: dict[str, Any] | None
    meta: dict[str, Any]


@dataclass
class Verdict:
    scores: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    passed: bool = False
    analysis: str = ""
    error: str | None = None


def _json(value: Any) -> Any:
    if value is None or isinstance(value, dict):
        return value
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return None


def validation_rows(data: Path, split: str, val_fraction: float) -> list[Row]:
    """The validation rows of an hf export (data/validation-*.parquet) or of a run (ids hashed as the export)."""
    if (data / "data").is_dir() and sorted((data / "data").glob("shard-*.parquet")):
        files = sorted((data / "data").glob("shard-*.parquet"))
        keep = lambda sample_id: split_of(sample_id, val_fraction) == "validation"  # noqa: E731
        if val_fraction <= 0:
            raise finetune.TrainingError(
                "a run dir has no split of its own: pass --val-fraction (e.g. 0.05), as `uniedit export`"
            )
    else:
        name = "validation" if split in ("val", "validation") else split
        files = sorted((data / "data").glob(f"{name}-*.parquet"))
        keep = lambda sample_id: True  # noqa: E731
        if not files:
            raise finetune.TrainingError(
                f"no {name} split under {data}/data: export with --val-fraction, or pass a run dir"
            )
    rows = []
    for path in files:
        parquet = pq.ParquetFile(path)
        columns = [name for name in COLUMNS if name in parquet.schema_arrow.names]
        for raw in parquet.read(columns=columns).to_pylist():
            if not keep(raw["id"]) or not (raw.get("source_image") or {}).get("bytes"):
                continue
            rows.append(
                Row(
                    id=raw["id"],
                    category=raw.get("task_category") or "others",
                    instruction=raw.get("edit_instruction") or "",
                    question=raw.get("original_question") or "",
                    answer=raw.get("original_answer") or "",
                    process_answer=raw.get("process_answer") or "",
                    source=raw["source_image"]["bytes"],
                    reference=(raw.get("edited_image") or {}).get("bytes"),
                    edit_program=_json(raw.get("edit_program")),
                    meta=_json(raw.get("record_meta")) or {},
                )
            )
    return sorted(rows, key=lambda row: row.id)


def judge_config(args: argparse.Namespace) -> PipelineConfig:
    if args.pipeline:
        return load_pipeline(args.pipeline)
    run_json = args.data / "run.json"
    if run_json.is_file():
        config = json.loads(run_json.read_text()).get("config")
        if isinstance(config, dict):
            return PipelineConfig.model_validate(config)
    return load_pipeline("default")


class Judge:
    """The pipeline's judge stage with its own response cache under --out (reruns repeat no paid call)."""

    def __init__(self, config: PipelineConfig, cache_dir: Path) -> None:
        from uniedit_synth.backends.registry import create_backend

        spec = config.stages.judge
        self.backend = create_backend(spec.backend, config.backends[spec.backend], "text", seed=config.seed)
        coordinator = Coordinator(
            rate_limits={key: value.model_dump() for key, value in config.limits.rate_limits.items()},
            max_cost_usd=config.limits.max_cost_usd,
        )
        caller = ModelCaller(
            "judge",
            self.backend,
            cache=ResponseCache(cache_dir),
            coordinator=coordinator,
            prices=config.prices,
            retry=config.retry,
            rate_limited=self.backend.provider != "builtin",
        )
        self.model = config.backends[spec.backend].model
        self.stage = JudgeStage(
            StageContext(config=config, callers={"judge": caller}, models={"judge": self.model})
        )
        self.concurrency = max(1, spec.concurrency)
        self.description = {
            "backend": spec.backend,
            "type": config.backends[spec.backend].type,
            "model": self.model,
            "thresholds": dict(spec.thresholds),
        }

    async def score(self, rows: list[Row], edits: list[bytes]) -> list[Verdict]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(row: Row, edited: bytes) -> Verdict:
            record = VQARecord(
                id=row.id,
                source="eval",
                image=row.source,
                question=row.question,
                answer=row.answer,
                category=row.category,
                meta=row.meta,
            )
            item = WorkItem(
                record=record,
                shard=0,
                image=row.source,
                task_category=row.category,
                process_answer=row.process_answer,
                instruction=row.instruction,
                edit_program=row.edit_program,
                edited_image=edited,
            )
            async with gate:
                try:
                    passed = await self.stage(item)
                except Rejected as exc:
                    return Verdict(error=exc.detail or exc.reason.value)
            return Verdict(dict(item.scores), item.score, passed, item.analysis or "")

        try:
            return list(
                await asyncio.gather(*(one(row, edit) for row, edit in zip(rows, edits, strict=True)))
            )
        finally:
            await self.backend.aclose()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def edit_all(location: str, rows: list[Row], args: argparse.Namespace) -> list[bytes]:
    device = torch.device(args.device)
    setup = finetune.load_model(location, device)
    setup.model.eval()
    edits: list[bytes] = []
    for start in range(0, len(rows), args.batch_size):
        chunk = rows[start : start + args.batch_size]
        sources = [to_rgb(row.source) for row in chunk]
        images = editor.edit_images(
            setup,
            sources,
            [row.instruction for row in chunk],
            cfg_weight=args.cfg_weight,
            temperature=args.temperature,
            seed=args.seed + start,
        )
        edits.extend(png_bytes(image) for image in images)
    return edits


def summarise(rows: list[Row], verdicts: list[Verdict]) -> dict[str, Any]:
    def block(pairs: list[tuple[Row, Verdict]]) -> dict[str, Any]:
        judged = [v for _row, v in pairs if v.error is None]
        means = {
            name: round(statistics.fmean(v.scores[name] for v in judged), 4) if judged else None
            for name in SCORES
        }
        return {
            "samples": len(pairs),
            "judged": len(judged),
            "judge_failed": len(pairs) - len(judged),
            "mean": {
                **means,
                "score": round(statistics.fmean(v.score for v in judged), 4) if judged else None,
            },
            "pass_rate": round(sum(v.passed for v in judged) / len(pairs), 4) if pairs else None,
        }

    pairs = list(zip(rows, verdicts, strict=True))
    categories = sorted({row.category for row in rows})
    return {
        **block(pairs),
        "per_category": {cat: block([p for p in pairs if p[0].category == cat]) for cat in categories},
    }


# -- the gallery ------------------------------------------------------------------------------------------------


def _shot(src: str | None, caption: str) -> str:
    inner = (
        f'<span class="thumb"><img src="{escape(src)}" alt=""></span>'
        if src
        else '<span class="noimg">none</span>'
    )
    return f'<figure class="shot">{inner}<figcaption><span>{escape(caption)}</span></figcaption></figure>'


def _scores(verdict: Verdict) -> str:
    if verdict.error is not None:
        return f'<div class="reject"><b>judge failed</b> {escape(verdict.error)}</div>'
    cells = []
    for name in SCORES:
        value = verdict.scores.get(name, 0.0)
        width = max(0.0, min(100.0, value * 20))
        cells.append(
            f'<span class="name">{escape(name.replace("_", " "))}</span><span class="meter"><i class="w{round(width)}">'
            f'</i></span><span class="val">{value:g}</span>'
        )
    badge = (
        '<span class="badge ok">passes</span>' if verdict.passed else '<span class="badge bad">fails</span>'
    )
    analysis = (
        f'<details class="analysis"><summary>judge analysis</summary><p>{escape(verdict.analysis)}</p></details>'
        if verdict.analysis
        else ""
    )
    return f'<div class="tags">{badge}</div><div class="scores">{"".join(cells)}</div>{analysis}'


def _meter_css() -> str:
    """Meter widths as classes: the page's CSP forbids inline styles, as the report's does."""
    return "\n".join(f".scores .meter i.w{n} {{ width: {n}%; }}" for n in range(101))


def write_gallery(out: Path, rows: list[Row], results: list[dict[str, Any]], title: str) -> None:
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    (out / "report.css").write_text(
        REPORT_CSS + "\n" + _meter_css() + "\n.media.n3 { grid-template-columns: repeat(3, 1fr); }"
        "\n.media.n4 { grid-template-columns: repeat(4, 1fr); }\n"
    )
    kpis = []
    for result in results:
        summary = result["summary"]
        mean = summary["mean"]
        kpis.append(
            f'<div class="kpi"><div class="k">{escape(result["label"])}: pass rate</div>'
            f'<div class="v">{summary["pass_rate"]:.0%}</div><div class="s">IF {mean["instruction_following"]} · '
            f"VQ {mean['visual_quality']} · CO {mean['coherence']} · {escape(result['model'])}</div></div>"
        )
    cards = []
    for index, row in enumerate(rows):
        stem = f"{index:05d}"
        (images / f"{stem}-source.png").write_bytes(png_bytes(to_rgb(row.source)))
        shots = [_shot(f"images/{stem}-source.png", "source")]
        if row.reference:
            (images / f"{stem}-reference.png").write_bytes(png_bytes(to_rgb(row.reference)))
            shots.append(_shot(f"images/{stem}-reference.png", "reference edit"))
        verdict_html = []
        for result in results:
            name = f"{stem}-{result['label']}.png"
            (images / name).write_bytes(result["edits"][index])
            shots.append(_shot(f"images/{name}", result["label"]))
            verdict_html.append(
                f'<div class="field-label">{escape(result["label"])}</div>{_scores(result["verdicts"][index])}'
            )
        cards.append(
            f'<article class="sample"><div class="media n{len(shots)}">{"".join(shots)}</div><div class="body">'
            f'<div class="tags"><span class="chip">{escape(row.category)}</span><span class="sid">{escape(row.id)}'
            f'</span></div><div class="field-label">instruction</div><p class="instruction">{escape(row.instruction)}'
            f"</p>{''.join(verdict_html)}</div></article>"
        )
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'self'; img-src 'self'\">"
        f'<title>{escape(title)}</title><link rel="stylesheet" href="report.css"></head><body>'
        f'<header class="top"><div class="brand">uniedit-synth · edit evaluation</div><h1>{escape(title)}</h1></header>'
        f'<main><section><h2 class="section-title">Judge verdicts</h2><div class="kpis">{"".join(kpis)}</div></section>'
        f'<section><h2 class="section-title">Validation edits</h2><div class="gallery">{"".join(cards)}</div></section>'
        "</main></body></html>\n"
    )
    (out / "index.html").write_text(page, encoding="utf-8")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", required=True, help="a model dir saved by finetune_janus_pro.py, or a hub id"
    )
    parser.add_argument(
        "--baseline", default=None, help="a second model, evaluated side by side (e.g. untuned)"
    )
    parser.add_argument(
        "--data", required=True, type=Path, help="an `uniedit export --format hf` dir or a run dir"
    )
    parser.add_argument("--split", default="val", help="the export's split (val/validation, or train)")
    parser.add_argument(
        "--val-fraction", type=float, default=0.0, help="for a run dir: the export's id-hash share"
    )
    parser.add_argument(
        "--pipeline", default=None, help="pipeline YAML whose judge scores (default: the run's)"
    )
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--limit", type=int, default=None, help="evaluate the first N validation samples (by id)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images edited at once")
    parser.add_argument("--cfg-weight", type=float, default=5.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    rows = validation_rows(args.data, args.split, args.val_fraction)[: args.limit]
    if not rows:
        raise finetune.TrainingError(f"no validation samples in {args.data}")
    config = judge_config(args)
    args.out.mkdir(parents=True, exist_ok=True)
    models = [("model", args.model)] + ([("baseline", args.baseline)] if args.baseline else [])
    results = []
    for label, location in models:
        edits = edit_all(location, rows, args)
        judge = Judge(config, args.out / "cache")
        verdicts = asyncio.run(judge.score(rows, edits))
        results.append(
            {
                "label": label,
                "model": str(location),
                "edits": edits,
                "verdicts": verdicts,
                "summary": summarise(rows, verdicts),
            }
        )
    report = {
        "data": str(args.data),
        "split": "validation",
        "samples": len(rows),
        "ids": [row.id for row in rows],
        "judge": judge.description,
        "sampling": {"cfg_weight": args.cfg_weight, "temperature": args.temperature, "seed": args.seed},
        "models": {result["label"]: {"model": result["model"], **result["summary"]} for result in results},
        "per_sample": {
            result["label"]: [
                {
                    "id": row.id,
                    "category": row.category,
                    **verdict.scores,
                    "score": verdict.score,
                    "passed": verdict.passed,
                    "error": verdict.error,
                    "analysis": verdict.analysis,
                }
                for row, verdict in zip(rows, result["verdicts"], strict=True)
            ]
            for result in results
        },
    }
    (args.out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    write_gallery(args.out, rows, results, f"{args.data.name}: {' vs '.join(str(m) for _l, m in models)}")
    for result in results:
        summary = result["summary"]
        print(
            f"{result['label']}: {summary['judged']}/{summary['samples']} judged, mean {summary['mean']}, "
            f"pass rate {summary['pass_rate']}"
        )
    print(f"wrote {args.out / 'eval.json'} and {args.out / 'index.html'}")
    return report


if __name__ == "__main__":
    finetune.run_cli(main, sys.argv[1:])
