"""`uniedit export`: turning a finished run into a training dataset (uniedit-jsonl, hf or bagel).

``export_run`` reads a run directory, selects samples (``selection``), optionally computes edit masks
(``masks``), hands every row to one format writer (one module per format) and writes into a staging directory
next to ``out_dir`` that replaces ``out_dir`` only when the export is complete, so an interrupted export never
leaves a half-written dataset behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..core.errors import ExportError
from ..engine.progress import open_progress
from ..method.masks import DEFAULT_VAE_FACTOR
from ..run.processes import process_alive
from .base import ExportWriter
from .card import CardStats
from .options import ExportOptions
from .registry import format_class, known_formats
from .replace import MANIFEST, files_under, previous_export, replace_export
from .run_reader import RunReader
from .selection import PreferencePair, Selection, mask_and_weight, split_of

log = logging.getLogger(__name__)

#: the built-in formats (export/registry.py; plugins too: `--format package.module:Class`)
FORMATS = tuple(known_formats())
SUMMARY_FILE = MANIFEST

__all__ = ["FORMATS", "ExportSummary", "ExportOptions", "PreferencePair", "export_run", "split_of"]


class ExportSummary(BaseModel):
    """What an export wrote (also saved as `<out>/export.json`)."""

    format: str
    run_dir: str
    out_dir: str
    rows: dict[str, int]
    pairs: dict[str, int]
    categories: dict[str, int]
    skipped: dict[str, int]
    unpaired_rejects: int = 0
    rejects_without_edit: int = 0
    with_masks: bool = False
    files: list[str]
    #: every file the export wrote (relative to it; export.json aside): all that a later --overwrite removes
    written: list[str] = []
    seconds: float
    hub_url: str | None = None  # --push-to-hub: the dataset repo the export was uploaded to

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def _check_out_dir(out: Path, run_root: Path | None, overwrite: bool) -> list[str] | None:
    """`run_root` is the run's local directory (None for a run on a URI: it cannot overlap a local out).
    Returns the files of the earlier export that --overwrite may replace (None: `out` is new or empty)."""
    if run_root is not None and (out == run_root or out.is_relative_to(run_root) or run_root.is_relative_to(out)):
        raise ExportError(f"the export dir {out} must be outside the run dir {run_root} (and not contain it)")
    if not out.exists():
        return None
    if not out.is_dir():
        raise ExportError(f"{out} exists and is a file; choose a directory for the export")
    if not any(out.iterdir()):
        return None
    if not overwrite:
        raise ExportError(
            f"{out} is not empty; pass --overwrite to replace a previous export, or choose another dir"
        )
    # --overwrite removes files: only ever those an earlier `uniedit export` listed as its own
    return previous_export(out, FORMATS)


def _options(fmt: str, writer: type[ExportWriter], format_options: dict[str, Any], **values: Any) -> ExportOptions:
    """The options of one export in format `fmt`, defaults from its writer class and checked against it."""
    if values["shard_rows"] is None:
        values["shard_rows"] = writer.shard_rows
    if values["row_group_rows"] is None:
        values["row_group_rows"] = writer.row_group_rows
    if values["categories"] is not None:
        values["categories"] = tuple(values["categories"])
    try:
        options = ExportOptions(format=fmt, format_options=_format_options(fmt, writer, format_options), **values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ExportError(f"invalid export options: {problems}") from None
    if options.with_reasoning and "with_reasoning" not in writer.reads:
        raise ExportError(
            "--with-reasoning is a bagel option; hf and uniedit-jsonl exports always carry the `reasoning` column"
        )
    if options.layout == "release" and "layout" not in writer.reads:
        raise ExportError("--layout release is a uniedit-jsonl layout; use --format uniedit-jsonl")
    writer.check(options)
    if options.include_rejects and not writer.pairs:
        raise ExportError(f"the {fmt} format has no preference pairs; drop --include-rejects")
    if options.with_masks and not writer.masks:
        raise ExportError(f"the {fmt} format carries no edit masks; drop --with-masks")
    return options


def _format_options(fmt: str, writer: type[ExportWriter], given: dict[str, Any]) -> dict[str, Any]:
    """A format's own options (`--format-option`), validated by its `Options` model."""
    if writer.Options is None:
        if given:
            raise ExportError(f"the {fmt} format takes no --format-option (given: {', '.join(sorted(given))})")
        return {}
    try:
        return writer.Options(**given).model_dump()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ExportError(f"invalid --format-option for {fmt}: {problems}") from None


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    fmt: str,
    *,
    min_score: float | None = None,
    categories: Iterable[str] | None = None,
    include_rejects: bool = False,
    val_fraction: float = 0.0,
    shard_rows: int | None = None,
    row_group_rows: int | None = None,
    with_masks: bool = False,
    mask_grid: int | tuple[int, int] | None = None,
    mask_factor: int = DEFAULT_VAE_FACTOR,
    weight_fn: str = "log",
    layout: str = "default",
    bagel_data_dir: str | None = None,
    bagel_name: str = "uniedit",
    with_reasoning: bool = False,
    push_to_hub: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    drop: dict[str, str] | None = None,
    format_options: dict[str, Any] | None = None,
) -> ExportSummary:
    """Export the accepted samples of `run_dir` to `out_dir` in format `fmt` (one of FORMATS).

    Filters: `min_score` (accepted samples with a lower or missing score are left out), `categories` (task
    categories to keep). `include_rejects` adds preference pairs (see selection.py for who pairs with whom).
    `val_fraction` sends a stable, id-hashed share of samples to a `validation` split. `shard_rows` rows per
    output file and `row_group_rows` rows per parquet row group default per format (options.py).
    `with_masks` computes an edit mask by UniWorld-V1's recipe (masks.py), max-pooled by `mask_factor` (8, the
    authors' VAE factor; 1 = full resolution) or to `mask_grid` cells, and a region weight (`weight_fn`) per
    sample (uniedit-jsonl and hf). `layout="release"` (uniedit-jsonl) writes the Uni-Edit release's files and
    nine keys exactly, without the rows whose source image and instruction repeat (uniedit_release.py).
    `bagel_data_dir` is where BAGEL will see the export (default: out_dir). `with_reasoning` (bagel) adds each
    sample's reasoning trace as the thinking text BAGEL generates before the edited image (bagel.py).
    `push_to_hub` (hf only) uploads the finished export to that dataset repo. `drop` (id → audit flag, from
    audit.checks.flagged_ids) leaves those samples out, counted per flag in `skipped`. `format_options` are a
    plugin format's own options (its `Options` model validates them; export/base.py).
    Raises ExportError for a missing or non-run `run_dir`, a non-empty `out_dir` without `overwrite`, an
    unknown format or invalid options.
    """
    started = time.monotonic()
    writer = format_class(fmt)
    options = _options(
        fmt,
        writer,
        dict(format_options or {}),
        min_score=min_score,
        categories=categories,
        include_rejects=include_rejects,
        val_fraction=val_fraction,
        shard_rows=shard_rows,
        row_group_rows=row_group_rows,
        with_masks=with_masks,
        mask_grid=mask_grid,
        mask_factor=mask_factor,
        weight_fn=weight_fn,
        layout=layout,
        bagel_data_dir=bagel_data_dir,
        bagel_name=bagel_name,
        with_reasoning=with_reasoning,
    )
    if push_to_hub and not writer.hub:
        raise ExportError("--push-to-hub works with the hf format only")
    reader = RunReader(run_dir)
    out = Path(out_dir).expanduser().resolve()
    previous = _check_out_dir(out, reader.root.resolve() if reader.root is not None else None, overwrite)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_staging(out)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
    except OSError as exc:
        raise ExportError(f"cannot create the export next to {out}: {exc.strerror or exc}") from exc
    try:
        summary = _export_into(staging, out, reader, options, progress, drop)
        summary.seconds = round(time.monotonic() - started, 3)
        summary.written = [path for path in files_under(staging) if path != SUMMARY_FILE]
        (staging / SUMMARY_FILE).write_text(summary.model_dump_json(indent=2) + "\n")
        replace_export(staging, out, previous)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %d rows of %s to %s (%s)", summary.total_rows, reader.label, out, fmt)
    if push_to_hub:
        from .hf import push_to_hub as upload

        summary.hub_url = upload(out, push_to_hub)
    return summary


def _export_into(
    staging: Path, out: Path, reader: RunReader, options: ExportOptions, progress: bool,
    drop: dict[str, str] | None = None,
) -> ExportSummary:
    writer = format_class(options.format).create(staging, out, options, reader.run_info())
    selection = Selection(reader, options, drop)
    stats = CardStats()
    # a bar on a terminal, a status line every 30 s in a log (engine/progress.py)
    with open_progress(selection.candidate_count(), enabled=progress, desc=f"export {options.format}",
                       unit="row") as bar:
        for sample, split in selection.samples():
            masked = mask_and_weight(sample, options) if options.with_masks else None
            writer.add(sample, split, masked)
            stats.add(sample, split, masked[1] if masked else None)
            bar.update(selection.rows_seen - bar.n)
        for pair, split in selection.pairs():
            writer.add_pair(pair, split)
            stats.add_pair(pair, split)
            bar.update(selection.rows_seen - bar.n)
        bar.update(selection.rows_seen - bar.n)
    files = writer.finish(stats)
    return ExportSummary(
        format=options.format,
        run_dir=reader.label,
        out_dir=str(out),
        rows={split: count for split, count in stats.rows.items() if count},
        pairs={split: count for split, count in stats.pairs.items() if count},
        categories=stats.categories(),
        skipped={**selection.skipped, **getattr(writer, "dropped", {})},
        unpaired_rejects=selection.unpaired_rejects,
        rejects_without_edit=selection.rejects_without_edit,
        with_masks=options.with_masks,
        files=sorted(str(path.relative_to(staging)) for path in files),
        seconds=0.0,
    )


def _remove_dead_staging(out: Path) -> None:
    """Staging dirs of earlier exports to the same out dir whose process is gone (killed mid-export)."""
    for leftover in out.parent.glob(f".{glob_escape(out.name)}.partial-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
            log.warning("removed %s, left by an export that was killed", leftover.name)
