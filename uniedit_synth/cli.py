"""The `uniedit` command line: synth, stats, export, audit, report, inspect, eval."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer

from .core.bundled import builtin_pipelines
from .core.config import CONFIGURED_STAGES, MODEL_STAGES, Replace, load_yaml_text
from .core.errors import TERMINATED, ConfigError, UniEditError, UnsafeYAML, handle_sigterm
from .core.terminal import safe_print as print  # noqa: A001 - every line this CLI prints has control characters escaped
from .core.values import MAX_DEPTH
from .sources.rows import known_presets

app = typer.Typer(
    name="uniedit",
    help=(
        "Turn VQA data into reasoning-heavy image-editing training data (the Uni-Edit method).\n\n"
        "Start with `uniedit synth` (runs offline on the built-in scene world), then `uniedit stats`, "
        "`uniedit report`, `uniedit audit` and `uniedit export`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_BUDGET = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM
INTERRUPTED = "interrupted: finished shards are saved; run the same command again to resume"


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING
    if quiet:
        level = logging.ERROR
    elif verbose == 1:
        level = logging.INFO
    elif verbose > 1:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "google_genai", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    from .core.terminal import install_log_filter

    install_log_filter()  # any record, from any library, leaves without a key in it


def _overrides(**flags: Any) -> dict[str, Any]:
    """CLI flags → a nested dict merged over the pipeline YAML."""
    out: dict[str, Any] = {}

    def put(path: str, value: Any, explicit: bool = False) -> None:
        if value is None and not explicit:  # a flag not given; `--set key=null` does clear a key
            return
        node = out
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    put("source.spec", flags.get("source"))
    put("source.image_root", flags.get("image_root"))
    put("source.preset", flags.get("preset"))
    put("source.shuffle", flags.get("shuffle") or None)
    put("limit", flags.get("limit"))
    put("seed", flags.get("seed"))
    put("engine.shard_size", flags.get("shard_size"))
    put("engine.workers", flags.get("workers"))
    put("engine.kind", flags.get("engine"))
    put("engine.ray_address", flags.get("ray_address"))
    put("limits.max_cost_usd", flags.get("max_cost"))
    put("stages.chain.turns", flags.get("turns"))
    if flags.get("batch"):
        for stage in MODEL_STAGES:
            put(f"stages.{stage}.mode", "batch")
    if flags.get("concurrency") is not None:
        for definition in CONFIGURED_STAGES:
            put(f"stages.{definition.name}.concurrency", flags["concurrency"])
    for assignment in flags.get("settings") or []:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise UniEditError(f"--set expects KEY=VALUE with a dotted key, got {assignment!r}")
        levels = key.count(".") + 1
        if levels > MAX_DEPTH:
            raise UniEditError(f"--set {key[:40]}...: {levels} dotted levels; a pipeline key has a handful "
                               "(e.g. stages.judge.thresholds.coherence)")
        try:
            value = load_yaml_text(raw, f"--set {key.strip()}") if raw.strip() else ""
        except UnsafeYAML:
            raise
        except ConfigError:
            value = raw  # not YAML: the plain string
        put(key.strip(), Replace(value) if isinstance(value, dict) else value, explicit=True)
    return out


@app.command()
def synth(
    pipeline: str = typer.Option(
        "default", "--pipeline", "-p", metavar="NAME|PATH",
        help="A built-in pipeline (" + ", ".join(builtin_pipelines()) + ") or a path to a YAML file.",
    ),
    source: str | None = typer.Option(
        None, "--source", "-s", metavar="SOURCE",
        help="VQA source, overriding the pipeline's: `scenes` (built-in offline world), "
        "`hf:<name or saved dir>[:config][@split]`, or a path to .parquet / .jsonl / .json / .csv / an image folder.",
    ),
    out: str | None = typer.Option(
        None, "--out", "-o", metavar="DIR|URI",
        help="Output directory (default: runs/<pipeline name>), or a pyarrow filesystem URI such as "
        "s3://bucket/prefix. Re-run to resume.",
    ),
    limit: int | None = typer.Option(None, "--limit", "-n", min=0, metavar="N", help="Read at most this many records."),
    shard_size: int | None = typer.Option(
        None, "--shard-size", min=1, metavar="N", help="Records per shard: the unit of work, resume and output files."
    ),
    concurrency: int | None = typer.Option(
        None, "--concurrency", "-c", min=1, metavar="N", help="In-flight calls per stage per worker (sets every stage: "
        + ", ".join(d.name for d in CONFIGURED_STAGES) + ")."
    ),
    workers: int | None = typer.Option(None, "--workers", "-w", min=1, metavar="N", help="Number of shard workers (Ray actors)."),
    seed: int | None = typer.Option(None, "--seed", metavar="N", help="Seed for the scene world, shuffling and builtin models."),
    image_root: Path | None = typer.Option(
        None, "--image-root", metavar="PATH", help="Folder that relative image paths in the source are resolved against."
    ),
    preset: str | None = typer.Option(
        None, "--preset", metavar="NAME", help=f"Column preset for the source ({known_presets()})."
    ),
    shuffle: bool = typer.Option(
        False, "--shuffle", help="Shuffle the source deterministically with --seed (a larger --limit only appends)."
    ),
    engine: str | None = typer.Option(
        None, "--engine", metavar="ray|inline", help="`ray` (default; in-process unless --ray-address/RAY_ADDRESS) or `inline` (no Ray, for debugging)."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", envvar="RAY_ADDRESS", metavar="HOST:PORT", help="Join this Ray cluster instead of starting one (also RAY_ADDRESS)."
    ),
    max_cost: float | None = typer.Option(
        None, "--max-cost", min=0, metavar="USD", help="Stop starting paid calls once this many USD are spent (resumable with a higher budget)."
    ),
    batch: bool = typer.Option(
        False, "--batch", help="Send every stage whose provider has a batch API (OpenAI Batch, Gemini Batch Mode) "
        "as batch jobs: half the price, up to 24 h per stage; resumable with jobs in flight.",
    ),
    turns: int | None = typer.Option(
        None, "--turns", min=1, max=16, metavar="N", help="Multi-turn chains: each accepted edit is edited again, N "
        "turns in all, each asking a question about the previous turn's result (stages.chain.turns)."
    ),
    force_new_config: bool = typer.Option(
        False, "--force-new-config", help="Allow a changed pipeline config on an existing output dir: its shards start over, cached replies are reused."
    ),
    force: bool = typer.Option(
        False, "--force", help="Write the run into a non-empty --out that is not a uniedit run (refused otherwise); "
        "the run's files go beside the folder's own, and none of those is ever overwritten or removed.",
    ),
    verify_source: bool = typer.Option(
        False, "--verify-source", help="Re-read every finished shard's rows (in the workers) and redo those that "
        "changed; without it a finished shard is trusted while the source's files keep their sizes and times.",
    ),
    settings: list[str] | None = typer.Option(
        None, "--set", metavar="KEY=VALUE", help="Override any pipeline key, e.g. --set stages.judge.thresholds.coherence=4 "
        "--set backends.editor.options.error_rate=0 (repeatable; values are YAML)."
    ),
    log_format: str = typer.Option(
        "text", "--log-format", metavar="text|json",
        help="`text` (a progress bar, or a status line every 30 s in a log) or `json` (one JSON line per "
        "dispatched and finished shard on stdout).",
    ),
    no_progress: bool = typer.Option(
        False, "--no-progress", help="Hide the progress (a bar on a terminal, a status line every 30 s in a log)."
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More logging (-v info, -vv debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr."),
) -> None:
    """Synthesise Uni-Edit samples from a VQA source into an output directory (resumable).

    Interrupt it at any time and run the same command again: finished shards are kept, partial ones are
    redone from the response cache, and no model call that already returned is made (or paid) again.

    \b
    Examples:
      uniedit synth                                  # 300 records of the offline scene world
      uniedit synth --source vqa.jsonl --image-root images/ --out runs/mine
      uniedit synth --pipeline uniedit --source hf:./my_saved_vqa --max-cost 50
    """
    from .api import load_pipeline
    from .api import synth as run_synth
    from .core.terminal import json_stdout, shell_quote
    from .run.fs import is_uri, redact_location

    _setup_logging(verbose, quiet)
    if log_format not in ("text", "json"):
        raise UniEditError(f"--log-format must be text or json, not {log_format!r}")
    if engine not in (None, "ray", "inline"):
        raise UniEditError(f"--engine must be ray or inline, not {engine!r}")
    if out is not None and not out.strip():
        raise UniEditError("--out is empty; name the run's directory (or leave --out out for runs/<pipeline name>)")
    if log_format == "text" and not (no_progress or quiet):
        from .engine.progress import status_interval_s

        status_interval_s()  # a bad UNIEDIT_PROGRESS_INTERVAL_S is refused before the run starts
    overrides = _overrides(
        source=source, image_root=str(image_root) if image_root else None, preset=preset, shuffle=shuffle, limit=limit,
        seed=seed, shard_size=shard_size, workers=workers, engine=engine, ray_address=ray_address,
        max_cost=max_cost, concurrency=concurrency, settings=settings, batch=batch, turns=turns,
    )
    config = load_pipeline(pipeline, overrides)
    location = out if out and is_uri(out) else str(Path(out) if out else Path("runs") / default_run_name(config.name))
    with json_stdout() if log_format == "json" else contextlib.nullcontext(None) as events:
        summary = run_synth(
            config, out=location, force_new_config=force_new_config, log_format=log_format,
            progress=not (no_progress or quiet), events=events, force=force, verify_source=verify_source,
        )
        if events is not None:
            events.write(json.dumps({"event": "done", **summary.__dict__}, sort_keys=True) + "\n")
    out_dir = redact_location(location)  # a URI is shown without keys or query
    shell_dir = shell_quote(out_dir)  # the next commands are pasted into a shell: spaces, quotes, newlines
    if log_format != "json" and not quiet:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary.reject_reasons.items(), key=lambda kv: -kv[1]))
        calls = sum(summary.calls.values())
        hits = sum(summary.cache_hits.values())
        print(f"uniedit synth: {summary.read} records -> {summary.accepted} accepted, {summary.rejected} rejected"
              + (f" ({reasons})" if reasons else ""))
        print(f"  output:  {out_dir}/  (data/ accepted, rejects/ rejected, stats.json, manifest.jsonl)")
        print(f"  shards:  {summary.shards_done} run, {summary.shards_skipped} already done"
              + (f", {summary.shards_retried} retried" if summary.shards_retried else ""))
        print(f"  calls:   {calls} made, {hits} from cache; cost ${summary.cost_usd:.4f} "
              f"(this invocation ${summary.spent_now_usd:.4f}); {summary.elapsed_s:.1f} s")
        if summary.batch_requests:
            print(f"  batch:   {summary.batch_requests} requests sent as batch jobs (answers come back through "
                  f"the cache above); uniedit stats {shell_dir} lists the jobs")
        print(f"  next:    uniedit stats {shell_dir}  |  uniedit report {shell_dir}  |  "
              f"uniedit export {shell_dir} --format hf --out {shell_quote(out_dir + '-hf')}")
    if summary.stopped_by_budget:
        typer.echo(
            f"stopped by --max-cost: {summary.budget_exhausted} record(s) not processed; run again with a higher "
            "--max-cost to finish them (nothing already paid for is paid again)",
            err=True,
        )
        raise typer.Exit(EXIT_BUDGET)


def default_run_name(name: str) -> str:
    """The pipeline `name` as one safe folder name under runs/ (a name like `../../x` must not leave it)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "pipeline"


@app.command()
def stats(
    run: str = typer.Argument(..., metavar="RUN", help="A run's output directory or URI."),
    as_json: bool = typer.Option(False, "--json", help="Print stats.json's totals as JSON."),
) -> None:
    """Totals of a run: records, accepted, rejects by reason, and counts by stage and category."""
    from .run.store import RunDir
    from .stages.totals import run_totals

    run_dir = RunDir(run)
    if not run_dir.is_run():
        raise UniEditError(f"{run_dir.display} is not a uniedit run directory (no manifest or run.json)")
    latest = run_dir.latest_by_shard()
    for shard, entry in sorted(latest.items()):
        damaged = run_dir.damaged_files(entry)
        if damaged:
            typer.echo(f"warning: shard {shard}: {', '.join(damaged)} missing or truncated (these totals are the "
                       "manifest's); run `uniedit synth` again with the same options and --out to redo it", err=True)
    totals = run_totals(list(latest.values()))
    from .engine.batch import JobStore, summarise_jobs

    jobs, unreadable = JobStore(run_dir.fs).scan()
    if jobs or unreadable:
        totals["batch_jobs"] = summarise_jobs(jobs, unreadable)
    try:  # how the source's rows travelled (written by synth into stats.json)
        data_path = json.loads(run_dir.fs.read_bytes("stats.json") or b"{}").get("data_path")
    except (ValueError, AttributeError):
        data_path = None
    if isinstance(data_path, dict) and data_path:
        totals["data_path"] = data_path
    if as_json:
        print(json.dumps(totals, indent=2, sort_keys=True))
        return
    from .report.stats_text import format_stats

    print(format_stats(totals))


@app.command("export")
def export_cmd(
    run: str = typer.Argument(..., metavar="RUN", help="A run's output directory or URI (from uniedit synth)."),
    fmt: str = typer.Option(
        ..., "--format", "-f", metavar="FORMAT",
        help="uniedit-jsonl (the Uni-Edit-148k release layout: JSONL + image files), hf (parquet with HF Image "
        "features + dataset card), bagel (BAGEL's unified_edit parquet + parquet_info + dataset_info snippet), or a "
        "plugin format as package.module:Class.",
    ),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Export directory (must be new or empty, or use --overwrite)."),
    min_score: float | None = typer.Option(None, "--min-score", metavar="SCORE", help="Keep accepted samples with aggregate score >= this."),
    categories: str | None = typer.Option(
        None, "--categories", metavar="CATEGORY,...", help="Comma-separated task categories to keep, e.g. color,count,ocr."
    ),
    include_rejects: bool = typer.Option(
        False, "--include-rejects",
        help="Add preference pairs: an accepted edit (chosen) and a judged, rejected edit of the same record and "
        "instruction (rejected), e.g. a failed first attempt (hf and uniedit-jsonl).",
    ),
    val_fraction: float = typer.Option(
        0.0, "--val-fraction", min=0.0, max=0.5, metavar="FRACTION", help="Share of ids (stable, by id hash) put in a validation split."
    ),
    with_masks: bool = typer.Option(
        False, "--with-masks", help="Compute UniWorld-V1 edit masks and region weights per sample (hf, uniedit-jsonl)."
    ),
    mask_grid: int | None = typer.Option(None, "--mask-grid", metavar="N", help="Max-pool masks to this latent grid (e.g. 32)."),
    mask_factor: int = typer.Option(
        8, "--mask-factor", min=1, metavar="N", help="Max-pool masks by this VAE factor (UniWorld-V1: 8; 1 = full resolution)."
    ),
    layout: str = typer.Option(
        "default", "--layout", metavar="default|release",
        help="uniedit-jsonl: 'default' (sharded rows with ids) or 'release' (the Uni-Edit release's files and "
        "nine keys exactly; rows repeating a source image and instruction removed).",
    ),
    weight_fn: str = typer.Option("log", "--weight-fn", metavar="FUNCTION", help="Region weight: log (w=log2(x)+1), linear, exp_root, quad_root."),
    shard_rows: int | None = typer.Option(None, "--shard-rows", min=1, metavar="N", help="Rows per output file (default per format)."),
    bagel_data_dir: str | None = typer.Option(
        None, "--bagel-data-dir", metavar="PATH", help="bagel: the path where BAGEL will read the export (default: --out)."
    ),
    with_reasoning: bool = typer.Option(
        False, "--with-reasoning",
        help="bagel: add each sample's reasoning trace as the <think> text BAGEL generates before the edited image.",
    ),
    push_to_hub: str | None = typer.Option(None, "--push-to-hub", metavar="REPO_ID", help="hf: upload the export to this dataset repo id."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier export in --out."),
    drop_flagged: str | None = typer.Option(
        None, "--drop-flagged", metavar="all|KIND,...",
        help="Leave out rows `uniedit audit` flags: `all` (no_op_edits, answer_leaks, duplicate_sources, "
        "duplicate_pairs, contaminated, aspect_mismatch) or a comma-separated list of those kinds and decided_in_advance. Of a "
        "group of duplicates the first id is kept.",
    ),
    against: list[str] | None = typer.Option(
        None, "--against", metavar="BENCHMARK", help="With --drop-flagged: benchmarks for the contamination check (as in uniedit audit)."
    ),
    format_option: list[str] | None = typer.Option(
        None, "--format-option", metavar="KEY=VALUE", help="KEY=VALUE: an option of a plugin format (repeat for several)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Export a run's accepted samples for training (Uni-Edit JSONL, HF parquet, BAGEL, or a plugin format)."""
    from .export import export_run
    from .export.registry import format_class

    _setup_logging(0, quiet)
    format_class(fmt)  # an unknown format fails before the audit below runs
    format_options = {}
    for assignment in format_option or []:
        key, sep, value = assignment.partition("=")
        if not sep or not key.strip():
            raise UniEditError(f"--format-option expects KEY=VALUE, got {assignment!r}")
        format_options[key.strip()] = value
    drop = None
    if drop_flagged:
        from .audit.checks import FLAG_KINDS, flagged_ids, run_audit

        kinds = [k.strip() for k in drop_flagged.split(",") if k.strip()]
        kinds = [k for k in FLAG_KINDS if k != "decided_in_advance"] if kinds == ["all"] else kinds
        unknown = [k for k in kinds if k not in FLAG_KINDS]
        if unknown or not kinds:
            raise UniEditError(f"--drop-flagged: unknown kind(s) {', '.join(unknown) or '(none)'}; use all or "
                               f"some of {', '.join(FLAG_KINDS)}")
        if "contaminated" in kinds and not against and drop_flagged.strip() != "all":
            raise UniEditError("--drop-flagged contaminated needs --against <benchmark>")
        drop = flagged_ids(run_audit(run, against or []), kinds)
    elif against:
        raise UniEditError("--against is used with --drop-flagged")
    summary = export_run(
        run, out, fmt, min_score=min_score,
        categories=[c.strip() for c in categories.split(",") if c.strip()] if categories else None,
        include_rejects=include_rejects, val_fraction=val_fraction, shard_rows=shard_rows,
        with_masks=with_masks, mask_grid=mask_grid, mask_factor=mask_factor, weight_fn=weight_fn,
        layout=layout, bagel_data_dir=bagel_data_dir, with_reasoning=with_reasoning,
        push_to_hub=push_to_hub, overwrite=overwrite, progress=not quiet, drop=drop, format_options=format_options,
    )
    rows = ", ".join(f"{split} {n}" for split, n in summary.rows.items())
    pairs = ", ".join(f"{split} {n}" for split, n in summary.pairs.items())
    print(f"uniedit export: {summary.total_rows} samples ({rows}) -> {summary.out_dir} [{summary.format}]"
          + (f"; preference pairs: {pairs}" if pairs else ""))
    if summary.hub_url:
        print(f"  pushed to {summary.hub_url}")
    if summary.skipped:
        print("  left out: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.skipped.items())))


@app.command()
def audit(
    run: str = typer.Argument(..., metavar="RUN", help="A run's output directory or URI, or an hf / uniedit-jsonl export."),
    against: list[str] | None = typer.Option(
        None, "--against", metavar="BENCHMARK",
        help="A benchmark to check for contamination (repeatable): a preset (gedit-bench, or imgedit-bench=DIR, "
        "kris-bench=DIR, risebench=DIR for local copies in their own layouts), an image folder, a "
        ".jsonl/.json/.csv/.parquet with image paths or bytes and an instruction/question column, or hf:<name>.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (every figure and the flagged ids)."),
    max_distance: int = typer.Option(
        4, "--max-distance", min=0, max=16, metavar="BITS", help="Candidate near-duplicates: 64-bit pHash within this many bits."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write fingerprints under <run>/audit/."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """What a run is worth before training: no-op edits, answer leaks, duplicates, benchmark contamination,
    branch balance, category mix, instruction diversity, scores, and edits decidable without the answer."""
    from .audit.checks import format_audit, run_audit
    from .engine.progress import open_progress

    _setup_logging(0, False)  # warnings (a skipped benchmark image) show even with -q
    with open_progress(None, enabled=not quiet, desc="audit", unit="row") as bar:
        result = run_audit(run, against or [], max_distance=max_distance, use_cache=not no_cache,
                           progress=bar.update)
    if as_json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(format_audit(result))


@app.command()
def report(
    run: str = typer.Argument(..., metavar="RUN", help="A run's output directory or URI."),
    out: Path | None = typer.Option(
        None, "--out", "-o", metavar="DIR", help="Report directory (default: <run>/report; required for a run on a URI)."
    ),
    page_size: int = typer.Option(60, "--page-size", min=1, max=1000, metavar="N", help="Samples per gallery page."),
    thumb_px: int = typer.Option(192, "--thumb-px", min=32, max=1024, metavar="PX", help="Thumbnail size in pixels."),
    no_rejects: bool = typer.Option(False, "--no-rejects", help="Leave rejected samples out of the gallery."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write a static HTML gallery of a run (opens from file://, no server): charts, filters, samples."""
    from .report import build_report

    _setup_logging(0, quiet)
    index = build_report(run, out, page_size=page_size, thumb_px=thumb_px, include_rejects=not no_rejects,
                         progress=not quiet)
    print(f"uniedit report: open file://{index.resolve()}")


@app.command()
def inspect(
    run: str = typer.Argument(..., metavar="RUN", help="A run's output directory or URI."),
    sample_id: str = typer.Option(..., "--id", metavar="ID", help="The sample id (see `uniedit report` or the parquet `id` column)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    scan_cache: bool = typer.Option(
        False, "--scan-cache", help="For runs without a call index: match cache entries by content (a guess)."
    ),
) -> None:
    """One sample with its prompts' versions, every call (cached or made), replies, attempts and costs."""
    from .report import format_inspection, inspect_sample

    info = inspect_sample(run, sample_id, scan_cache=scan_cache)
    print(json.dumps(info, indent=2, sort_keys=True, default=str) if as_json else format_inspection(info))


@app.command("eval")
def eval_cmd(
    bench: str | None = typer.Option(
        None, "--bench", metavar="BENCHMARK", help="kris-bench=DIR, risebench=DIR, imgedit-bench=DIR, gedit-bench[=DIR] "
        "(each in its own layout), or export=DIR[@validation] (an `uniedit export --format hf` split).",
    ),
    model: str | None = typer.Option(
        None, "--model", metavar="MODEL", help="The editor: a backend of --pipeline (e.g. gpt-image, nano-pro), `edit` "
        "(the pipeline's edit stage), a plugin class package.module:Class, or a tuned Janus-Pro directory.",
    ),
    baseline: str | None = typer.Option(None, "--baseline", metavar="MODEL", help="A second editor, paired with --model."),
    out: Path | None = typer.Option(None, "--out", "-o", metavar="DIR", help="Where eval.json, index.html, edits/ and cache/ go."),
    pipeline: str | None = typer.Option(
        None, "--pipeline", "-p", metavar="NAME|YAML",
        help="Backends, prices and limits (default: openai for a benchmark, the run's own for an export).",
    ),
    judge: str | None = typer.Option(None, "--judge", metavar="BACKEND", help="The judge backend (default: the pipeline's judge stage's)."),
    preset: str | None = typer.Option(
        None, "--preset", metavar="NAME", help="Judge protocol: kris-bench, risebench, gedit-bench, imgedit-bench or "
        "pipeline (default: the benchmark's own; `pipeline` for an export).",
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, metavar="N", help="Only the first N items."),
    concurrency: int = typer.Option(8, "--concurrency", "-c", min=1, metavar="N", help="Items in flight at once."),
    batch: bool = typer.Option(False, "--batch", help="Judge calls as provider batch jobs (half price, up to 24 h; "
                               "stages.judge.batch.* sets polling); a rerun re-attaches to jobs in flight."),
    settings: list[str] | None = typer.Option(None, "--set", metavar="KEY=VALUE", help="Override a pipeline key (repeatable)."),
    compare_with: tuple[Path, Path] | None = typer.Option(
        None, "--compare", metavar="A B", help="Compare two finished evaluations (paired differences of their --model)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print eval.json's figures (or the comparison) as JSON."),
) -> None:
    """Evaluate an editor (or a tuned model) on a public reasoning-edit benchmark with the benchmark's own judge
    protocol; cached, so a rerun makes no call. Writes eval.json and a side-by-side index.html."""
    from .evaluate import EvalOptions, compare, format_report, run_eval

    _setup_logging(0, False)
    if compare_with:
        result = compare(compare_with[0], compare_with[1], out)
        if as_json:
            print(json.dumps(result, sort_keys=True))
            return
        print(f"{result['benchmark']}: A {result['a']['headline']} vs B {result['b']['headline']} (headline)")
        for name, figure in result["paired"]["figures"].items():
            if figure["mean_diff"] is not None:
                print(f"  {name}: A − B {figure['mean_diff']:+.4g} (95% CI {figure['ci95'][0]:+.4g} … "
                      f"{figure['ci95'][1]:+.4g}, n={figure['n']})")
        return
    if not bench or out is None:
        raise UniEditError("uniedit eval needs --bench and --out (or --compare A B)")
    options = EvalOptions(bench=bench, out=out, model=model, baseline=baseline, pipeline=pipeline, judge=judge,
                          preset=preset, limit=limit, concurrency=concurrency, batch=batch,
                          overrides=_overrides(settings=settings))
    report_ = run_eval(options)
    if as_json:
        print(json.dumps({k: v for k, v in report_.items() if k != "samples"}, sort_keys=True))
    else:
        print(format_report(report_))
        print(f"uniedit eval: wrote {out / 'eval.json'}; open file://{(out / 'index.html').resolve()}")


def _click_exception_types() -> tuple[type[BaseException], ...]:
    """click's ClickException, and typer's vendored copy of it (typer >= 0.26 raises `typer._click` exceptions,
    older releases click's own): a usage error of either kind is printed the same way."""
    import click

    types: list[type[BaseException]] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as VendoredClickException  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        types.append(VendoredClickException)
    return tuple(types)


def main() -> None:
    """Console entry point: user errors print one line (no traceback) and exit non-zero."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    handle_sigterm()
    try:
        # not standalone, click hands back a command's `typer.Exit(code)` as the return value
        code = app(standalone_mode=False)
    except UniEditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(EXIT_TERMINATED if TERMINATED.is_set() else EXIT_INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:
        if isinstance(exc, _click_exception_types()):  # a usage error: click's own message, exit 2
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C (and so a SIGTERM) into Exit(130)
        print(INTERRUPTED, file=sys.stderr)
        if TERMINATED.is_set():
            code = EXIT_TERMINATED
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
