"""`uniedit eval`: edit every item of a benchmark (or an export's split) with one or two models, judge the edits
by the benchmark's own protocol, and write eval.json, the edits and a side-by-side page under `--out`.

The out folder is also the resume state: every edit and judge reply sits in `<out>/cache/` under its request
key, so running the same command again makes no call and writes the same figures.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..backends.base import BadRequest, MalformedReply, NoImageReply, SafetyBlocked
from ..core.config import PipelineConfig, load_pipeline
from ..core.errors import UniEditError
from ..core.ledger import Ledger
from ..engine.batch import BatchPending, BatchRunner, BatchState, StageBatch
from ..engine.calls import BudgetExhausted
from ..run.cache import ResponseCache
from ..run.fs import as_run_fs
from ..stages.judge import JudgeStage
from .calls import (
    BackendEditor,
    Editor,
    EvalConfigError,
    PipelineJudge,
    ProtocolJudge,
    Verdict,
    coordinator_for,
)
from .items import EvalItem, EvalSet, load_eval_set
from .presets import protocol_for
from .stats import means, paired, summarise

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


class EvalOptions(BaseModel):
    """What `uniedit eval` was asked: the boundary between the CLI (or the API) and the evaluation."""

    model_config = ConfigDict(extra="forbid")

    bench: str
    out: Path
    model: str | None = None
    baseline: str | None = None
    pipeline: str | None = None
    judge: str | None = None
    preset: str | None = None
    limit: int | None = None
    concurrency: int = 8
    #: judge calls as provider batch jobs (half price, hours): `stages.judge.batch` sets polling and sizes
    batch: bool = False
    overrides: dict[str, Any] = {}


class EvalBudgetExhausted(UniEditError):
    """The pipeline's limits.max_cost_usd is spent: what was judged is cached, the rest is not."""

    exit_code = 3


def _config(options: EvalOptions, evalset: EvalSet) -> PipelineConfig:
    if options.pipeline:
        return load_pipeline(options.pipeline, options.overrides)
    if evalset.run_config is not None:  # an export of a run: that run's own pipeline judges it
        config = PipelineConfig.model_validate(evalset.run_config)
        if options.overrides:
            from ..core.config import deep_merge

            config = PipelineConfig.model_validate(deep_merge(config.model_dump(), options.overrides))
        return config
    return load_pipeline("openai" if evalset.name != "export" else "default", options.overrides)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def png(data: bytes) -> bytes:
    """The image as PNG (edits keep their pixels; the page and the files are uniform)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
            return buffer.getvalue()
    except Exception:  # noqa: BLE001 - an undecodable edit is stored as returned
        return data


async def _evaluate_model(editor: Editor, judge: Any, items: list[EvalItem], out: Path, concurrency: int,
                          batch_runner: Any = None) -> tuple[list[dict[str, Any]], dict[str, float]]:
    gate = asyncio.Semaphore(max(1, concurrency))
    folder = out / "edits" / editor.label
    folder.mkdir(parents=True, exist_ok=True)
    totals = {"paid_calls": 0, "cached_calls": 0, "spent_usd": 0.0, "cost_usd": 0.0}

    async def one(index: int, item: EvalItem, ledger: Ledger) -> dict[str, Any]:
        row: dict[str, Any] = {"key": item.key, "category": item.category,
                               "extra": {k: _jsonable(v) for k, v in item.extra.items()
                                         if k not in ("edit_program", "record_meta")},
                               "figures": None, "error": None, "edit": None}
        async with gate:
            try:
                edited = await editor.edit(item, ledger)
            except (SafetyBlocked, BadRequest, MalformedReply, NoImageReply) as exc:
                row["error"] = f"edit_failed: {exc}"
                edited = None
            if edited is not None:
                name = f"edits/{editor.label}/{index:05d}.png"
                (out / name).write_bytes(png(edited))
                row["edit"] = name
                try:
                    verdict: Verdict = await judge.judge(item, edited, ledger)
                except BatchPending:
                    return row  # its judge calls wait in ledger.deferred for this wave's batch jobs
                row["figures"], row["error"] = verdict.figures, verdict.error
                row["judge_scores"], row["reasons"] = verdict.replies, verdict.reasons
        return row

    def count(ledger: Ledger) -> None:
        totals["paid_calls"] += sum(ledger.calls.values())
        totals["cached_calls"] += sum(ledger.cache_hits.values())
        totals["spent_usd"] += ledger.spent_now_usd
        totals["cost_usd"] += ledger.cost_usd

    rows: list[dict[str, Any]] = [{} for _ in items]
    todo = list(range(len(items)))
    try:
        while todo:  # one wave online; in batch mode a wave per judge round trip, replayed from the cache
            ledgers = {i: Ledger(owner=f"eval/{editor.label}/{items[i].key}") for i in todo}
            done = await asyncio.gather(*(one(i, items[i], ledgers[i]) for i in todo))
            for i, row in zip(todo, done, strict=True):
                rows[i] = row
            waiting = [i for i in todo if ledgers[i].deferred]
            for i in todo:
                if not ledgers[i].deferred:
                    count(ledgers[i])
            if not waiting:
                break
            wave = await batch_runner.run_wave(0, [c for i in waiting for c in ledgers[i].deferred])
            totals["batch_requests"] = totals.get("batch_requests", 0) + wave["requests"]
            totals["batch_jobs"] = totals.get("batch_jobs", 0) + wave["jobs"]
            totals["spent_usd"] += wave["spent_usd"]
            todo = waiting
    except BudgetExhausted:
        raise EvalBudgetExhausted(
            "limits.max_cost_usd is spent: what was judged so far is cached; raise the limit "
            "(--set limits.max_cost_usd=N) and run the same command again to finish"
        ) from None
    return rows, totals


def _headline(judge: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    if isinstance(judge, ProtocolJudge):
        return judge.protocol.headline(rows)
    summary = means(rows)
    return {"name": "share of edits passing every judge threshold", "value": summary.get("passed")}


def write_sources(out: Path, items: list[EvalItem]) -> None:
    folder = out / "edits" / "source"
    folder.mkdir(parents=True, exist_ok=True)
    for index, item in enumerate(items):
        path = folder / f"{index:05d}.png"
        if not path.is_file():
            path.write_bytes(png(item.source))


def run_eval(options: EvalOptions, editors: list[Editor] | None = None) -> dict[str, Any]:
    """Run an evaluation and write its files; `editors` replaces --model/--baseline with in-process editors
    (examples/eval_edits.py passes a Janus-Pro one)."""
    evalset = load_eval_set(options.bench)
    items = evalset.items[: options.limit] if options.limit else evalset.items
    config = _config(options, evalset)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    cache = ResponseCache(out / "cache")
    coordinator = coordinator_for(config)
    preset = options.preset or (evalset.name if evalset.name != "export" else "pipeline")
    if preset == "pipeline":
        judge: Any = PipelineJudge(config, cache, coordinator)
    else:
        judge = ProtocolJudge(protocol_for(preset), options.judge or config.stages.judge.backend, config, cache,
                              coordinator)
    batch_runner = None
    if options.batch:
        route = judge.caller.backend.batch_route("text")
        if route is None:
            raise EvalConfigError(f"--batch: the judge backend ({judge.description.get('type')}) has no batch API; "
                                  "drop --batch or judge with an openai or gemini backend")
        state = BatchState()
        judge.caller.batch = StageBatch(JudgeStage.name, route, config.stages.judge.batch, state)
        batch_runner = BatchRunner(as_run_fs(out), cache, coordinator, config.prices, state)
    if editors is None:
        if not options.model:
            raise EvalConfigError("--model is required (a pipeline backend, `edit`, a plugin class or a model dir)")
        from .janus import is_janus_dir, janus_editor

        def make(label: str, model: str) -> Editor:
            if is_janus_dir(model):
                return janus_editor(label, model, cache)
            return BackendEditor(label, model, config, cache, coordinator)

        editors = [make("model", options.model)]
        if options.baseline:
            editors.append(make("baseline", options.baseline))
    write_sources(out, items)

    async def run_all() -> list[tuple[list[dict[str, Any]], dict[str, float]]]:
        results = []
        try:
            for editor in editors:
                results.append(await _evaluate_model(editor, judge, items, out, options.concurrency,
                                                     batch_runner))
        finally:
            for editor in editors:
                await editor.aclose()
            await judge.aclose()
        return results

    results = asyncio.run(run_all())
    report: dict[str, Any] = {
        "uniedit_eval": FORMAT_VERSION,
        "benchmark": {"name": evalset.name, "spec": options.bench, "items": len(items)},
        "protocol": judge.description,
        "pipeline": config.name,
        "models": {},
        "batch": options.batch,
        "calls": {},
        "samples": {},
    }
    for editor, (rows, totals) in zip(editors, results, strict=True):
        report["models"][editor.label] = {"model": editor.description, **summarise(rows),
                                          "headline": _headline(judge, rows)}
        report["calls"][editor.label] = totals
        report["samples"][editor.label] = rows
    if len(editors) == 2:
        report["paired"] = {"model_minus_baseline": paired(report["samples"][editors[0].label],
                                                                  report["samples"][editors[1].label])}
    write_report(out, report)
    return report


def write_report(out: Path, report: dict[str, Any]) -> None:
    from .page import write_page

    temp = out / ".eval.json.tmp"
    temp.write_text(json.dumps(report, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    temp.replace(out / "eval.json")
    write_page(out, report)


def load_report(folder: Path) -> dict[str, Any]:
    path = folder / "eval.json" if folder.is_dir() else folder
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvalConfigError(f"{path}: not a finished evaluation ({exc}); run `uniedit eval` there first") from None
    if not isinstance(report, dict) or report.get("uniedit_eval") != FORMAT_VERSION:
        raise EvalConfigError(f"{path}: not an eval.json written by `uniedit eval`")
    return report


def compare(first: Path, second: Path, out: Path | None = None) -> dict[str, Any]:
    """Paired differences of two finished evaluations' `model` on the same benchmark (A − B)."""
    a, b = load_report(first), load_report(second)
    if a["benchmark"]["name"] != b["benchmark"]["name"] or a["protocol"].get("preset") != b["protocol"].get(
            "preset"):
        raise EvalConfigError(
            f"{first} and {second} are different benchmarks or presets "
            f"({a['benchmark']['name']}/{a['protocol'].get('preset')} vs "
            f"{b['benchmark']['name']}/{b['protocol'].get('preset')}): compare evaluations of one benchmark"
        )
    rows_a, rows_b = a["samples"]["model"], b["samples"]["model"]
    result = {"a": {"eval": str(first), "model": a["models"]["model"]["model"],
                    "headline": a["models"]["model"]["headline"].get("value")},
              "b": {"eval": str(second), "model": b["models"]["model"]["model"],
                    "headline": b["models"]["model"]["headline"].get("value")},
              "benchmark": a["benchmark"]["name"], "preset": a["protocol"].get("preset"),
              "paired": paired(rows_a, rows_b)}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['benchmark']['name']} ({report['benchmark']['items']} items), judge "
             f"{report['protocol'].get('model')} with preset {report['protocol'].get('preset')}"]
    for label, model in report["models"].items():
        head = model["headline"]
        value = head.get("value")
        calls = report["calls"][label]
        lines.append(f"{label}: {head.get('name')}: {'n/a' if value is None else f'{value:.4g}'}; judged "
                     f"{model['judged']}/{model['samples']}; calls {calls['paid_calls']} paid, "
                     f"{calls['cached_calls']} from cache, ${calls['spent_usd']:.4f} spent now")
    for name, figure in (report.get("paired", {}).get("model_minus_baseline", {}).get("figures", {})).items():
        if figure["mean_diff"] is not None:
            low, high = figure["ci95"]
            lines.append(f"  {name}: model − baseline {figure['mean_diff']:+.4g} (95% CI {low:+.4g} … {high:+.4g}, "
                         f"n={figure['n']})")
    differs = report["protocol"].get("differs") or []
    if differs:
        lines.append("differs from the benchmark's own protocol:")
        lines.extend(f"  - {d}" for d in differs)
        lines.append(f"  - judge model {report['protocol'].get('model')} (the benchmark's script: "
                     f"{report['protocol'].get('judge_model')})")
    return "\n".join(lines)
